"""Kubernetes manifests parse in the block and the flow style the Kubernetes docs use."""

from __future__ import annotations

import pytest

from shoal.interfaces import InvalidSpec, WorkloadSpec, load_yaml_documents
from shoal.kube import parse_documents
from tests.kube.support import DOCS

BLOCK = """\
# a comment before the document
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # a trailing comment
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: busybox
        command: ["sh", "-c", "sleep 3600"]
        ports:
        - containerPort: 80
"""

FLOW = """\
---
{
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: {
    name: "web", # a comment inside a flow mapping
  },
  spec: {
    replicas: 2,
    selector: {matchLabels: {app: "web",},},
    template: {
      metadata: {labels: {app: "web"}},
      spec: {
        containers: [{
          name: "app",
          image: "busybox",
          command: ["sh", "-c", "sleep 3600",],
          ports: [{containerPort: 80,},],
        },],
      },
    },
  },
}
"""

JSON = (
    '{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, '
    '"spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, '
    '"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": '
    '[{"name": "app", "image": "busybox", "command": ["sh", "-c", "sleep 3600"], '
    '"ports": [{"containerPort": 80}]}]}}}}'
)


def translate(text: str) -> WorkloadSpec:
    [spec] = parse_documents(load_yaml_documents(text, "web.yaml"), "web.yaml").objects
    assert isinstance(spec, WorkloadSpec)
    return spec


@pytest.mark.parametrize("text", [BLOCK, FLOW, JSON], ids=["block", "flow", "json"])
def test_every_style_means_the_same(text: str) -> None:
    spec = translate(text)
    assert (spec.name, spec.replicas, spec.template.labels) == ("web", 2, {"app": "web"})
    [container] = spec.template.containers
    assert container.command == ["sh", "-c", "sleep 3600"]
    assert container.ports[0].container_port == 80


def test_styles_translate_to_equal_objects() -> None:
    block, flow, json = (translate(t) for t in (BLOCK, FLOW, JSON))
    assert block.model_dump(exclude={"origin"}) == flow.model_dump(exclude={"origin"})
    assert block.model_dump(exclude={"origin"}) == json.model_dump(exclude={"origin"})


def test_several_documents_and_empty_ones() -> None:
    text = f"---\n# only a comment\n---\n{BLOCK}---\n{FLOW.replace('web', 'api')}---\n"
    translation = parse_documents(load_yaml_documents(text, "two.yaml"), "two.yaml")
    assert [o.name for o in translation.objects] == ["web", "api"]


def test_octal_modes_read_as_kubernetes_reads_them() -> None:
    text = BLOCK.replace(
        "        ports:",
        "        volumeMounts: [{name: conf, mountPath: /etc/conf}]\n        ports:",
    ) + ("      volumes:\n      - name: conf\n        configMap: {name: conf, defaultMode: 0644}\n")
    volume = translate(text).template.volumes[0].config_map
    assert volume is not None and volume.default_mode == 0o644


def test_invalid_yaml_names_line_and_column() -> None:
    with pytest.raises(InvalidSpec, match=r"web.yaml: line 3, column \d+: invalid YAML"):
        load_yaml_documents("kind: Pod\nmetadata: {name: web\nspec: [\n", "web.yaml")


def test_a_published_example_with_a_tab_is_refused_at_its_line() -> None:
    path = DOCS / "broken" / "pod-multiple-secret-env-variable.yaml"
    with pytest.raises(InvalidSpec) as caught:
        load_yaml_documents(path.read_text(), path.name)
    assert str(caught.value).startswith(
        "pod-multiple-secret-env-variable.yaml: line 15, column 1: invalid YAML: "
        "found character '\\t' that cannot start any token"
    )


def test_a_key_repeated_in_one_mapping_is_refused_at_its_line() -> None:
    text = BLOCK.replace("  replicas: 2\n", "  replicas: 2\n  replicas: 5\n")
    with pytest.raises(InvalidSpec) as caught:
        load_yaml_documents(text, "web.yaml")
    assert caught.value.message == (
        "web.yaml: line 8, column 3: invalid YAML: key 'replicas' appears twice in one "
        "mapping (first on line 7): keep one; nothing was applied"
    )
    # Keys are compared as the mapping will hold them: 1 and 01 are one key.
    with pytest.raises(InvalidSpec, match=r"line 2, column 1: .* key '01' appears twice"):
        load_yaml_documents("1: a\n01: b\n", "ports.yaml")
    # The same key in two mappings, and a merge key overridden, are fine.
    merged = "base: &base {replicas: 2, image: busybox}\nweb: {<<: *base, replicas: 3}\n"
    (document,) = load_yaml_documents(merged, "merged.yaml")
    assert document["web"] == {"replicas": 3, "image": "busybox"}


def bomb(levels: int) -> str:
    """A few hundred bytes whose aliases expand to 10**levels strings."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "\n".join([*lines, f"data: *a{levels - 1}", ""])


def test_aliases_that_expand_too_far_are_refused() -> None:
    text = bomb(9)
    assert len(text) < 600
    with pytest.raises(InvalidSpec, match="aliases expand the document by more than 100,000"):
        load_yaml_documents(text, "bomb.yaml")
    (small,) = load_yaml_documents(bomb(3), "small.yaml")  # 1,000 strings: fine
    assert len(small["data"]) == 10 and len(small["data"][0][0]) == 10


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("spec: &s {self: *s}\n", "line 1, column 7: invalid YAML: an alias refers to the node"),
        ("[" * 3000 + "]" * 3000, "invalid YAML: nested too deeply"),
    ],
)
def test_documents_that_cannot_be_written_out_are_refused(text: str, problem: str) -> None:
    with pytest.raises(InvalidSpec, match=problem):
        load_yaml_documents(text, "odd.yaml")
