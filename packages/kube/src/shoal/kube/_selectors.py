"""A controller's label selector, checked against its pod template's labels.

Shoal tracks a workload's instances itself, so a selector selects nothing; but
Kubernetes refuses a selector that does not match the template (the controller
could never find its own pods), and so does Shoal, with the same rule.
"""

from __future__ import annotations

from typing import Any

from ._fields import Fields, TranslationError

__all__ = ["check_selector"]

_FIX = "make spec.selector match spec.template.metadata.labels"


def check_selector(selector: Fields, labels: dict[str, Any]) -> None:
    """Raise unless ``selector`` (matchLabels and matchExpressions) matches ``labels``."""
    match_labels = selector.take("matchLabels", {})
    expressions = list(selector.children("matchExpressions"))
    if not isinstance(match_labels, dict):
        raise TranslationError(selector.at("matchLabels"), "expected a mapping", _FIX)
    if not match_labels and not expressions:
        raise TranslationError(
            selector.path,
            "an empty selector would select every pod",
            "set selector.matchLabels to the template's labels",
        )
    shown = ", ".join(f"{k}={v}" for k, v in labels.items()) or "none"
    for key, value in match_labels.items():
        if labels.get(key) != value:
            raise TranslationError(
                selector.at("matchLabels"),
                f"selector {key}={value} does not match the template's labels ({shown})",
                _FIX,
            )
    for expression in expressions:
        if not _matches(expression, labels):
            raise TranslationError(
                expression.path,
                f"the expression does not match the template's labels ({shown})",
                _FIX,
            )
    selector.done()


def _matches(expression: Fields, labels: dict[str, Any]) -> bool:
    key = expression.required_text("key")
    operator = expression.required_text("operator")
    values = expression.take("values", [])
    expression.done()
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise TranslationError(
        expression.at("operator"),
        f"unknown operator {operator!r}",
        "use In, NotIn, Exists or DoesNotExist",
    )
