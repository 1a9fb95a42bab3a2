"""REST routes for the configuration objects: ConfigMaps, Secrets and Namespaces.

Routes (errors as everywhere: ``{"error": {"code", "message", "details"}}``)::

    GET    /v1/configmaps, /v1/secrets                       viewer  every namespace
    GET    /v1/namespaces                                    viewer
    DELETE /v1/namespaces/{name}                             operator (only an empty one)
    GET    /v1/namespaces/{ns}/configmaps[/{name}]           viewer
    DELETE /v1/namespaces/{ns}/configmaps/{name}             operator
    GET    /v1/namespaces/{ns}/secrets[/{name}]              viewer  keys and sizes only
    GET    /v1/namespaces/{ns}/secrets/{name}?show_values=true  admin  the values too
    DELETE /v1/namespaces/{ns}/secrets/{name}                operator

A ConfigMap's or Secret's DELETE may carry ``If-Match: "<uid>/<generation>"``:
it is deleted only if it is still that version (409 otherwise).

A Secret's values leave the server only for ``show_values=true`` from an admin
key; the service records that as a ``ValuesShown`` event about the Secret (by
the caller, through its front door), never with the values in it.

No ``from __future__ import annotations`` here: FastAPI resolves the route
annotations at registration, and the role dependencies are local names.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from shoal.core import ShoalService
from shoal.interfaces import Caller, ConfigMap, Namespace, Role, SecretView

from ._precondition import Precondition

__all__ = ["CALLER_STATE", "Deleted", "config_router"]

CALLER_STATE = "shoal_caller"
"""The ``request.state`` attribute the role dependency leaves the authenticated Caller in."""

RoleDependency = Callable[[Role], Callable[[Request], Awaitable[ShoalService]]]
"""``role(Role.X)``: a dependency that authenticates, checks the role and binds the service."""


class Deleted(BaseModel):
    """What a DELETE removed."""

    kind: Literal["ConfigMap", "Secret", "Namespace"]
    """ConfigMap, Secret or Namespace."""
    namespace: str
    """Its namespace ('' for a Namespace)."""
    name: str
    """Its name."""


def config_router(role: RoleDependency) -> APIRouter:
    """Return the /v1 routes for ConfigMaps, Secrets and Namespaces, guarded by ``role``."""
    viewer = Annotated[ShoalService, Depends(role(Role.VIEWER))]
    operator = Annotated[ShoalService, Depends(role(Role.OPERATOR))]
    router = APIRouter(prefix="/v1")

    @router.get("/configmaps", tags=["config"])
    async def list_all_config_maps(svc: viewer) -> list[ConfigMap]:
        """List the ConfigMaps of every namespace."""
        return await svc.list_config_maps()

    @router.get("/secrets", tags=["config"])
    async def list_all_secrets(svc: viewer) -> list[SecretView]:
        """List the Secrets of every namespace: keys and sizes, never values."""
        return await svc.list_secrets()

    @router.get("/namespaces", tags=["config"])
    async def list_namespaces(svc: viewer) -> list[Namespace]:
        """List the Namespace objects, and an entry for every namespace objects use."""
        return await svc.list_namespaces()

    @router.delete("/namespaces/{name}", tags=["config"])
    async def delete_namespace(name: str, svc: operator, expected: Precondition) -> Deleted:
        """Delete a Namespace; refused while it holds workloads, ConfigMaps or Secrets."""
        await svc.delete_config("Namespace", name, expected=expected)  # refuses If-Match
        return Deleted(kind="Namespace", namespace="", name=name)

    @router.get("/namespaces/{namespace}/configmaps", tags=["config"])
    async def list_config_maps(namespace: str, svc: viewer) -> list[ConfigMap]:
        """List the ConfigMaps of one namespace."""
        return await svc.list_config_maps(namespace)

    @router.get("/namespaces/{namespace}/configmaps/{name}", tags=["config"])
    async def get_config_map(namespace: str, name: str, svc: viewer) -> ConfigMap:
        """Get one ConfigMap, its data included."""
        return await svc.get_config_map(name, namespace)

    @router.delete("/namespaces/{namespace}/configmaps/{name}", tags=["config"])
    async def delete_config_map(
        namespace: str, name: str, svc: operator, expected: Precondition
    ) -> Deleted:
        """Delete a ConfigMap; pods that use it keep what they have, new ones wait for it."""
        await svc.delete_config("ConfigMap", name, namespace, expected=expected)
        return Deleted(kind="ConfigMap", namespace=namespace, name=name)

    @router.get("/namespaces/{namespace}/secrets", tags=["config"])
    async def list_secrets(namespace: str, svc: viewer) -> list[SecretView]:
        """List the Secrets of one namespace: keys and sizes, never values."""
        return await svc.list_secrets(namespace)

    @router.get("/namespaces/{namespace}/secrets/{name}", tags=["config"])
    async def get_secret(
        namespace: str,
        name: str,
        request: Request,
        svc: viewer,
        show_values: Annotated[
            bool, Query(description="Include the values (base64); admin keys only, and recorded.")
        ] = False,
    ) -> SecretView:
        """Get one Secret: keys and sizes; the values too with show_values (admin only)."""
        if show_values:
            caller: Caller = getattr(request.state, CALLER_STATE)
            caller.require(Role.ADMIN, f"showing the values of Secret {namespace}/{name}")
        return await svc.get_secret(name, namespace, show_values=show_values)

    @router.delete("/namespaces/{namespace}/secrets/{name}", tags=["config"])
    async def delete_secret(
        namespace: str, name: str, svc: operator, expected: Precondition
    ) -> Deleted:
        """Delete a Secret; pods that use it keep what they have, new ones wait for it."""
        await svc.delete_config("Secret", name, namespace, expected=expected)
        return Deleted(kind="Secret", namespace=namespace, name=name)

    return router
