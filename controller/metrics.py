"""Prometheus metrics of the agent and the operator.

Decisions (parsing ``/proc/net/xfrm_stat``, classifying VICI events, seconds until expiry) are
pure functions; the registry and the HTTP server are the thin I/O around them. Each process keeps
its own ``CollectorRegistry`` so tests can build several without global state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.models.node import SecurityAssociation

AGENT_PORT = 9476
OPERATOR_PORT = 9477
XFRM_STAT_PATH = "/proc/net/xfrm_stat"


def parse_xfrm_stat(text: str) -> dict[str, int]:
    """``XfrmInError  0`` lines → {"XfrmInError": 0}; malformed lines are skipped."""
    counters: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counters[parts[0]] = int(parts[1])
    return counters


def sas_by_state(sas: Iterable[SecurityAssociation]) -> dict[tuple[str, str], int]:
    """(policy, CHILD_SA state) → count."""
    counts: dict[tuple[str, str], int] = {}
    for sa in sas:
        key = (sa.policy, sa.state)
        counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass(frozen=True)
class EventOutcome:
    """What one VICI event means for the counters."""

    ike_failure: bool = False
    ike_rekey: bool = False
    child_rekey: bool = False


def classify_vici_event(event_type: str, message: Mapping[str, Any]) -> EventOutcome:
    """Rekeys come as their own events; an IKE_SA that goes down before it was ever
    established (state CONNECTING) is a failed negotiation."""
    if event_type == "ike-rekey":
        return EventOutcome(ike_rekey=True)
    if event_type == "child-rekey":
        return EventOutcome(child_rekey=True)
    if event_type == "ike-updown" and not _truthy(message.get("up")):
        for sa in message.values():
            if isinstance(sa, Mapping) and _text(sa.get("state")) == "CONNECTING":
                return EventOutcome(ike_failure=True)
    return EventOutcome()


def seconds_until(not_after: dt.datetime, now: dt.datetime) -> float:
    return (not_after - now).total_seconds()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _truthy(value: Any) -> bool:
    return _text(value) == "yes"


class XfrmStatCollector(Collector):
    """Reads the kernel's xfrm error counters at scrape time (they are the kernel's, not ours)."""

    def __init__(self, read: Callable[[], str]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "strongmesh_xfrm_stat",
            "Kernel xfrm error counters from /proc/net/xfrm_stat (monotonic in the kernel).",
            labels=["counter"],
        )
        try:
            counters = parse_xfrm_stat(self._read())
        except OSError:
            counters = {}
        for name, value in sorted(counters.items()):
            family.add_metric([name], value)
        yield family


def read_xfrm_stat() -> str:
    with open(XFRM_STAT_PATH, encoding="ascii") as f:
        return f.read()


class AgentMetrics:
    """Every metric the node agent exports."""

    def __init__(
        self, registry: CollectorRegistry | None = None, read_stat: Callable[[], str] | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.sas = Gauge(
            "strongmesh_sas",
            "CHILD_SAs held by charon, by policy and state.",
            ["policy", "state"],
            registry=self.registry,
        )
        self.ike_failures = Counter(
            "strongmesh_ike_failures",
            "IKE_SAs that went down before they were established.",
            registry=self.registry,
        )
        self.rekeys = Counter(
            "strongmesh_rekeys", "Rekeyings seen, by SA kind.", ["kind"], registry=self.registry
        )
        self.cert_expiry = Gauge(
            "strongmesh_certificate_expiry_seconds",
            "Seconds until the node's instance certificate expires, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "strongmesh_reconcile_duration_seconds",
            "Duration of reconcile passes.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "strongmesh_reconcile_errors", "Reconcile passes that failed.", registry=self.registry
        )
        self.registry.register(XfrmStatCollector(read_stat or read_xfrm_stat))

    def observe_sas(self, sas: Sequence[SecurityAssociation]) -> None:
        self.sas.clear()
        for (policy, state), count in sas_by_state(sas).items():
            self.sas.labels(policy=policy, state=state).set(count)

    def observe_event(self, event_type: str, message: Mapping[str, Any]) -> None:
        outcome = classify_vici_event(event_type, message)
        if outcome.ike_failure:
            self.ike_failures.inc()
        if outcome.ike_rekey:
            self.rekeys.labels(kind="ike").inc()
        if outcome.child_rekey:
            self.rekeys.labels(kind="child").inc()

    def observe_certificates(self, not_after: Mapping[str, dt.datetime], now: dt.datetime) -> None:
        self.cert_expiry.clear()
        for policy, when in not_after.items():
            self.cert_expiry.labels(policy=policy).set(seconds_until(when, now))


class OperatorMetrics:
    """Every metric the operator exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.policies_ready = Gauge(
            "strongmesh_policy_ready_nodes",
            "Nodes enforcing the current generation, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.policies_selected = Gauge(
            "strongmesh_policy_selected_nodes",
            "Nodes a policy selects.",
            ["policy"],
            registry=self.registry,
        )
        self.established_sas = Gauge(
            "strongmesh_policy_established_sas",
            "Established CHILD_SAs on all nodes, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.cert_expiry = Gauge(
            "strongmesh_certificate_expiry_seconds",
            "Seconds until the policy's instance certificate expires.",
            ["policy"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "strongmesh_status_writes", "IPsecPolicy status writes.", registry=self.registry
        )
        self.reconcile_errors = Counter(
            "strongmesh_reconcile_errors", "Handler runs that failed.", registry=self.registry
        )


def serve(registry: CollectorRegistry, port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics in a daemon thread; port 0 disables metrics."""
    if port:
        start_http_server(port, addr=address, registry=registry)
