"""The async context manager every resource of Shoal is: entering returns it, leaving closes it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["AsyncClosing"]


class AsyncClosing(ABC):
    """``async with resource:`` returns the resource and calls :meth:`aclose` on the way out.

    A subclass that must do work on entry (connect, check) overrides
    ``__aenter__``; leaving always closes.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def aclose(self) -> None:
        """Release what the resource holds; safe to call more than once."""
