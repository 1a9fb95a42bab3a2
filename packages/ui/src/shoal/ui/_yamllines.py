"""Where in a YAML text a field is: to show a validation error next to its line."""

from __future__ import annotations

import re

import yaml

__all__ = ["line_of"]

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]|\[([^\]]+)\]")


def _parts(field: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index, key in _PART.findall(field):
        parts.append(int(index) if index else (name or key))
    return parts


def line_of(text: str, document: int, field: str) -> int | None:
    """Return the 1-based line of ``field`` in the ``document``-th YAML document of ``text``.

    ``field`` is a dotted path such as ``spec.template.containers[0].image``;
    documents count from 1, empty ones skipped. A field that is absent gives
    the line of its nearest present parent; text that does not parse gives None.
    """
    try:
        nodes = [node for node in yaml.compose_all(text) if node is not None]
    except yaml.YAMLError:
        return None
    if not 0 < document <= len(nodes):
        return None
    node: yaml.Node = nodes[document - 1]
    line = node.start_mark.line + 1
    for part in _parts(field):
        child: yaml.Node | None = None
        if isinstance(part, int) and isinstance(node, yaml.SequenceNode):
            child = node.value[part] if part < len(node.value) else None
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, child = key.start_mark.line + 1, value
                    break
        if child is None:
            break
        node = child
        if isinstance(part, int):
            line = node.start_mark.line + 1
    return line
