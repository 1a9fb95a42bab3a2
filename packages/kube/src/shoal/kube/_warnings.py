"""One list of warnings from a translation and from the apply that followed it.

A translation warns about each field it ignores as ``'Deployment shop/web:
spec.x: ignored: why'``; the service, applying the objects, warns again from
each object's ``origin.ignored`` as ``'Workload shop/web: spec.x: why'``. A
front door that did both shows each ignored field once, in the words of the
kind the user wrote.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["merge_warnings"]


def _about(warning: str) -> tuple[str, str]:
    """Return ``(namespace/name, path)`` of a ``'Kind namespace/name: path: why'`` warning."""
    label, _, rest = warning.partition(": ")
    return label.rpartition(" ")[2], rest.partition(": ")[0]


def merge_warnings(translated: Sequence[str], applied: Sequence[str]) -> list[str]:
    """Return ``translated``, then each of ``applied`` about an object and path not yet warned."""
    seen = {_about(warning) for warning in translated}
    merged = list(dict.fromkeys(translated))
    merged += [w for w in dict.fromkeys(applied) if _about(w) not in seen and w not in merged]
    return merged
