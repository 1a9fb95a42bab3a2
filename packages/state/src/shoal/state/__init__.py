"""shoal.state: StateStore implementations — in memory, SQLite on one server, and etcd.

All three implement :class:`shoal.interfaces.StateStore` in full, on etcd v3's
model: store-wide revisions, per-key ``create_revision``/``mod_revision``/
``version``, compare-and-swap, transactions, watches that never skip or repeat
an event, leases, and leader election on leases.

* :class:`MemoryStore` — everything in memory; the fake that tests and
  benchmarks use. Fast: dict plus sorted key list.
* :class:`SqliteStore` — one SQLite file in WAL mode with ``synchronous=FULL``;
  a write is on disk when it returns, and data, revisions, history and leases
  survive a restart or a crash.
* :class:`EtcdStore` — etcd v3 through ``aetcd``, for several servers that
  share state and elect one leader; revisions and leases are etcd's own.
* :class:`SealedStore` — wraps any of them so that Secrets are stored
  encrypted (AES-256-GCM, keys in a :class:`Keyring` in the data dir).
* :class:`SqliteUsageHistory` — not a StateStore: a node's bounded usage
  history (``shoal.interfaces.UsageHistory``) in ``DATA_DIR/usage.db``.

All are async context managers::

    async with SqliteStore(data_dir / "state.db") as store:
        revision = await store.put("/workloads/web", b"{...}")
        async for event in store.watch("/workloads/", revision):
            ...

Watch design (memory and SQLite): every change is appended to a bounded history (``history_size``
revisions, 100 000 by default) that watchers read forward from their own
position, woken by an in-process notification after each commit under their prefix; see
``shoal.state._history``. The SQLite schema is described in
``shoal.state._sqlite_db``. ``EtcdStore`` uses etcd's own watches, revisions and
leases; see ``shoal.state._etcd``.
"""

from ._base import DEFAULT_HISTORY_SIZE
from ._etcd import DEFAULT_PREFIX, EtcdStore
from ._etcd_client import DEFAULT_ENDPOINT
from ._keys import ELECTION_PREFIX
from ._memory import MemoryStore
from ._sealed import KEYRING_FILE, Keyring, SealedStore
from ._sqlite import DEFAULT_RECENT_HISTORY, SqliteStore
from ._usage import USAGE_FILE, SqliteUsageHistory

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_PREFIX",
    "DEFAULT_RECENT_HISTORY",
    "ELECTION_PREFIX",
    "KEYRING_FILE",
    "USAGE_FILE",
    "EtcdStore",
    "Keyring",
    "MemoryStore",
    "SealedStore",
    "SqliteStore",
    "SqliteUsageHistory",
]
