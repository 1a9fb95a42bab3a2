"""PEP 562 lazy exports: a package's names imported from their modules on first use.

``shoal.interfaces``, ``shoal.client`` and ``shoal.api`` keep their start-up
cheap this way (``shoal --help`` loads none of pydantic, httpx or nacl); this
is the one ``__getattr__`` they share.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, table: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> Callable[[str], object]:
    """Return a module ``__getattr__`` that imports ``table[name]`` (relative to ``package``).

    The value is stored in ``namespace`` (the package's ``globals()``), so a
    later lookup does not come back here.
    """

    def __getattr__(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
