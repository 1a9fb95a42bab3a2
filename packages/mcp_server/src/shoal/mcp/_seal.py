"""Plan ids as an MCP server hands them out: a plan's digest, sealed for one caller and a while.

A plan's digest (see :mod:`._plans`) names exactly one change to an object
as it is now, but anyone who can read the object can compute it. The id a
planning tool returns is therefore an HMAC of the digest, the caller's key id
and the current quarter hour, under a key this server process made at start:
only a plan this server made for this caller, in the last 15 to 30 minutes,
authorises a change. A restarted server, another server, another key and a
plan from the previous half hour need a new plan.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable

__all__ = ["PLAN_ID", "PLAN_TTL", "PlanSeal"]

PLAN_TTL = 900.0
"""Seconds of one window: a plan id is good in the window it was made in and the next."""
_DIGITS = 16
"""Hex digits of a plan id."""
PLAN_ID = re.compile(rf"[0-9a-f]{{{_DIGITS}}}")
"""What every plan id looks like, whole (a malformed one is told apart from a stale one)."""


class PlanSeal:
    """Seals plan digests into plan ids, and checks them."""

    def __init__(
        self,
        *,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        ttl: float = PLAN_TTL,
    ) -> None:
        self._key = os.urandom(32) if key is None else key
        self._clock = clock
        self.ttl = ttl

    def seal(self, digest: str, caller: str) -> str:
        """Return the plan id of ``digest`` for the key ``caller``, from now."""
        return self._mac(digest, caller, self._window())

    def opens(self, plan_id: str, digest: str, caller: str) -> bool:
        """Return whether ``plan_id`` is ``digest``'s for ``caller``, of this window or the last."""
        now = self._window()
        return any(
            hmac.compare_digest(plan_id, self._mac(digest, caller, window))
            for window in (now, now - 1)
        )

    def _window(self) -> int:
        return int(self._clock() // self.ttl)

    def _mac(self, digest: str, caller: str, window: int) -> str:
        message = json.dumps([digest, caller, window]).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_DIGITS]
