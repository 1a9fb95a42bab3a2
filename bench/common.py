"""What the benchmarks share: argument parsing, and tracing that can be switched off and on."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from shoal.agent import SpanRecorder


def bounded(name: str, low: int, high: int) -> Callable[[str], int]:
    """Return an argparse type that accepts integers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be {low} to {high}")
        return value

    return parse


class TracingSwitch(Sampler):
    """Samples every span while on and none while off: traces on and off in one process."""

    on = True

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Record and sample the span while on; drop it while off."""
        decision = Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP
        return SamplingResult(decision, attributes)

    def get_description(self) -> str:
        """Name the sampler."""
        return "TracingSwitch"


def install_switched_tracing(switch: TracingSwitch, recorder: SpanRecorder | None) -> None:
    """Set up the process's SDK as the agent does (a span buffer), behind ``switch``.

    Telemetry on and off can then alternate in one run: off drops every span
    at sampling, so the service, the loops and the runtime record nothing.
    With ``recorder`` None the provider gets no span buffer here: the first
    node built in the process joins it with the agent's own
    (``install_tracing``), so every span passes one buffer, as in an agent,
    not two.
    """
    provider = TracerProvider(sampler=switch)
    if recorder is not None:
        provider.add_span_processor(recorder)
    trace.set_tracer_provider(provider)
