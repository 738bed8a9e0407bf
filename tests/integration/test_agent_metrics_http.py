"""The agent's metrics endpoint, served over HTTP on a real port, reflects each reconcile pass.
What each pass records is tested without a server in tests/unit/test_agent_metrics_wiring.py."""

from __future__ import annotations

import socket
import urllib.request
from types import SimpleNamespace
from typing import cast

from controller.agent.main import _metrics
from controller.agent.reconcile import NodeReconciler
from tests.unit.test_agent_metrics_wiring import pass_result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return cast(bytes, response.read()).decode()


def test_each_pass_updates_sas_durations_and_errors_on_the_served_endpoint() -> None:
    port = _free_port()
    observe, _ = _metrics(port)
    assert observe is not None
    reconciler = cast(NodeReconciler, SimpleNamespace(last_good={}))
    observe(pass_result(["INSTALLED", "INSTALLED", "REKEYED"], [], 0.02), reconciler)
    first = _scrape(port)
    observe(pass_result([], ["charon: down"], 0.5), reconciler)
    second = _scrape(port)
    assert 'strongmesh_sas{policy="mesh",state="INSTALLED"} 2.0' in first
    assert 'strongmesh_sas{policy="mesh",state="REKEYED"} 1.0' in first
    assert "strongmesh_reconcile_errors_total 0.0" in first
    assert "strongmesh_reconcile_duration_seconds_count 1.0" in first
    assert 'strongmesh_sas{policy="mesh"' not in second
    assert "strongmesh_reconcile_errors_total 1.0" in second
    assert "strongmesh_reconcile_duration_seconds_count 2.0" in second
