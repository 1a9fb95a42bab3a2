"""The agent's garbage-collector settings: a node holds tens of thousands of cached objects.

CPython's cyclic collector runs its youngest generation every 700 net
allocations and, now and then, walks every tracked object. A server's caches
(informers) keep every workload, instance and node decoded, each a tree of
models, lists and dicts, so with the defaults a control-loop pass that places
10,000 instances spends about half its time in the collector (measured with
bench/scheduler.py: 1.16 s with the defaults, 0.47 s with the collector off).
Shoal's objects rarely form cycles, so the agent collects less often instead
of not at all: a young generation of 50,000 allocations, and everything that
exists once the node is built is frozen (never scanned again).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_GENERATION", "tune_gc"]

YOUNG_GENERATION = 50_000
"""Net allocations between two collections of the youngest generation (CPython's default: 700)."""


def tune_gc() -> None:
    """Freeze what exists now and collect the youngest generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)
