"""Who may do what: the roles of keys and the authenticated caller, shared by every front door.

The REST API (signed requests) and the MCP server (bearer tokens) check the
same roles; both name the caller the same way, so this vocabulary is a
contract between them and lives here, once. Free of nacl and httpx, so the
``shoal`` command can offer the roles as choices without loading either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ._errors import Forbidden

__all__ = ["Caller", "Role"]


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


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the key id that signed its request or token, and its role."""

    key_id: str
    role: Role

    def allows(self, required: Role) -> bool:
        """Return whether this caller's role includes ``required``."""
        return self.role.allows(required)

    def require(self, required: Role, action: str = "this action") -> None:
        """Check that this caller may do ``action``, which needs ``required``.

        Raises:
            Forbidden: the role is below ``required``.

        """
        if not self.allows(required):
            raise Forbidden(
                f"key {self.key_id!r} has role {self.role.value}; {action} needs "
                f"{required.value} or higher: ask an admin to change its line in "
                "authorized_keys",
                key_id=self.key_id,
                role=self.role.value,
                required=required.value,
            )
