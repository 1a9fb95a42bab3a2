"""The ontology/ YAML files and ``shoal.interfaces`` must describe the same domain.

Every comparison runs both ways: a model, field, enum value, state or transition
that exists only in the code, or only in the YAML, fails with a message that
names it and the side it is missing from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel, BeforeValidator, TypeAdapter
from pydantic.fields import FieldInfo

import shoal.interfaces
from shoal.interfaces import (
    INSTANCE_TRANSITIONS,
    NODE_TRANSITIONS,
    PLACED_STATES,
    GossipState,
    InstanceState,
    parse_cpu,
    parse_memory,
)

REPO = Path(__file__).resolve().parents[2]
ONTOLOGY = REPO / "ontology"
ENTITIES = ("workload", "instance", "node", "configmap", "secret", "namespace")
WITH_STATES = ("workload", "instance", "node")
"""The entities with a lifecycle (a states table); configuration objects have none."""
QUANTITY_UNITS: dict[Callable[..., Any], str] = {parse_cpu: "millicores", parse_memory: "bytes"}


def load(entity: str) -> dict[str, Any]:
    with (ONTOLOGY / f"{entity}.yaml").open(encoding="utf-8") as file:
        document = yaml.safe_load(file)
    assert isinstance(document, dict), f"ontology/{entity}.yaml is not a mapping"
    return document


DOCUMENTS = {entity: load(entity) for entity in ENTITIES}


def described_models() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = {}
    for entity, document in DOCUMENTS.items():
        for name, spec in document["models"].items():
            assert name not in models, f"model {name} is described twice (again in {entity}.yaml)"
            models[name] = spec
    return models


def described_enums() -> dict[str, dict[str, Any]]:
    """Return enum name → {value: {meaning, ...}} from every file's states and enums."""
    enums: dict[str, dict[str, Any]] = {}
    for entity, document in DOCUMENTS.items():
        states = document.get("states")  # configuration objects have no lifecycle
        described = {states["enum"]: states["values"]} if states else {}
        described |= {name: spec["values"] for name, spec in document.get("enums", {}).items()}
        for name, values in described.items():
            assert name not in enums, f"enum {name} is described twice (again in {entity}.yaml)"
            enums[name] = values
    return enums


MODELS = described_models()
ENUMS = described_enums()


def code_model(name: str) -> type[BaseModel]:
    cls = getattr(shoal.interfaces, name, None)
    assert isinstance(cls, type), f"ontology names {name}, which shoal.interfaces does not export"
    assert issubclass(cls, BaseModel), f"{name} is not a pydantic model"
    return cls


def code_enum(name: str) -> type[Enum]:
    cls = getattr(shoal.interfaces, name, None)
    assert isinstance(cls, type), f"ontology names {name}, which shoal.interfaces does not export"
    assert issubclass(cls, Enum), f"{name} is not an enum"
    return cls


def referenced_types(annotation: Any) -> set[type]:
    """Return the models and enums an annotation mentions, however deeply nested."""
    found: set[type] = set()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel | Enum):
        found.add(annotation)
    for arg in get_args(annotation):
        found |= referenced_types(arg)
    return found


def reachable_types(root: type[BaseModel]) -> set[type]:
    seen: set[type] = {root}
    todo: list[type] = [root]
    while todo:
        cls = todo.pop()
        if not issubclass(cls, BaseModel):
            continue
        for field in cls.model_fields.values():
            for ref in referenced_types(field.annotation) - seen:
                seen.add(ref)
                todo.append(ref)
    return seen


def differences(what: str, code: set[str], ontology: set[str], other: str = "ontology") -> str:
    return (
        f"{what} differ: only in code {sorted(code - ontology)}, "
        f"only in {other} {sorted(ontology - code)}"
    )


def test_every_file_names_its_entity_root_and_store_key() -> None:
    for entity, document in DOCUMENTS.items():
        assert document["entity"].lower() == entity
        assert document["description"].strip()
        assert document["summary"].strip()
        assert document["store_key"].startswith(f"/{entity}s/")
        assert document["root"] in document["models"], f"{entity}.yaml: root is not described"


def test_the_models_and_enums_reachable_from_the_roots_are_exactly_the_described_ones() -> None:
    reachable: set[type] = set()
    for document in DOCUMENTS.values():
        reachable |= reachable_types(code_model(document["root"]))
    code_models = {cls.__name__ for cls in reachable if issubclass(cls, BaseModel)}
    code_enums = {cls.__name__ for cls in reachable if issubclass(cls, Enum)}
    assert code_models == set(MODELS), differences("models", code_models, set(MODELS))
    assert code_enums == set(ENUMS), differences("enums", code_enums, set(ENUMS))


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_model_fields_match_the_ontology(model_name: str) -> None:
    cls = code_model(model_name)
    described: dict[str, dict[str, Any]] = MODELS[model_name]["fields"]
    assert MODELS[model_name]["description"].strip()
    assert set(cls.model_fields) == set(described), differences(
        f"{model_name} fields", set(cls.model_fields), set(described)
    )
    for name, field in cls.model_fields.items():
        check_field(f"{model_name}.{name}", field, described[name])


