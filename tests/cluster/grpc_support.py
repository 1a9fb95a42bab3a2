"""What the gRPC service tests share: a service served on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import grpc

from shoal.cluster import serve_grpc


@asynccontextmanager
async def serving(*handlers: grpc.GenericRpcHandler) -> AsyncIterator[str]:
    """Serve ``handlers`` on 127.0.0.1 at a free port until the block ends; yield the address."""
    async with anyio.create_task_group() as group:
        port = await group.start(serve_grpc, "127.0.0.1:0", list(handlers))
        try:
            yield f"127.0.0.1:{port}"
        finally:
            group.cancel_scope.cancel()
