"""What an API key may do.

In a module of its own, free of nacl and httpx, so that the `shoal` command
can offer the roles as choices without loading either.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Role"]


class Role(StrEnum):
    """What a key may do. Each role includes everything below it."""

    ADMIN = "admin"
    """Everything, including changing who is authorized."""
    OPERATOR = "operator"
    """Create, change and delete workloads; cordon and drain nodes."""
    VIEWER = "viewer"
    """Read state, logs and events."""

    def allows(self, required: Role) -> bool:
        """Return whether this role may do what ``required`` may (admin > operator > viewer)."""
        return _RANK[self] >= _RANK[required]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
