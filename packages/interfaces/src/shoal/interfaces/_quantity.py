"""Resource quantities parsed the way Kubernetes writes them.

CPU is held as integer millicores (``"500m"`` → 500, ``"1.5"`` → 1500,
``2`` → 2000) and memory as integer bytes (``"256Mi"`` → 268435456,
``"1G"`` → 1000000000). Both serialise back to their canonical strings, so a
stored workload reads the way it was written.

Mind the asymmetry this buys Kubernetes compatibility with: on *input* a bare
number of CPU is whole cores (``cpu: 2``), while the validated attribute is
millicores. Code that builds a model from millicores it already holds passes
``f"{millis}m"`` or uses ``model_construct``.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = ["Cpu", "Memory", "format_cpu", "format_memory", "parse_cpu", "parse_memory"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def _split(value: Any, what: str) -> tuple[Decimal, str]:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a quantity, not a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}")
    if isinstance(value, int | float):
        number = Decimal(str(value))
        if number < 0:
            raise ValueError(f"{what} must not be negative, got {value}")
        return number, ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a number or a string like '500m' or '256Mi'")
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(
            f"cannot parse {what} quantity {value!r}: write a number with an optional "
            "suffix, e.g. '500m', '1.5', '256Mi', '1G'"
        )
    try:
        return Decimal(match.group(1)), match.group(2)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"cannot parse {what} quantity {value!r}") from exc


def parse_cpu(value: Any) -> int:
    """Parse a CPU quantity into millicores (``"250m"``, ``"0.5"``, ``2``)."""
    if isinstance(value, str | int | float):
        return _cached_cpu(value)
    return _parse_cpu(value)


def parse_memory(value: Any) -> int:
    """Parse a memory quantity into bytes (``"256Mi"``, ``"1G"``, ``1048576``)."""
    if isinstance(value, str | int | float):
        return _cached_memory(value)
    return _parse_memory(value)


# Every stored instance repeats its template's few quantities: decoding thousands of
# them parses the same strings again and again. typed=True keeps True apart from 1.
@functools.lru_cache(maxsize=4096, typed=True)
def _cached_cpu(value: str | int | float) -> int:
    return _parse_cpu(value)


@functools.lru_cache(maxsize=4096, typed=True)
def _cached_memory(value: str | int | float) -> int:
    return _parse_memory(value)


def _parse_cpu(value: Any) -> int:
    number, suffix = _split(value, "cpu")
    if suffix == "m":
        millis = number
    elif suffix == "":
        millis = number * 1000
    else:
        raise ValueError(
            f"cpu quantity {value!r} has unit {suffix!r}: use 'm' or none, e.g. '500m'"
        )
    if millis != millis.to_integral_value():
        raise ValueError(f"cpu quantity {value!r} is finer than one millicore")
    return int(millis)


def _parse_memory(value: Any) -> int:
    number, suffix = _split(value, "memory")
    if suffix in _BINARY:
        scaled = number * _BINARY[suffix]
    elif suffix in _DECIMAL:
        scaled = number * _DECIMAL[suffix]
    elif suffix == "":
        scaled = number
    else:
        raise ValueError(
            f"memory quantity {value!r} has unknown unit {suffix!r}: use one of "
            "Ki, Mi, Gi, Ti, Pi, Ei (binary) or k, M, G, T, P, E (decimal)"
        )
    if scaled != scaled.to_integral_value():
        raise ValueError(f"memory quantity {value!r} is not a whole number of bytes")
    return int(scaled)


@functools.lru_cache(maxsize=4096)  # serialisation calls these for every stored quantity
def format_cpu(millicores: int) -> str:
    """Format millicores canonically: whole cores as ``"2"``, else ``"1500m"``."""
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


@functools.lru_cache(maxsize=4096)
def format_memory(size: int) -> str:
    """Format bytes with the largest binary suffix that divides them exactly."""
    for suffix, factor in sorted(_BINARY.items(), key=lambda item: -item[1]):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


_QUANTITY_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "number"}]}

Cpu = Annotated[
    int,
    BeforeValidator(parse_cpu),
    PlainSerializer(format_cpu, return_type=str),
    WithJsonSchema({**_QUANTITY_SCHEMA, "examples": ["500m", "1.5", 2]}),
]
"""CPU in millicores; accepts ``"500m"``, ``"1.5"`` or a number of cores."""

Memory = Annotated[
    int,
    BeforeValidator(parse_memory),
    PlainSerializer(format_memory, return_type=str),
    WithJsonSchema({**_QUANTITY_SCHEMA, "examples": ["256Mi", "1G", "1Gi"]}),
]
"""Memory in bytes; accepts ``"256Mi"``, ``"1G"`` or a number of bytes."""
