"""Faults the :class:`~shoal.runtime.MockRuntime` injects on purpose.

A :class:`Fault` says *what* goes wrong (its :class:`FaultKind`), *where*
(``image`` and/or ``container``: a fault matches a container when every
selector it sets is equal; a selector left as ``None`` matches anything) and
*how often* (``times``; ``None`` means every time). :class:`Faults` is the
ordered, mutable set a runtime consults; the first armed fault of the right
kind that matches wins, and firing it uses up one of its ``times``::

    runtime = MockRuntime(clock, faults=[Fault.image_missing("ghost:1")])
    runtime.faults.add(Fault.exits(after=5, exit_code=3, container="web", times=1))
    runtime.faults.add(Fault.create_fails(image="broken:1", message="no space left"))
    runtime.faults.add(Fault.init_fails(container="migrate", exit_code=2, message="no db"))
    runtime.faults.add(Fault.list_fails(message="runc list: signal: killed", times=2))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Fault", "FaultKind", "Faults"]


class FaultKind(StrEnum):
    """What an injected fault does."""

    CREATE_FAILS = "create_fails"
    """``create`` raises RuntimeFailure with the fault's message; nothing is left behind."""
    IMAGE_MISSING = "image_missing"
    """``ensure_image`` (and ``create`` of a container using the image) raise ImageError."""
    EXITS = "exits"
    """The container exits with ``exit_code`` once ``seconds`` have passed after its start."""
    SLOW_START = "slow_start"
    """``start`` takes ``seconds`` of the runtime's clock for this container."""
    IGNORES_SIGTERM = "ignores_sigterm"
    """``stop`` waits the whole grace period, then SIGKILLs: exit code 137."""
    REMOVE_FAILS = "remove_fails"
    """``remove`` raises RuntimeFailure with the fault's message; the pod stays."""
    INIT_FAILS = "init_fails"
    """An init container exits with ``exit_code`` (its log: the message): ``start`` fails."""
    LIST_FAILS = "list_fails"
    """``list`` raises RuntimeFailure with the fault's message (as a ``runc list`` that fails)."""


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One injected failure; build it directly or with the named constructors.

    Attributes:
        kind: What goes wrong.
        image: Only containers (or ``ensure_image`` calls) for this image reference.
        container: Only containers with this name (in any pod).
        seconds: EXITS: delay after start; SLOW_START: how long start takes.
        exit_code: EXITS: the code the container exits with.
        message: CREATE_FAILS, REMOVE_FAILS: the error message; EXITS: the container
            status message; INIT_FAILS: the line the init container logs.
        times: How many times the fault fires before it disarms; ``None`` is forever.

    """

    kind: FaultKind
    image: str | None = None
    container: str | None = None
    seconds: float = 0.0
    exit_code: int = 1
    message: str = ""
    times: int | None = None

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"Fault.seconds must be >= 0, got {self.seconds}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"Fault.times must be None (forever) or >= 1, got {self.times}")

    @classmethod
    def create_fails(
        cls,
        *,
        image: str | None = None,
        container: str | None = None,
        message: str = "injected fault: create failed",
        times: int | None = None,
    ) -> Fault:
        """Make ``create`` raise RuntimeFailure(``message``) for matching containers."""
        return cls(
            kind=FaultKind.CREATE_FAILS,
            image=image,
            container=container,
            message=message,
            times=times,
        )

    @classmethod
    def image_missing(cls, image: str, *, times: int | None = None) -> Fault:
        """Make ``image`` unknown to the registry: ImageError on ensure_image and create."""
        return cls(kind=FaultKind.IMAGE_MISSING, image=image, times=times)

    @classmethod
    def exits(
        cls,
        *,
        after: float,
        exit_code: int = 1,
        image: str | None = None,
        container: str | None = None,
        message: str = "",
        times: int | None = None,
    ) -> Fault:
        """Make matching containers exit with ``exit_code`` ``after`` seconds past start."""
        return cls(
            kind=FaultKind.EXITS,
            image=image,
            container=container,
            seconds=after,
            exit_code=exit_code,
            message=message,
            times=times,
        )

    @classmethod
    def slow_start(
        cls,
        *,
        seconds: float,
        image: str | None = None,
        container: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Make ``start`` of matching containers take ``seconds`` on the runtime's clock."""
        return cls(
            kind=FaultKind.SLOW_START,
            image=image,
            container=container,
            seconds=seconds,
            times=times,
        )

    @classmethod
    def ignores_sigterm(
        cls,
        *,
        image: str | None = None,
        container: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Make matching containers ignore SIGTERM, so ``stop`` uses its whole grace."""
        return cls(kind=FaultKind.IGNORES_SIGTERM, image=image, container=container, times=times)

    @classmethod
    def remove_fails(
        cls,
        *,
        image: str | None = None,
        container: str | None = None,
        message: str = "injected fault: remove failed",
        times: int | None = None,
    ) -> Fault:
        """Make ``remove`` of pods with a matching container raise RuntimeFailure(``message``)."""
        return cls(
            kind=FaultKind.REMOVE_FAILS,
            image=image,
            container=container,
            message=message,
            times=times,
        )

    @classmethod
    def init_fails(
        cls,
        *,
        exit_code: int = 1,
        image: str | None = None,
        container: str | None = None,
        message: str = "",
        times: int | None = None,
    ) -> Fault:
        """Make matching init containers exit with ``exit_code``, logging ``message`` on stderr."""
        return cls(
            kind=FaultKind.INIT_FAILS,
            image=image,
            container=container,
            exit_code=exit_code,
            message=message,
            times=times,
        )

    @classmethod
    def list_fails(
        cls, *, message: str = "injected fault: list failed", times: int | None = None
    ) -> Fault:
        """Make ``list`` raise RuntimeFailure(``message``): the runtime cannot say what it runs."""
        return cls(kind=FaultKind.LIST_FAILS, message=message, times=times)

    def matches(self, kind: FaultKind, image: str | None, container: str | None) -> bool:
        """Return whether this fault applies to an operation on ``image``/``container``."""
        return (
            self.kind == kind
            and (self.image is None or self.image == image)
            and (self.container is None or self.container == container)
        )


class _Armed:
    """A fault and how many more times it may fire."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


class Faults:
    """The faults a runtime injects, in the order they were added.

    Args:
        faults: Faults to arm from the start.

    """

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._armed: list[_Armed] = [_Armed(fault) for fault in faults]

    def add(self, fault: Fault) -> Fault:
        """Arm ``fault`` (after the ones already armed) and return it."""
        self._armed.append(_Armed(fault))
        return fault

    def remove(self, fault: Fault) -> None:
        """Disarm every armed fault equal to ``fault``; a fault not armed is a no-op."""
        self._armed = [armed for armed in self._armed if armed.fault != fault]

    def clear(self) -> None:
        """Disarm every fault."""
        self._armed.clear()

    def __len__(self) -> int:
        return len(self._armed)

    def __iter__(self) -> Iterator[Fault]:
        return iter([armed.fault for armed in self._armed])

    def fire(self, kind: FaultKind, image: str | None, container: str | None) -> Fault | None:
        """Return the first armed fault that matches and use up one of its times.

        Args:
            kind: The kind of fault the operation can suffer.
            image: The image the operation is about, if any.
            container: The container name the operation is about, if any.

        Returns:
            The fault to apply, or ``None`` when the operation should succeed.

        """
        if not self._armed:  # the common case in benchmarks: no faults at all
            return None
        for armed in self._armed:
            if armed.fault.matches(kind, image, container):
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                return armed.fault
        return None
