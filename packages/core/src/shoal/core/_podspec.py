"""From an instance to the pod a runtime creates: variables and files worked out.

What a node does before it starts an instance, as the kubelet does: every
variable of ``env_from`` and ``env_refs`` gets its value (from ConfigMaps,
Secrets, the pod itself, its resources), ``$(NAME)`` references are expanded
in values, commands and args, and every file volume (config_map, secret,
downward_api, projected) gets its files. Pure: the ConfigMaps and Secrets come
in as a mapping, so the rules are table-tested without a store.

A reference to a ConfigMap, Secret or key that does not exist and is not
``optional`` raises :class:`MissingConfig`; the node loop keeps the instance
waiting with its message (Kubernetes' CreateContainerConfigError) and starts
it when the object appears.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shoal.interfaces import (
    ConfigMapSpec,
    ConfigMapVolume,
    Container,
    DownwardAPIVolume,
    Instance,
    KeyToPath,
    PodSpec,
    ProjectedFile,
    ResourceFieldRef,
    SecretSpec,
    SecretVolume,
    Volume,
    docker_credentials,
)

__all__ = [
    "Configs",
    "MissingConfig",
    "PodFacts",
    "build_pod",
    "files_digest",
    "pull_credentials",
    "volume_files",
]

Configs = Mapping[tuple[str, str], ConfigMapSpec | SecretSpec | None]
"""``(kind, name)`` → the object in the pod's namespace, or None when it does not exist."""

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_POD_IP = ("status.podIP", "status.podIPs")
_INDEXED = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


