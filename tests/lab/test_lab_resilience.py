"""Drift repair, agent restarts and bad updates in the kernel lab."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab.conftest import (
    EXAMPLE,
    RESYNC_SECONDS,
    cleartext_from_nodes,
    matrix,
    node_pairs,
    policy_variant,
)

Lab = Callable[..., dict[str, Any]]
MALFORMED_CA = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def _step(report: dict[str, Any], action: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["do"] == action)


def _spis(states: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {node: {s["spi"] for s in entries} for node, entries in states.items()}


def test_flushed_xfrm_policies_are_restored_within_the_timer_period(lab: Lab) -> None:
    report = lab(
        EXAMPLE,
        steps=[
            {"do": "flush_xfrm", "what": "policy"},
            {"do": "wait_policies", "timeout": 3 * RESYNC_SECONDS},
            {"do": "probe", "label": "after-flush", "timeout": 20},
        ],
    )
    assert _step(report, "wait_policies")["detail"] <= RESYNC_SECONDS + 2
    after = matrix(report, "after-flush")
    assert {after[p] for p in node_pairs(report)} == {("esp", True)}


def test_charon_restart_recovers_to_esp_without_cleartext_meanwhile(lab: Lab) -> None:
    report = lab(
        EXAMPLE,
        steps=[
            {"do": "restart_charon", "node": "node-1"},
            # probes start at once: Required must drop, never leak, while charon is empty
            {"do": "probe", "label": "during-restart", "timeout": 45},
        ],
    )
    during = matrix(report, "during-restart")
    assert {during[p] for p in node_pairs(report)} == {("esp", True)}
    # restart seen at once (socket watch), then the kernel's next acquire (xfrmAcqExpires 6 s)
    recovery = max(r["seconds"] for r in report["rounds"]["during-restart"]["traffic"])
    assert recovery <= RESYNC_SECONDS + 6 + 4
    node_to_node = [c for c in cleartext_from_nodes(report) if c[2] != "bystander"]
    assert node_to_node == []


def test_killed_agent_leaves_sas_alone_and_its_successor_adopts_them(lab: Lab) -> None:
    report = lab(
        EXAMPLE,
        steps=[
            {"do": "snapshot", "label": "before"},
            {"do": "kill_agent", "node": "node-1", "signal": "KILL"},
            {"do": "probe", "label": "agent-dead", "timeout": 10},
            {"do": "start_agent", "node": "node-1"},
            {"do": "wait_ready", "expected": {"node-mesh": 1}, "timeout": 60},
            {"do": "snapshot", "label": "after"},
            {"do": "probe", "label": "agent-back", "timeout": 10},
        ],
        mode="standalone",  # wait_ready reads the agents' status files
    )
    for label in ("agent-dead", "agent-back"):
        seen = matrix(report, label)
        assert {seen[p] for p in node_pairs(report)} == {("esp", True)}, label
    before, after = _spis(report["states"]["before"]), _spis(report["states"]["after"])
    assert before["node-1"], "no SAs before the kill"
    assert after == before, "SAs were re-created"


def test_policy_with_malformed_ca_keeps_last_good_state_and_reports_it(
    lab: Lab, tmp_path: Path
) -> None:
    bad = policy_variant(tmp_path / "bad.yaml", generation=2, ca_pem=MALFORMED_CA)
    report = lab(
        EXAMPLE,
        files={"bad.yaml": bad},
        steps=[
            {"do": "write_policy", "file": "bad.yaml"},
            {"do": "wait_status", "error_contains": "ca.crt", "timeout": 30},
            {"do": "snapshot", "label": "after-bad"},
            {"do": "probe", "label": "after-bad", "timeout": 10},
        ],
        mode="standalone",  # the agents' file input; tests/lab/test_lab_cluster.py: the API's
    )
    seen = matrix(report, "after-bad")
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert _spis(report["states"]["after-bad"]) == _spis(report["states"]["main"])
    for node in report["nodes"]:
        assert any("generation 2" in e and "ca.crt" in e for e in node["errors"]), node
        (policy,) = node["policies"]
        assert policy["generation"] == 1
        assert policy["enforcing"] is False
        assert "enforcing generation 1" in policy["message"]
