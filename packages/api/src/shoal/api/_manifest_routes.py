"""REST route for the watched manifests directories of the node serving the API.

Routes (errors as everywhere: ``{"error": {"code", "message", "details"}}``)::

    GET    /v1/manifests                                     viewer

Each file with its content hash, when it was applied, the objects it owns,
and its error, warnings and conflicts (see :class:`~shoal.interfaces.ManifestSource`).
"""

from typing import Annotated

from fastapi import APIRouter, Depends

from shoal.core import ShoalService
from shoal.interfaces import ManifestSource, Role

from ._config_routes import RoleDependency

__all__ = ["manifests_router"]


def manifests_router(role: RoleDependency) -> APIRouter:
    """Return the /v1 route listing the watched manifests, guarded by ``role``."""
    viewer = Annotated[ShoalService, Depends(role(Role.VIEWER))]
    router = APIRouter(prefix="/v1")

    @router.get("/manifests", tags=["manifests"])
    async def list_manifests(svc: viewer) -> list[ManifestSource]:
        """List the files of this node's watched manifests directories (agent --manifests).

        Per file: path, content hash, when applied, the objects it owns, and its error,
        warnings and conflicts. Empty when the node watches none.
        """
        return await svc.list_manifests()

    return router
