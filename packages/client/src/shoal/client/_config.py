"""The configuration calls of :class:`~shoal.client.ShoalClient`: ConfigMaps, Secrets, Namespaces.

A mixin, so the client's transport (:meth:`ShoalClient._call`) stays in one
place; see ``shoal.api._config_routes`` for the routes these call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

from shoal import interfaces

if TYPE_CHECKING:
    from shoal.interfaces import ConfigMap, Expected, Namespace, SecretView

__all__ = ["ConfigCalls"]

T = TypeVar("T")


class ConfigCalls:
    """ConfigMap, Secret and Namespace calls over the signed REST API."""

    async def _call(
        self,
        method: str,
        path: str,
        model: type[T],
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        expected: Expected | None = None,
    ) -> T:
        raise NotImplementedError  # ShoalClient's

    async def list_config_maps(self, namespace: str | None = None) -> list[ConfigMap]:
        """Return ConfigMaps, of one namespace or all."""
        path = "/v1/configmaps" if namespace is None else f"/v1/namespaces/{namespace}/configmaps"
        return await self._call("GET", path, list[interfaces.ConfigMap])

    async def get_config_map(self, name: str, namespace: str = "default") -> ConfigMap:
        """Return one ConfigMap. Raises NotFound."""
        path = f"/v1/namespaces/{namespace}/configmaps/{name}"
        return await self._call("GET", path, interfaces.ConfigMap)

    async def list_secrets(self, namespace: str | None = None) -> list[SecretView]:
        """Return Secrets, of one namespace or all, without their values."""
        path = "/v1/secrets" if namespace is None else f"/v1/namespaces/{namespace}/secrets"
        return await self._call("GET", path, list[interfaces.SecretView])

    async def get_secret(
        self, name: str, namespace: str = "default", *, show_values: bool = False
    ) -> SecretView:
        """Return one Secret; its values only with ``show_values`` (admin keys only).

        Raises:
            NotFound: no such Secret.
            Forbidden: ``show_values`` with a key below admin.

        """
        path = f"/v1/namespaces/{namespace}/secrets/{name}"
        params = {"show_values": "true"} if show_values else None
        return await self._call("GET", path, interfaces.SecretView, params=params)

    async def list_namespaces(self) -> list[Namespace]:
        """Return the Namespace objects, and an entry for every namespace objects use."""
        return await self._call("GET", "/v1/namespaces", list[interfaces.Namespace])

    async def delete_config(
        self,
        kind: Literal["ConfigMap", "Secret", "Namespace"],
        name: str,
        namespace: str = "default",
        *,
        expected: Expected | None = None,
    ) -> None:
        """Delete a ConfigMap, a Secret or an empty Namespace (``namespace`` ignored for one).

        With ``expected``, a ConfigMap or Secret only if it is still that version.

        Raises:
            NotFound: no such object.
            Conflict: a Namespace that still holds workloads, ConfigMaps or Secrets, or
                the object is not the ``expected`` version.

        """
        if kind == "Namespace":
            path = f"/v1/namespaces/{name}"
        else:
            plural = "configmaps" if kind == "ConfigMap" else "secrets"
            path = f"/v1/namespaces/{namespace}/{plural}/{name}"
        await self._call("DELETE", path, dict[str, str], expected=expected)
