from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import generate_latest

from controller.metrics import AgentMetrics, EventOutcome, classify_vici_event, parse_xfrm_stat
from controller.models.node import SecurityAssociation


def test_xfrm_stat_lines_become_counters_and_junk_is_skipped() -> None:
    text = "XfrmInError             \t0\nXfrmInNoStates\t12\ngarbage line here\nXfrmOutPolBlock 3\n"
    assert parse_xfrm_stat(text) == {"XfrmInError": 0, "XfrmInNoStates": 12, "XfrmOutPolBlock": 3}


@pytest.mark.parametrize(
    ("event", "message", "expected"),
    [
        ("ike-rekey", {}, EventOutcome(ike_rekey=True)),
        ("child-rekey", {}, EventOutcome(child_rekey=True)),
        ("ike-updown", {"up": b"yes", "sm-a": {"state": b"ESTABLISHED"}}, EventOutcome()),
        ("ike-updown", {"sm-a": {"state": b"ESTABLISHED"}}, EventOutcome()),
        ("ike-updown", {"sm-a": {"state": b"CONNECTING"}}, EventOutcome(ike_failure=True)),
        ("child-updown", {"sm-a": {"state": b"CONNECTING"}}, EventOutcome()),
    ],
    ids=["ike-rekey", "child-rekey", "ike-up", "ike-down-after-use", "ike-failed", "child-down"],
)
def test_vici_events_are_classified(
    event: str, message: dict[str, Any], expected: EventOutcome
) -> None:
    assert classify_vici_event(event, message) == expected


def _sa(policy: str, state: str) -> SecurityAssociation:
    return SecurityAssociation(policy=policy, peer="10.77.0.2", state=state)


def test_agent_metrics_export_sas_by_state_and_kernel_counters() -> None:
    metrics = AgentMetrics(read_stat=lambda: "XfrmOutNoStates 7\n")
    metrics.observe_sas(
        [_sa("mesh", "INSTALLED"), _sa("mesh", "INSTALLED"), _sa("mesh", "REKEYING")]
    )
    metrics.observe_event("ike-updown", {"x": {"state": b"CONNECTING"}})
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    metrics.observe_certificates({"mesh": now + dt.timedelta(days=2)}, now)
    text = generate_latest(metrics.registry).decode()
    assert 'strongmesh_sas{policy="mesh",state="INSTALLED"} 2.0' in text
    assert 'strongmesh_sas{policy="mesh",state="REKEYING"} 1.0' in text
    assert 'strongmesh_xfrm_stat{counter="XfrmOutNoStates"} 7.0' in text
    assert "strongmesh_ike_failures_total 1.0" in text
    assert 'strongmesh_certificate_expiry_seconds{policy="mesh"} 172800.0' in text


def test_sas_that_disappear_are_no_longer_exported() -> None:
    metrics = AgentMetrics(read_stat=lambda: "")
    metrics.observe_sas([_sa("mesh", "INSTALLED")])
    metrics.observe_sas([])
    assert 'strongmesh_sas{policy="mesh"' not in generate_latest(metrics.registry).decode()
