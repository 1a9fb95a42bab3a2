"""A Kubernetes container to a Shoal :class:`~shoal.interfaces.Container` document.

Covers ``command``/``args``, ``env`` (values and ``valueFrom``), ``envFrom``,
``ports``, ``resources`` (cpu and memory), the three probes (named ports
resolved against the container's own) and ``volumeMounts``.
"""

from __future__ import annotations

from typing import Any

from shoal.interfaces import parse_cpu, parse_memory

from ._fields import Fields, TranslationError

__all__ = ["container"]

_PROBES = {
    "livenessProbe": "liveness_probe",
    "readinessProbe": "readiness_probe",
    "startupProbe": "startup_probe",
}
_PROBE_TIMING = {
    "initialDelaySeconds": "initial_delay_seconds",
    "periodSeconds": "period_seconds",
    "timeoutSeconds": "timeout_seconds",
    "failureThreshold": "failure_threshold",
    "successThreshold": "success_threshold",
}
_KEY_REF = {"name": "name", "key": "key", "optional": "optional"}


def container(fields: Fields, *, init: bool = False) -> dict[str, Any]:
    """Return the Shoal document of one container (or init container)."""
    if init:
        _check_init(fields)
    out: dict[str, Any] = {}
    for key, shoal_key in (
        ("name", "name"),
        ("image", "image"),
        ("command", "command"),
        ("args", "args"),
        ("workingDir", "working_dir"),
    ):
        fields.put(out, key, shoal_key)
    ports = [_port(port) for port in fields.children("ports", "ports")]
    if ports:
        out["ports"] = ports
    _env(fields, out)
    env_from = [_env_from(item) for item in fields.children("envFrom", "env_from")]
    if env_from:
        out["env_from"] = env_from
    resources = fields.child("resources", "resources")
    if resources is not None:
        out["resources"] = _resources(resources)
    named = {p["name"]: p["container_port"] for p in ports if "name" in p and "container_port" in p}
    for key, shoal_key in _PROBES.items():
        probe = fields.child(key, shoal_key)
        if probe is not None:
            out[shoal_key] = _probe(probe, named)
    mounts = [_mount(mount) for mount in fields.children("volumeMounts", "volume_mounts")]
    if mounts:
        out["volume_mounts"] = mounts
    fields.done()
    return out


def _check_init(fields: Fields) -> None:
    """Refuse what Kubernetes refuses on an init container, and sidecars, which Shoal lacks."""
    if fields.take("restartPolicy") == "Always":
        raise TranslationError(
            fields.at("restartPolicy"),
            "sidecar init containers (restartPolicy: Always) are not supported",
            "move the container to containers, or remove restartPolicy",
        )
    for key in _PROBES:
        if key in fields.value:
            raise TranslationError(
                fields.at(key),
                "an init container runs to completion and cannot have probes",
                f"remove {key}",
            )


