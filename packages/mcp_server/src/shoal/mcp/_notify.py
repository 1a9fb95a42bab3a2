"""Change notifications: tell resource subscribers when the object behind a resource changes.

Two kinds of subscriber exist. Clients on the 2026-07-28 protocol open a
``subscriptions/listen`` stream; the SDK's listen handler registers a
listener on this module's :class:`ChangeNotifier`, which is the server's
subscription bus. Clients on the handshake-era protocols (2025 and older)
send ``resources/subscribe`` and get ``notifications/resources/updated`` on
their connection.

Only while at least one subscriber exists does the notifier follow the
service's event stream (``Service.watch_events``); each event names the
object it is about, which maps to resource URIs:

* every event (but MCP audit events) → ``shoal://events``;
* a Workload event → ``shoal://workloads/{ns}/{name}``;
* an Instance event → its workload's and its node's resources;
* a Node event → ``shoal://nodes/{name}``.

Notifications say "this may have changed" (a level trigger): a client
re-reads the resource. If the event stream breaks (a remote server went
away) the notifier retries with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from shoal.interfaces import Event, NotFound, Service, ShoalError

from ._audit import AUDIT_REASON

__all__ = ["EVENTS_URI", "ChangeNotifier", "node_uri", "workload_uri"]

log = logging.getLogger("shoal.mcp")

EVENTS_URI = "shoal://events"


def workload_uri(namespace: str, name: str) -> str:
    """Return the URI of a workload's resource."""
    return f"shoal://workloads/{namespace}/{name}"


def node_uri(name: str) -> str:
    """Return the URI of a node's resource."""
    return f"shoal://nodes/{name}"


def _workload_candidates(instance: str) -> list[str]:
    """Return the workload names an instance name ``{workload}-{suffix}`` may belong to."""
    parts = instance.split("-")
    return ["-".join(parts[:n]) for n in range(1, len(parts))]


class ChangeNotifier:
    """The server's subscription bus, and the watcher that feeds it from Shoal's events.

    Args:
        service: Where events come from (read-only use).
        backoff: Seconds to wait before following a broken event stream again.
    """

    def __init__(self, service: Service, *, backoff: float = 2.0) -> None:
        self.service = service
        self.backoff = backoff
        self._bus = InMemorySubscriptionBus()
        self._listeners = 0
        # uri -> connection key -> a session on that connection (handshake-era clients)
        self._sessions: dict[str, dict[int, ServerSession]] = {}
        self._wanted = anyio.Event()
        self._scope: anyio.CancelScope | None = None

    @property
    def subscribers(self) -> int:
        """Return how many listen streams and resource subscriptions are open."""
        return self._listeners + sum(
            len(by_connection) for by_connection in self._sessions.values()
        )

    # --- the SubscriptionBus protocol (subscriptions/listen) -------------

    async def publish(self, event: ServerEvent) -> None:
        """Deliver ``event`` to every listen stream."""
        await self._bus.publish(event)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register a listen stream's listener; return its idempotent unsubscribe."""
        unsubscribe = self._bus.subscribe(listener)
        self._listeners += 1
        self._demand_changed()
        done = False

        def undo() -> None:
            nonlocal done
            if not done:
                done = True
                unsubscribe()
                self._listeners -= 1
                self._demand_changed()

        return undo

    # --- resources/subscribe (handshake-era clients) ---------------------

    async def on_subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        """Handle ``resources/subscribe``: notify this connection when ``params.uri`` changes."""
        self._sessions.setdefault(str(params.uri), {})[_connection_key(ctx.session)] = ctx.session
        self._demand_changed()
        return EmptyResult()

    async def on_unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        """Handle ``resources/unsubscribe``."""
        self._drop(str(params.uri), _connection_key(ctx.session))
        return EmptyResult()

    def _drop(self, uri: str, key: int) -> None:
        by_connection = self._sessions.get(uri, {})
        by_connection.pop(key, None)
        if not by_connection:
            self._sessions.pop(uri, None)
        self._demand_changed()

    # --- watching --------------------------------------------------------

    def _demand_changed(self) -> None:
        if self.subscribers:
            self._wanted.set()
        elif self._wanted.is_set():
            self._wanted = anyio.Event()
            if self._scope is not None:
                self._scope.cancel()

    async def run(self) -> None:
        """Follow the event stream while anyone is subscribed; run until cancelled."""
        while True:
            await self._wanted.wait()
            with anyio.CancelScope() as self._scope:
                try:
                    async for event in self.service.watch_events():
                        await self.notify(event)
                except ShoalError as exc:
                    log.warning("event stream broke (%s); following it again shortly", exc)
                    await anyio.sleep(self.backoff)
            self._scope = None

    async def uris_for(self, event: Event) -> list[str]:
        """Return the resource URIs ``event`` may have changed."""
        obj = event.object
        uris = [EVENTS_URI]
        if obj.kind == "Workload" and obj.namespace:
            uris.append(workload_uri(obj.namespace, obj.name))
        elif obj.kind == "Node":
            uris.append(node_uri(obj.name))
        elif obj.kind == "Instance" and obj.namespace:
            try:
                inst = await self.service.get_instance(obj.name, obj.namespace)
            except NotFound:  # already removed: guess its workload from its name
                names = _workload_candidates(obj.name)
                uris.extend(workload_uri(obj.namespace, name) for name in names)
            else:
                uris.append(workload_uri(inst.namespace, inst.workload))
                if inst.node is not None:
                    uris.append(node_uri(inst.node))
        return uris

    async def notify(self, event: Event) -> None:
        """Tell the subscribers of every resource ``event`` may have changed."""
        if event.reason == AUDIT_REASON:
            return  # reading resources after a tool call must not loop on its own audit
        for uri in await self.uris_for(event):
            await self._bus.publish(ResourceUpdated(uri=uri))
            for key, session in list(self._sessions.get(uri, {}).items()):
                try:
                    await session.send_resource_updated(uri)
                except Exception as exc:  # the connection is gone: forget it
                    log.info("dropping the subscription of a closed connection to %s: %r", uri, exc)
                    self._drop(uri, key)


def _connection_key(session: ServerSession) -> int:
    # A ServerSession is built per request; its connection is what a
    # subscription belongs to. The SDK exposes no public handle for it.
    return id(getattr(session, "_connection", session))
