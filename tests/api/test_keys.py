"""Key pairs on disk and the authorized_keys file."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from shoal.agent import AuthorizedKeysFile
from shoal.client._keys import (
    AuthorizedKeys,
    default_home,
    default_key_id,
    ensure_authorized_keys,
    init_keypair,
    load_authorized_keys,
    load_keypair,
    parse_authorized_keys,
)
from shoal.interfaces import Conflict, InvalidInput, Role

PUBLIC = "JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="  # RFC 9421 B.1.4, a valid ed25519 key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_keypair_writes_private_files(tmp_path: Path) -> None:
    home = tmp_path / "home" / "shoal"
    keypair = init_keypair(home, "alice@laptop")
    assert mode(home) == 0o700
    assert mode(home / "id_ed25519") == 0o600
    assert mode(home / "id_ed25519.pub") == 0o600
    assert (home / "id_ed25519.pub").read_text() == f"alice@laptop {keypair.public_key_b64}\n"
    assert keypair.public_line == f"alice@laptop {keypair.public_key_b64}"
    loaded = load_keypair(home)
    assert loaded.key_id == "alice@laptop"
    assert bytes(loaded.signing_key) == bytes(keypair.signing_key)
    assert not list(home.glob(".*.tmp"))


def test_init_keypair_defaults_the_key_id_to_user_at_host(tmp_path: Path) -> None:
    assert init_keypair(tmp_path).key_id == default_key_id()
    assert "@" in default_key_id()


def test_init_keypair_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = init_keypair(tmp_path, "alice@laptop")
    with pytest.raises(Conflict, match="--force"):
        init_keypair(tmp_path, "alice@laptop")
    assert load_keypair(tmp_path).public_key_b64 == first.public_key_b64
    second = init_keypair(tmp_path, "alice@laptop", force=True)
    assert second.public_key_b64 != first.public_key_b64
    assert load_keypair(tmp_path).public_key_b64 == second.public_key_b64


def test_init_keypair_rejects_a_bad_key_id(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="key id 'alice smith'"):
        init_keypair(tmp_path, "alice smith")


def test_init_keypair_where_it_cannot_write_says_so_and_leaves_no_key_behind(
    tmp_path: Path,
) -> None:
    a_file = tmp_path / "home-is-a-file"
    a_file.write_text("")
    with pytest.raises(InvalidInput, match=r"home-is-a-file: not a directory\): give a directory"):
        init_keypair(a_file, "alice@laptop")
    home = tmp_path / "home"
    (home / "id_ed25519").mkdir(parents=True)  # in the way of the private key
    with pytest.raises(InvalidInput, match=r"id_ed25519: Is a directory\)"):
        init_keypair(home, "alice@laptop", force=True)
    assert sorted(p.name for p in home.iterdir()) == ["id_ed25519"]  # no temporary key file


def test_authorized_keys_missing_or_not_a_file_says_which(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys"
    with pytest.raises(InvalidInput, match="authorized_keys does not exist: it is the agent's"):
        load_authorized_keys(path)
    path.mkdir()
    with pytest.raises(InvalidInput, match="authorized_keys is not a file: it is the agent's"):
        load_authorized_keys(path)


def test_load_keypair_missing_says_to_run_keys_init(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="run `shoal keys init`"):
        load_keypair(tmp_path)


def test_load_keypair_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    init_keypair(tmp_path, "alice@laptop")
    (tmp_path / "id_ed25519").chmod(0o644)
    with pytest.raises(InvalidInput, match=r"mode 0644.*chmod 600"):
        load_keypair(tmp_path)


@pytest.mark.parametrize(
    "content",
    ["", "alice@laptop\n", "alice@laptop not-base64!\n", "alice@laptop AAAA\n", "a b c\n"],
)
def test_load_keypair_reports_a_corrupt_key(tmp_path: Path, content: str) -> None:
    init_keypair(tmp_path, "alice@laptop")
    (tmp_path / "id_ed25519").write_text(content)
    with pytest.raises(InvalidInput, match=r"corrupt.*--force"):
        load_keypair(tmp_path)


def test_load_keypair_detects_a_mismatched_public_key(tmp_path: Path) -> None:
    init_keypair(tmp_path, "alice@laptop")
    (tmp_path / "id_ed25519.pub").write_text(f"alice@laptop {PUBLIC}\n")
    with pytest.raises(InvalidInput, match="does not belong to"):
        load_keypair(tmp_path)


def test_default_home() -> None:
    assert default_home({"SHOAL_HOME": "/srv/shoal"}) == Path("/srv/shoal")
    assert default_home({}) == Path.home() / ".config" / "shoal"


def test_parse_authorized_keys() -> None:
    text = (
        "# who may drive this cluster\n"
        f"admin alice@laptop {PUBLIC}\n"
        "\n"
        "   # indented comment\n"
        f"  viewer\tbob@desk   {PUBLIC}  \n"
    )
    keys = parse_authorized_keys(text, "/data/authorized_keys")
    assert sorted(keys) == ["alice@laptop", "bob@desk"]
    assert keys["bob@desk"].role is Role.VIEWER
    found = keys.lookup("alice@laptop")
    assert found is not None and found[0] is Role.ADMIN
    assert bytes(found[1]).hex() == bytes(keys["alice@laptop"].public_key).hex()
    assert keys.lookup("carol@nowhere") is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("admin alice@laptop", "expected `ROLE KEY-ID PUBLIC-KEY` (3 fields), found 2"),
        (f"root alice@laptop {PUBLIC}", "unknown role 'root'; use one of admin, operator, viewer"),
        (f"admin alice/laptop {PUBLIC}", "key id 'alice/laptop' is not valid"),
        ("admin alice@laptop AAAA", "the public key is not a base64 32-byte ed25519 key"),
        (f"operator bob@desk {PUBLIC}", "key id 'bob@desk' is already on line 2"),
    ],
)
def test_a_bad_authorized_keys_line_is_skipped_naming_file_line_and_fix(
    line: str, problem: str
) -> None:
    text = f"# header\nviewer bob@desk {PUBLIC}\n\n{line}\nadmin carol@desk {PUBLIC}\n"
    keys = parse_authorized_keys(text, "/data/authorized_keys")
    (skipped,) = keys.problems
    assert skipped.message.startswith(f"/data/authorized_keys:4: {problem}")
    assert skipped.details == {"path": "/data/authorized_keys", "line": 4}
    # The valid lines around it take effect; a repeated key id keeps its first line.
    assert sorted(keys) == ["bob@desk", "carol@desk"]
    assert keys["bob@desk"].role is Role.VIEWER


def test_load_authorized_keys_refuses_a_file_others_can_write(tmp_path: Path) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(f"admin alice@laptop {PUBLIC}\n")
    path.chmod(0o600)
    assert len(load_authorized_keys(path)) == 1
    path.chmod(0o666)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_authorized_keys(path)


def test_ensure_authorized_keys_authorizes_the_local_user_as_admin(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    keys, created = ensure_authorized_keys(data, home)
    assert created
    local = load_keypair(home)  # the key pair was generated on the way
    assert mode(data / "authorized_keys") == 0o600
    assert f"admin {local.key_id} {local.public_key_b64}" in (data / "authorized_keys").read_text()
    assert keys.lookup(local.key_id) == (Role.ADMIN, local.verify_key)
    again, created_again = ensure_authorized_keys(data, home)
    assert not created_again
    assert dict(again) == dict(keys)


def test_ensure_authorized_keys_uses_an_existing_key_pair(tmp_path: Path) -> None:
    existing = init_keypair(tmp_path / "home", "ops@bastion")
    keys, created = ensure_authorized_keys(tmp_path / "data", tmp_path / "home")
    assert created
    assert isinstance(keys, AuthorizedKeys)
    assert list(keys) == ["ops@bastion"]
    assert keys["ops@bastion"].public_key == existing.verify_key


def test_ensure_authorized_keys_keeps_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "authorized_keys").write_text(f"viewer bob@desk {PUBLIC}\n")
    keys, created = ensure_authorized_keys(tmp_path, tmp_path / "home")
    assert not created
    assert list(keys) == ["bob@desk"]
    assert not (tmp_path / "home").exists()


def test_an_edited_authorized_keys_takes_its_good_lines_and_names_the_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(f"admin alice@laptop {PUBLIC}\n")
    path.chmod(0o600)
    watched = AuthorizedKeysFile(path, load_authorized_keys(path))
    assert watched.lookup("bob@desk") is None

    # The edit from the docs' step when no key existed yet: a bare role, then the right line.
    path.write_text(f"admin alice@laptop {PUBLIC}\noperator \noperator bob@desk {PUBLIC}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    found = watched.lookup("bob@desk")
    assert found is not None and found[0] is Role.OPERATOR
    assert watched.lookup("alice@laptop") is not None
    skipped = [r.getMessage() for r in caplog.records if "skipped a line" in r.getMessage()]
    assert len(skipped) == 1
    assert f"{path}:2: expected `ROLE KEY-ID PUBLIC-KEY` (3 fields), found 1" in skipped[0]
    assert "shoal keys init" in skipped[0]

    # An edit that cannot be read at all keeps the keys in force.
    path.chmod(0o666)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    assert watched.lookup("bob@desk") is not None
    assert any("keeping the previous keys" in r.getMessage() for r in caplog.records)


def test_an_edit_that_leaves_no_valid_key_keeps_the_keys_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(f"admin alice@laptop {PUBLIC}\n")
    path.chmod(0o600)
    watched = AuthorizedKeysFile(path, load_authorized_keys(path))
    path.write_text(f"admn alice@laptop {PUBLIC}\n")  # a typo in the only line
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert watched.lookup("alice@laptop") is not None
    assert any("leaves no valid key" in r.getMessage() for r in caplog.records)
