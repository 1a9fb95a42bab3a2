"""merge_warnings: each ignored field once, in the words of the kind the user wrote."""

from __future__ import annotations

from shoal.kube import merge_warnings


def test_the_applys_copy_of_a_translated_warning_is_dropped() -> None:
    translated = [
        "DaemonSet kube-system/fluentd: spec.template.spec.tolerations: ignored: no taints",
        "Service shop/web: kind Service: ignored: Shoal has no Services",
    ]
    applied = [
        "Workload kube-system/fluentd: spec.template.spec.tolerations: no taints",
        "Workload shop/api: spec.template.spec.securityContext: not enforced",
    ]
    assert merge_warnings(translated, applied) == [
        *translated,
        "Workload shop/api: spec.template.spec.securityContext: not enforced",
    ]


def test_without_a_translation_the_applys_warnings_stand_once() -> None:
    applied = ["Workload a/b: spec.x: why", "Workload a/b: spec.x: why", "Namespace n: x: y"]
    assert merge_warnings([], applied) == ["Workload a/b: spec.x: why", "Namespace n: x: y"]
