"""The agent's metrics reflect each reconcile pass (``controller.agent.main``).

``serve`` is replaced by a recorder, so the registry is read directly; the served HTTP
endpoint is scraped in tests/integration/test_agent_metrics_http.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controller import metrics
from controller.agent.main import _metrics
from controller.agent.reconcile import NodeReconciler, PassResult
from controller.models.node import IPsecNodeStatus, SecurityAssociation


def pass_result(states: list[str], errors: list[str], seconds: float) -> PassResult:
    sas = [SecurityAssociation(policy="mesh", peer=f"10.77.0.{i}", state=st)
           for i, st in enumerate(states, start=2)]
    return PassResult(
        status=IPsecNodeStatus(sas=sas, errors=errors), identity="", seconds=seconds,
        xfrm_changes=0, charon_changed=False, charon_ok=not errors,
    )


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[CollectorRegistry, int]]:
    """What ``_metrics`` asked to serve, instead of serving it."""
    calls: list[tuple[CollectorRegistry, int]] = []
    monkeypatch.setattr(metrics, "serve", lambda registry, port: calls.append((registry, port)))
    return calls


def test_metrics_port_zero_serves_nothing_and_records_nothing(
    served: list[tuple[CollectorRegistry, int]],
) -> None:
    observe, count = _metrics(0)
    assert observe is None
    assert count is None
    assert served == []


def test_each_pass_updates_sas_durations_and_errors_in_the_served_registry(
    served: list[tuple[CollectorRegistry, int]],
) -> None:
    observe, _ = _metrics(metrics.AGENT_PORT)
    assert observe is not None
    ((registry, port),) = served
    assert port == metrics.AGENT_PORT
    reconciler = cast(NodeReconciler, SimpleNamespace(last_good={}))
    observe(pass_result(["INSTALLED", "INSTALLED", "REKEYED"], [], 0.02), reconciler)
    first = generate_latest(registry).decode()
    observe(pass_result([], ["charon: down"], 0.5), reconciler)
    second = generate_latest(registry).decode()
    assert 'strongmesh_sas{policy="mesh",state="INSTALLED"} 2.0' in first
    assert 'strongmesh_sas{policy="mesh",state="REKEYED"} 1.0' in first
    assert "strongmesh_reconcile_errors_total 0.0" in first
    assert "strongmesh_reconcile_duration_seconds_count 1.0" in first
    assert 'strongmesh_sas{policy="mesh"' not in second
    assert "strongmesh_reconcile_errors_total 1.0" in second
    assert "strongmesh_reconcile_duration_seconds_count 2.0" in second
