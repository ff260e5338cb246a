"""`fpmon otlp`'s own counts, as its `/status` JSON document and its `/metrics` exposition."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fp_monitor.domain.text import clean

STATUS_VERSION = 1


@dataclass(frozen=True)
class Unmatched:
    """Spans or data points with a fingerprint that no target took, per host and model."""

    host: str
    """`server.address[:server.port]`, else the provider name, else "-"."""
    model: str
    """The request model, else "-"."""
    count: int


@dataclass(frozen=True)
class IntakeStatus:
    spans: int
    """Spans received (with a fingerprint or not)."""
    data_points: int
    rejected_spans: int
    rejected_data_points: int
    observations: int
    """Calls taken for recording (a data point's increase counts each call)."""
    recorded: int
    failed: int
    """Observations whose recording failed (logged)."""
    queued: int
    """Observations waiting for the history."""
    busy: int
    """Requests answered 503 because the queue was full."""
    unmatched: tuple[Unmatched, ...]
    targets: tuple[str, ...]
    """The targets recorded to so far."""


def status_document(status: IntakeStatus) -> dict[str, object]:
    """The /status JSON: versioned like fpmon's other JSON contracts."""
    return {"version": STATUS_VERSION, **asdict(status)}


def status_exposition(status: IntakeStatus) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    return generate_latest(registry)


class _StatusCollector(Collector):
    def __init__(self, status: IntakeStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        received = CounterMetricFamily(
            "fpmon_otlp_received", "Spans and metric data points received.", labels=["signal"]
        )
        received.add_metric(["span"], status.spans)
        received.add_metric(["metric"], status.data_points)
        yield received
        rejected = CounterMetricFamily(
            "fpmon_otlp_rejected",
            "Spans and data points rejected (OTLP partial success).",
            labels=["signal"],
        )
        rejected.add_metric(["span"], status.rejected_spans)
        rejected.add_metric(["metric"], status.rejected_data_points)
        yield rejected
        observations = CounterMetricFamily(
            "fpmon_otlp_observations",
            "Calls with a fingerprint, by what became of them.",
            labels=["outcome"],
        )
        observations.add_metric(["taken"], status.observations)
        observations.add_metric(["recorded"], status.recorded)
        observations.add_metric(["failed"], status.failed)
        yield observations
        yield GaugeMetricFamily(
            "fpmon_otlp_queued", "Observations waiting for the history.", value=status.queued
        )
        yield CounterMetricFamily(
            "fpmon_otlp_busy", "Requests answered 503: the queue was full.", value=status.busy
        )
        unmatched = CounterMetricFamily(
            "fpmon_otlp_unmatched",
            "Spans and data points with a fingerprint that matched no target.",
            labels=["host", "model"],
        )
        for key in status.unmatched:
            unmatched.add_metric([clean(key.host), clean(key.model)], key.count)
        yield unmatched