def check_field(path: str, field: FieldInfo, spec: dict[str, Any]) -> None:
    assert str(spec.get("description", "")).strip(), f"{path}: no description in the ontology"
    assert ("required" in spec) != ("default" in spec), f"{path}: give either required or default"
    if field.is_required():
        assert spec.get("required") is True, f"{path} is required in code"
    else:
        assert "default" in spec, f"{path} is optional in code: the ontology must give its default"
        written = TypeAdapter[Any](field.rebuild_annotation()).validate_python(spec["default"])
        actual = field.get_default(call_default_factory=True)
        assert written == actual, f"{path}: ontology default {spec['default']!r}, code {actual!r}"

    parsers = {m.func for m in field.metadata if isinstance(m, BeforeValidator)}
    expected_units = {QUANTITY_UNITS[p] for p in QUANTITY_UNITS if p in parsers}
    units = spec.get("units")
    if expected_units:
        assert {units} == expected_units, f"{path}: units must be {expected_units}, not {units!r}"
    else:
        assert units not in QUANTITY_UNITS.values(), f"{path} is not a {units} quantity in code"

    for ref in referenced_types(field.annotation):
        assert ref.__name__ in spec["type"], f"{path}: type {spec['type']!r} omits {ref.__name__}"


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_enum_values_match_the_ontology(enum_name: str) -> None:
    code = {str(member.value) for member in code_enum(enum_name)}
    described = ENUMS[enum_name]
    assert code == set(described), differences(f"{enum_name} values", code, set(described))
    for value, spec in described.items():
        assert str(spec["meaning"]).strip(), f"{enum_name}.{value} has no meaning"


def described_transitions(entity: str) -> dict[str, set[str]]:
    table = DOCUMENTS[entity]["states"]["transitions"]
    assert isinstance(table, dict), f"{entity}.yaml: transitions must be a table"
    return {state: set(targets) for state, targets in table.items()}


def code_transitions(table: dict[Any, frozenset[Any]]) -> dict[str, set[str]]:
    return {str(state): {str(to) for to in targets} for state, targets in table.items()}


@pytest.mark.parametrize(
    ("entity", "enum", "table"),
    [
        ("instance", InstanceState, INSTANCE_TRANSITIONS),
        ("node", GossipState, NODE_TRANSITIONS),
    ],
)
def test_transition_tables_match_the_ontology(
    entity: str, enum: type[Enum], table: dict[Any, frozenset[Any]]
) -> None:
    code = code_transitions(table)
    described = described_transitions(entity)
    states = {str(member.value) for member in enum}
    assert set(code) == states, differences("states with a transition row", set(code), states)
    assert set(code) == set(described), differences("transition rows", set(code), set(described))
    for state in sorted(code):
        assert code[state] == described[state], differences(
            f"{entity} transitions from {state}", code[state], described[state]
        )


@pytest.mark.parametrize("entity", WITH_STATES)
def test_initial_state_is_the_models_default(entity: str) -> None:
    states = DOCUMENTS[entity]["states"]
    model_name, field_name = states["field"].split(".")
    field = code_model(model_name).model_fields[field_name]
    assert str(field.get_default(call_default_factory=True)) == states["initial"]
    assert states["initial"] in states["values"]


def test_workload_phases_are_derived_not_a_table() -> None:
    states = DOCUMENTS["workload"]["states"]
    assert states["transitions"] == "derived"
    assert "every reconcile" in states["derivation"]


def test_placed_states_match_the_ontology() -> None:
    values = DOCUMENTS["instance"]["states"]["values"]
    described = {state for state, spec in values.items() if spec["placed"] is True}
    code = {str(state) for state in PLACED_STATES}
    assert code == described, differences("placed states", code, described)


def test_architecture_state_diagram_matches_the_transition_table() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```mermaid\n(stateDiagram-v2\n.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/architecture.md needs exactly one stateDiagram-v2 block"
    edges = {
        f"{a} -> {b}" for a, b in re.findall(r"^\s*(\w+)\s*-->\s*(\w+)", blocks[0], re.MULTILINE)
    }
    table = {
        f"{a} -> {b}"
        for a, targets in code_transitions(INSTANCE_TRANSITIONS).items()
        for b in targets
    }
    assert edges == table, differences("instance lifecycle edges", table, edges, "the diagram")


def test_referenced_types_sees_through_unions_and_containers() -> None:
    # Guards the helper the other tests rely on: it must not go blind to nesting.
    refs = referenced_types(dict[str, list[shoal.interfaces.Probe | None]] | None)
    assert refs == {shoal.interfaces.Probe}
