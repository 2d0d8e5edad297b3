"""The server's Prometheus metrics (prometheus_client), one registry per app: operations by
action and result, apply and step durations, drift findings per stack, request latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SLOW = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.operations = Counter(
            "iacloud_operations", "Operations finished, by action and result.",
            ["action", "result"], registry=r,
        )  # fmt: skip
        self.running = Gauge(
            "iacloud_operations_running", "Operations this server is running now.", registry=r
        )
        self.apply_seconds = Histogram(
            "iacloud_operation_duration_seconds", "Wall time of an operation, queue excluded.",
            ["action"], buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.step_seconds = Histogram(
            "iacloud_step_duration_seconds", "Wall time of one apply step.",
            ["kind", "type", "result"], buckets=_SLOW, registry=r,
        )  # fmt: skip
        self.drift = Gauge(
            "iacloud_drift_findings", "Findings of the stack's last drift run, by kind.",
            ["project", "stack", "kind"], registry=r,
        )  # fmt: skip
        self.requests = Histogram(
            "iacloud_api_request_duration_seconds", "API request latency.",
            ["method", "route", "status"], buckets=_FAST, registry=r,
        )  # fmt: skip

    def render(self, project: str) -> bytes:
        """The text format, with the per-stack series of `project` only: an admin of one
        project learns nothing of another's stacks (the other series are counts over all)."""
        mine = f'project="{project}"'.encode()
        return b"\n".join(
            line
            for line in generate_latest(self.registry).split(b"\n")
            if not line.startswith(b"iacloud_drift_findings{") or mine in line
        )
