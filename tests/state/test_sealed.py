"""Secrets sealed at rest: what lands in the store, keys that open it, rotation."""

import json
from pathlib import Path

import pytest

from shoal.interfaces import InternalError, InvalidInput, PutOp
from shoal.state import Keyring, MemoryStore, SealedStore, SqliteStore

pytestmark = pytest.mark.anyio

KEY = "/secrets/default/db"
VALUE = b'{"password": "hunter2"}'


async def test_values_under_the_prefix_are_ciphertext_at_rest(tmp_path: Path) -> None:
    async with MemoryStore() as inner:
        store = SealedStore(inner, Keyring.load(tmp_path / "ring"))
        await store.put(KEY, VALUE)
        await store.txn([], [PutOp("/secrets/default/other", VALUE), PutOp("/plain", VALUE)])

        for key in (KEY, "/secrets/default/other"):
            raw = await inner.get(key)
            assert raw is not None and b"hunter2" not in raw.value
            assert raw.value.startswith(b"shoal-sealed:v1:")
        plain = await inner.get("/plain")
        assert plain is not None and plain.value == VALUE
        got = await store.get(KEY)
        assert got is not None and got.value == VALUE
        assert [kv.value for kv in (await store.list("/secrets/")).items] == [VALUE, VALUE]


async def test_a_sealed_value_copied_under_another_key_does_not_open(tmp_path: Path) -> None:
    async with MemoryStore() as inner:
        store = SealedStore(inner, Keyring.load(tmp_path / "ring"))
        await store.put(KEY, VALUE)
        raw = await inner.get(KEY)
        assert raw is not None
        await inner.put("/secrets/default/stolen", raw.value)

        with pytest.raises(InternalError, match="altered, or copied from another key"):
            await store.get("/secrets/default/stolen")


async def test_rotation_then_reseal_moves_every_value_to_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    async with MemoryStore() as inner:
        ring = Keyring.load(path)
        store = SealedStore(inner, ring)
        await store.put(KEY, VALUE)
        await inner.put("/secrets/default/legacy", b"written before sealing")
        old = ring.active

        new = ring.rotate()
        assert await store.reseal() == 2
        assert await store.reseal() == 0

        saved = json.loads(path.read_text())
        assert saved["active"] == new and set(saved["keys"]) == {old, new}
        assert path.stat().st_mode & 0o777 == 0o600
        for key, expected in ((KEY, VALUE), ("/secrets/default/legacy", b"written before sealing")):
            raw = await inner.get(key)
            assert raw is not None and raw.value.startswith(f"shoal-sealed:v1:{new}:".encode())
            got = await SealedStore(inner, Keyring.load(path)).get(key)
            assert got is not None and got.value == expected


async def test_a_value_sealed_by_a_missing_key_names_the_fix(tmp_path: Path) -> None:
    async with MemoryStore() as inner:
        await SealedStore(inner, Keyring.load(tmp_path / "one")).put(KEY, VALUE)
        with pytest.raises(InternalError, match="restore the keyring that sealed it"):
            await SealedStore(inner, Keyring.load(tmp_path / "two")).get(KEY)


def test_a_damaged_keyring_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    path.write_text("not json")
    with pytest.raises(InvalidInput, match=f"{path} is not a Shoal secrets keyring"):
        Keyring.load(path)


async def test_opening_the_sealed_store_opens_the_one_it_wraps(tmp_path: Path) -> None:
    inner = SqliteStore(tmp_path / "state.db")
    async with SealedStore(inner, Keyring.load(tmp_path / "ring")) as store:
        await store.put(KEY, VALUE)
        got = await store.get(KEY)
        assert got is not None and got.value == VALUE


async def test_a_new_keyring_over_sealed_values_is_refused_and_not_kept(tmp_path: Path) -> None:
    async with SealedStore(SqliteStore(tmp_path / "state.db"), Keyring.load(tmp_path / "one")):
        pass
    inner = SqliteStore(tmp_path / "state.db")
    async with SealedStore(inner, Keyring.load(tmp_path / "one")) as store:
        await store.put(KEY, VALUE)

    stray = tmp_path / "two"
    with pytest.raises(InvalidInput, match="holds Secrets sealed by another one"):
        async with SealedStore(SqliteStore(tmp_path / "state.db"), Keyring.load(stray)):
            pass
    assert not stray.exists()  # so the next start refuses too


def test_a_derived_secret_survives_rotation_and_differs_per_label(tmp_path: Path) -> None:
    ring = Keyring.load(tmp_path / "ring")
    before = ring.derive("config-hash")
    ring.rotate()
    assert ring.derive("config-hash") == before
    assert Keyring.load(tmp_path / "ring").derive("config-hash") == before
    assert ring.derive("other") != before and len(before) == 32