class MissingConfig(Exception):
    """A pod cannot start yet: a ConfigMap, Secret or key it needs is missing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PodFacts:
    """What the downward API tells a pod about itself that the instance does not hold."""

    host_ip: str = ""
    """The node's address."""
    pod_ip: str = ""
    """The pod's address, when known before the pod exists (else ''; see PodSpec)."""
    node_cpu: int = 0
    """The node's allocatable millicores: a limit that is not set reads as this."""
    node_memory: int = 0
    """The node's allocatable bytes: a limit that is not set reads as this."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` from ``env`` as Kubernetes does: '$$' is '$', unknown names stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(one, text)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _field(path: str, inst: Instance, facts: PodFacts) -> str:
    template = inst.template
    indexed = _INDEXED.fullmatch(path)
    if indexed is not None:
        where = template.labels if indexed.group(1) == "labels" else template.annotations
        return where.get(indexed.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        where = template.labels if path == "metadata.labels" else template.annotations
        return "".join(f"{k}={_quote(v)}\n" for k, v in sorted(where.items()))
    values = {
        "metadata.name": inst.name,
        "metadata.namespace": inst.namespace,
        "metadata.uid": inst.uid,
        "spec.nodeName": inst.node or "",
        "spec.serviceAccountName": template.service_account_name or "default",
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
    }
    return values[path]


def _resource(ref: ResourceFieldRef, container: Container, inst: Instance, facts: PodFacts) -> str:
    named = container
    if ref.container_name is not None:
        candidates = [*inst.template.init_containers, *inst.template.containers]
        found = [c for c in candidates if c.name == ref.container_name]
        if not found:
            raise MissingConfig(
                f"resource_field_ref names container {ref.container_name!r}, "
                "which the pod does not have"
            )
        named = found[0]
    side, resource = ref.resource.split(".")
    values = named.resources.limits if side == "limits" else named.resources.requests
    amount = values.cpu if resource == "cpu" else values.memory
    if not amount and side == "limits":
        amount = facts.node_cpu if resource == "cpu" else facts.node_memory
    return str(-(-amount // ref.divisor))  # rounded up, as Kubernetes does


def _config(
    configs: Configs, kind: str, name: str, optional: bool, why: str
) -> ConfigMapSpec | SecretSpec | None:
    found = configs.get((kind, name))
    if found is None and not optional:
        raise MissingConfig(
            f"{kind} {name!r} does not exist ({why}): create it, or mark the reference optional"
        )
    return found


def _values(config: ConfigMapSpec | SecretSpec) -> dict[str, bytes]:
    return config.files() if isinstance(config, ConfigMapSpec) else config.values()


def _environment(
    container: Container, inst: Instance, configs: Configs, facts: PodFacts
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.env_from:
        kind, name = (
            ("ConfigMap", source.config_map) if source.config_map else ("Secret", source.secret)
        )
        assert name is not None
        config = _config(configs, kind, name, source.optional, f"env_from of {container.name!r}")
        if config is not None:
            for key, data in _values(config).items():
                env[source.prefix + key] = data.decode(errors="replace")
    for name, text in container.env.items():
        env[name] = expand(text, env)
    for name, ref in container.env_refs.items():
        what = f"variable {name} of {container.name!r}"
        key_ref, kind = (
            (ref.config_map_key_ref, "ConfigMap")
            if ref.config_map_key_ref is not None
            else (ref.secret_key_ref, "Secret")
        )
        if ref.field_path in _POD_IP:
            continue  # the runtime fills it in, and expands $(name), once the pod has an address
        if ref.field_path is not None:
            env[name] = _field(ref.field_path, inst, facts)
        elif ref.resource_field_ref is not None:
            env[name] = _resource(ref.resource_field_ref, container, inst, facts)
        elif key_ref is not None:
            config = _config(configs, kind, key_ref.name, key_ref.optional, what)
            if config is None:
                continue
            values = _values(config)
            if key_ref.key not in values:
                if key_ref.optional:
                    continue
                raise MissingConfig(
                    f"{kind} {key_ref.name!r} has no key {key_ref.key!r} ({what}): add the "
                    "key, or mark the reference optional"
                )
            env[name] = values[key_ref.key].decode(errors="replace")
    return env


def _keyed_files(
    source: ConfigMapVolume | SecretVolume, kind: str, configs: Configs, volume: str, default: int
) -> list[ProjectedFile]:
    config = _config(configs, kind, source.name, source.optional, f"volume {volume!r}")
    if config is None:
        return []
    values = _values(config)
    items: Sequence[KeyToPath] = source.items or [
        KeyToPath(key=key, path=key) for key in sorted(values)
    ]
    files: list[ProjectedFile] = []
    for item in items:
        if item.key not in values:
            if source.optional:
                continue
            raise MissingConfig(
                f"{kind} {source.name!r} has no key {item.key!r} (volume {volume!r}): add the "
                "key, or mark the volume optional"
            )
        mode = item.mode if item.mode is not None else default
        files.append(ProjectedFile(path=item.path, data=values[item.key], mode=mode))
    return files


def _downward_files(
    source: DownwardAPIVolume, inst: Instance, facts: PodFacts, default: int
) -> list[ProjectedFile]:
    files: list[ProjectedFile] = []
    first = inst.template.containers[0]
    for item in source.items:
        if item.field_path is not None:
            text = _field(item.field_path, inst, facts)
        else:
            assert item.resource_field_ref is not None
            text = _resource(item.resource_field_ref, first, inst, facts)
        mode = item.mode if item.mode is not None else default
        files.append(ProjectedFile(path=item.path, data=text.encode(), mode=mode))
    return files


def volume_files(
    volume: Volume, inst: Instance, configs: Configs, facts: PodFacts
) -> list[ProjectedFile]:
    """Return the files of one file volume (``volume.files`` is True).

    Raises:
        MissingConfig: a ConfigMap, Secret or key it needs is missing.

    """
    if volume.config_map is not None:
        source = volume.config_map
        return _keyed_files(source, "ConfigMap", configs, volume.name, source.default_mode)
    if volume.secret is not None:
        return _keyed_files(
            volume.secret, "Secret", configs, volume.name, volume.secret.default_mode
        )
    if volume.downward_api is not None:
        return _downward_files(volume.downward_api, inst, facts, volume.downward_api.default_mode)
    assert volume.projected is not None
    default = volume.projected.default_mode
    files: list[ProjectedFile] = []
    for part in volume.projected.sources:
        if part.config_map is not None:
            files += _keyed_files(part.config_map, "ConfigMap", configs, volume.name, default)
        elif part.secret is not None:
            files += _keyed_files(part.secret, "Secret", configs, volume.name, default)
        elif part.downward_api is not None:
            files += _downward_files(part.downward_api, inst, facts, default)
    return files


def pull_credentials(inst: Instance, configs: Configs) -> dict[str, tuple[str, str]]:
    """Return ``(user, password)`` by registry from the pod's image pull secrets.

    Each is a kubernetes.io/dockerconfigjson Secret; a registry key written as
    a URL (``https://registry:5000/v1/``) counts for its host. A missing Secret
    is skipped, as the kubelet does: the pull then goes without it.
    """
    found: dict[str, tuple[str, str]] = {}
    for name in inst.template.image_pull_secrets:
        secret = configs.get(("Secret", name))
        if not isinstance(secret, SecretSpec) or ".dockerconfigjson" not in secret.data:
            continue
        try:
            credentials = docker_credentials(secret.values()[".dockerconfigjson"], name)
        except ValueError:  # validated at apply; one stored before that is skipped
            continue
        for host, pair in credentials.items():
            found.setdefault(host, pair)
    return found


def files_digest(files: Mapping[str, Sequence[ProjectedFile]]) -> str:
    """Return a digest of a pod's file volumes: equal files, equal digests."""
    digest = hashlib.sha256()
    for volume in sorted(files):
        for item in sorted(files[volume], key=lambda f: f.path):
            digest.update(f"{volume}/{item.path}:{item.mode}:{len(item.data)}:".encode())
            digest.update(item.data)
    return digest.hexdigest()


def _resolved(container: Container, env: dict[str, str]) -> Container:
    update: dict[str, object] = {"env": env, "env_from": [], "env_refs": {}}
    if container.command is not None:
        update["command"] = [expand(part, env) for part in container.command]
    if container.args is not None:
        update["args"] = [expand(part, env) for part in container.args]
    return container.model_copy(update=update)


def build_pod(inst: Instance, configs: Configs, facts: PodFacts) -> PodSpec:
    """Return the pod to create for ``inst``: variables resolved, file volumes filled.

    Raises:
        MissingConfig: a ConfigMap, Secret or key it needs is missing (and not optional).

    """
    template = inst.template

    def resolve(containers: Sequence[Container]) -> list[Container]:
        return [_resolved(c, _environment(c, inst, configs, facts)) for c in containers]

    pod_ip_env = {
        c.name: [name for name, ref in c.env_refs.items() if ref.field_path in _POD_IP]
        for c in [*template.init_containers, *template.containers]
    }
    return PodSpec(
        pod_ip_env={name: names for name, names in pod_ip_env.items() if names},
        uid=inst.uid,
        name=inst.name,
        namespace=inst.namespace,
        workload=inst.workload,
        containers=resolve(template.containers),
        init_containers=resolve(template.init_containers),
        volumes=list(template.volumes),
        files={v.name: volume_files(v, inst, configs, facts) for v in template.volumes if v.files},
    )
