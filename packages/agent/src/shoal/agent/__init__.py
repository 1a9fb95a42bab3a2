"""Shoal's composition root: assembles a node from concrete parts and hosts the agent process.

The one package that picks implementations: :func:`build_node` turns a
:class:`NodeConfig` into a :class:`ShoalNode` (a store from ``shoal.state``,
a runtime from ``shoal.runtime``, gossip and gRPC from ``shoal.cluster``, the
loops and the service layer of ``shoal.core``), and :func:`run_agent` hosts
it with the REST API of ``shoal.api`` and the front doors mounted beside it
(``shoal.mcp`` mounts ``/mcp``). :func:`reset_data_dir` is ``shoal node
reset``; :func:`configure_logging` sets the agent's log format (text or JSON
lines with trace ids); :func:`install_tracing` sets up OpenTelemetry (a span
buffer for ``get_trace``, OTLP export when the ``OTEL_*`` variables ask).
The ``shoal`` CLI calls these; nothing else imports this package.
"""

from ._config import NodeConfig, host_capacity, prepare_data_dir
from ._gc import tune_gc
from ._logging import LOG_FORMATS, configure_logging
from ._node import ShoalNode, build_node
from ._process import AuthorizedKeysFile, run_agent
from ._reset import ResetReport, reset_data_dir
from ._tracing import SpanRecorder, install_tracing

__all__ = [
    "LOG_FORMATS",
    "AuthorizedKeysFile",
    "NodeConfig",
    "ResetReport",
    "ShoalNode",
    "SpanRecorder",
    "build_node",
    "configure_logging",
    "host_capacity",
    "install_tracing",
    "prepare_data_dir",
    "reset_data_dir",
    "run_agent",
    "tune_gc",
]
