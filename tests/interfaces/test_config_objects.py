"""ConfigMap and Secret validation: keys, pull-secret credentials."""

import json

import pytest
from pydantic import ValidationError

from shoal.interfaces import (
    CONFIG_MODELS,
    ConfigMapSpec,
    SecretSpec,
    config_key,
    config_map_key,
    namespace_key,
    secret_key,
)


@pytest.mark.parametrize("key", ["..data", "..2026_12_06", ".", "a/b", ""])
def test_keys_that_cannot_be_files_of_the_kubelet_layout_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="is not valid"):
        ConfigMapSpec(name="c", data={key: "x"})


@pytest.mark.parametrize(
    "entry",
    [{"auth": "abc"}, {"auth": "bm9jb2xvbg=="}, {"username": "u"}, "text", {"auth": 3}],
)
def test_a_pull_secret_entry_a_pull_could_not_use_is_refused_without_its_value(
    entry: object,
) -> None:
    config = json.dumps({"auths": {"registry.test": entry}})
    with pytest.raises(ValidationError, match=r"auths entry of 'registry\.test'") as raised:
        SecretSpec.model_validate(
            {
                "name": "pull",
                "type": "kubernetes.io/dockerconfigjson",
                "string_data": {".dockerconfigjson": config},
            }
        )
    shown = raised.value.errors()[0]["msg"]  # what front doors show (never the input)
    assert "bm9jb2xvbg" not in shown and "nocolon" not in shown


def test_each_configuration_kind_has_its_key_and_its_model() -> None:
    keys = {kind: config_key(kind, "team", "app") for kind in CONFIG_MODELS}
    assert keys == {
        "ConfigMap": config_map_key("team", "app"),
        "Secret": secret_key("team", "app"),
        "Namespace": namespace_key("app"),
    }
    for kind, model in CONFIG_MODELS.items():
        assert model.model_fields["spec"].annotation.model_fields["kind"].default == kind  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="'Workload' is not a configuration kind"):
        config_key("Workload", "team", "app")