def _port(fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields.put(out, "containerPort", "container_port")
    fields.put(out, "hostPort", "host_port")
    fields.put(out, "name", "name")
    protocol = fields.text("protocol", "TCP")
    if protocol not in ("TCP", "UDP"):
        raise TranslationError(
            fields.at("protocol"),
            f"protocol {protocol!r} is not supported by Shoal",
            "use TCP or UDP",
        )
    out["protocol"] = protocol.lower()
    fields.ignore("hostIP", "Shoal publishes a host port on every address of the node")
    fields.done()
    return out


def _env(fields: Fields, out: dict[str, Any]) -> None:
    """Split ``env`` into Shoal's plain ``env`` and ``env_refs``; a later entry wins."""
    env: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    for item in fields.children("env"):
        name = item.required_text("name")
        source = item.child("valueFrom", "env_refs", name)
        if source is not None:
            refs[name] = _env_source(source)
            env.pop(name, None)
        else:
            env[name] = item.take("value", "")
            item.record("value", (*fields.loc, "env", name))
            refs.pop(name, None)
        item.done()
    if env:
        out["env"] = env
    if refs:
        out["env_refs"] = refs


def _env_source(fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, shoal_key in (
        ("configMapKeyRef", "config_map_key_ref"),
        ("secretKeyRef", "secret_key_ref"),
    ):
        ref = fields.child(key, shoal_key)
        if ref is not None:
            out[shoal_key] = _copy(ref, _KEY_REF)
    field_ref = fields.child("fieldRef", "field_path")
    if field_ref is not None:
        out["field_path"] = field_ref.take("fieldPath")
        field_ref.record("fieldPath", field_ref.loc)
        field_ref.take("apiVersion")  # always v1; nothing to honour
        field_ref.done()
    resource = fields.child("resourceFieldRef", "resource_field_ref")
    if resource is not None:
        out["resource_field_ref"] = resource_field_ref(resource)
    if not out:
        raise TranslationError(
            fields.path,
            "valueFrom is empty",
            "give one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
        )
    fields.done()
    return out


def resource_field_ref(fields: Fields) -> dict[str, Any]:
    """Return a ResourceFieldRef document; the divisor becomes millicores or bytes."""
    out = _copy(fields, {"resource": "resource", "containerName": "container_name"}, done=False)
    resource = out.get("resource")
    divisor = fields.take("divisor", "1")
    fields.record("divisor", (*fields.loc, "divisor"))
    parse = parse_cpu if isinstance(resource, str) and resource.endswith(".cpu") else parse_memory
    try:
        out["divisor"] = parse(divisor)
    except ValueError as exc:
        raise TranslationError(
            fields.at("divisor"), str(exc), "write a quantity such as '1m' (cpu) or '1Mi' (memory)"
        ) from None
    fields.done()
    return out


def _env_from(fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields.put(out, "prefix", "prefix")
    for key, shoal_key in (("configMapRef", "config_map"), ("secretRef", "secret")):
        ref = fields.child(key, shoal_key)
        if ref is None:
            continue
        ref.put(out, "name", shoal_key, at=ref.loc)
        ref.put(out, "optional", "optional", at=(*fields.loc, "optional"))
        ref.done()
    fields.done()
    return out


def _resources(fields: Fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in ("requests", "limits"):
        amounts = fields.child(part, part)
        if amounts is None:
            continue
        out[part] = _copy(amounts, {"cpu": "cpu", "memory": "memory"}, done=False)
        for key in amounts.value:
            if key not in ("cpu", "memory"):
                amounts.ignore_entry(key, "Shoal schedules and limits cpu and memory only")
    # As in Kubernetes, a limit without a request is also the request.
    for name, value in out.get("limits", {}).items():
        requests = out.setdefault("requests", {})
        if name not in requests:
            requests[name] = value
            fields.report.paths[(*fields.loc, "requests", name)] = f"{fields.path}.limits.{name}"
    fields.ignore("claims", "Shoal has no dynamic resource claims")
    fields.done()
    return out


def _probe(fields: Fields, named_ports: dict[str, Any]) -> dict[str, Any]:
    actions = [key for key in ("httpGet", "tcpSocket", "exec", "grpc") if fields.has(key)]
    if len(actions) != 1:
        raise TranslationError(
            fields.path,
            f"a probe needs exactly one action, it has {len(actions)}",
            "give one of httpGet, tcpSocket or exec",
        )
    out = _copy(fields, _PROBE_TIMING, done=False)
    http = fields.child("httpGet", "http_get")
    if http is not None:
        scheme = http.text("scheme", "HTTP")
        if scheme != "HTTP":
            raise TranslationError(
                http.at("scheme"),
                f"scheme {scheme!r} is not supported: Shoal's HTTP probes speak plain HTTP",
                "probe a plain HTTP port, or use tcpSocket or exec",
            )
        action = {"port": _probe_port(http, named_ports)}
        http.put(action, "path", "path")
        http.ignore("host", "Shoal probes the instance's own address")
        http.ignore("httpHeaders", "Shoal's probes send no extra headers")
        http.done()
        out["http_get"] = action
    tcp = fields.child("tcpSocket", "tcp_socket")
    if tcp is not None:
        out["tcp_socket"] = {"port": _probe_port(tcp, named_ports)}
        tcp.ignore("host", "Shoal probes the instance's own address")
        tcp.done()
    command = fields.child("exec", "exec")
    if command is not None:
        out["exec"] = _copy(command, {"command": "command"})
    if fields.has("grpc"):
        raise TranslationError(
            fields.at("grpc"),
            "gRPC probes are not supported by Shoal",
            "use exec with a health-check command, or tcpSocket",
        )
    fields.ignore("terminationGracePeriodSeconds", "Shoal uses the pod's grace period")
    fields.done()
    return out


def _probe_port(fields: Fields, named_ports: dict[str, Any]) -> Any:
    """Return the probe's port number, resolving a name against the container's ports."""
    port = fields.take("port")
    fields.record("port", (*fields.loc, "port"))
    if isinstance(port, str) and not port.isdigit():
        if port not in named_ports:
            known = ", ".join(sorted(named_ports)) or "none"
            raise TranslationError(
                fields.at("port"),
                f"no port of the container is named {port!r} (its named ports: {known})",
                "name one of the container's ports, or give the port number",
            )
        return named_ports[port]
    return port


def _mount(fields: Fields) -> dict[str, Any]:
    out = _copy(
        fields,
        {"name": "name", "mountPath": "mount_path", "readOnly": "read_only"},
        done=False,
    )
    sub_path = fields.text("subPath")
    fields.record("subPath", (*fields.loc, "sub_path"))
    if sub_path:  # '' means the whole volume, as in Kubernetes
        out["sub_path"] = sub_path
    fields.ignore("subPathExpr", "Shoal does not expand variables in subPath")
    fields.ignore("mountPropagation", "Shoal's mounts are private")
    fields.ignore("recursiveReadOnly", "Shoal's readOnly mounts are read-only as Shoal mounts them")
    fields.done()
    return out


def _copy(fields: Fields, names: dict[str, str], *, done: bool = True) -> dict[str, Any]:
    """Return ``{shoal_key: value}`` for the Kubernetes keys of ``names`` that are set."""
    out: dict[str, Any] = {}
    for key, shoal_key in names.items():
        fields.put(out, key, shoal_key)
    if done:
        fields.done()
    return out
