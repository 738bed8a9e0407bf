"""Gentle shutdown in the kernel lab: charon outlives the node's workloads, at most the timeout.

One lab run, the chart's sequence twice on node-1: a workload sends a datagram to node-2 every
0.2 s; ``strongmesh drain --wait-pid <workload>`` runs; when it returns charon gets SIGTERM.
``drained``: the workload exits after 3 s, before the drain's 10 s timeout, so charon leaves
right after it. ``timeout``: the workload runs 7 s but the policy's ``shutdownTimeoutSeconds``
is 3 (read from what the agent recorded), so charon leaves at 3 s while the workload still
sends: in Required, those datagrams must not leave in the clear.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest

from hack.labkit.lab.host import LabOptions, run_lab
from hack.labkit.lab.ops_report import shutdown_findings
from hack.labkit.lab.pcap import read_pcap
from tests.lab.conftest import RESYNC_SECONDS, matrix, node_pairs, policy_variant

POLICY_TIMEOUT = 3
DRAINED = {"do": "gentle_shutdown", "label": "drained", "workload_seconds": 3, "timeout": 10}
TIMEOUT = {"do": "gentle_shutdown", "label": "timeout", "workload_seconds": POLICY_TIMEOUT + 4}
# drain is a fresh Python process: its imports (slow inside user-mode-linux) come first
DRAIN_STARTUP_SECONDS = 3.0


@pytest.fixture(scope="module")
def shutdown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("linux.uml") is None:
        pytest.fail("lab tests need root and user-mode-linux (run hack/install-system-deps)")
    keep = tmp_path_factory.mktemp("lab-shutdown")
    policy = policy_variant(keep / "policy.yaml", {"shutdownTimeoutSeconds": POLICY_TIMEOUT})
    report = run_lab(LabOptions(
        nodes=2, policy=policy, mode="standalone",
        steps=[DRAINED, {"do": "probe", "label": "after-restart", "timeout": 20}, TIMEOUT],
        resync_seconds=RESYNC_SECONDS, timeout=300, keep_logs=keep / "lab",
    ))
    (keep / "report.json").write_text(json.dumps(report, indent=1))
    assert not report["errors"], report["errors"]
    assert report["ready"], "agents never reported the policy enforced"
    failed = [s for s in report["steps"] if not s["ok"]]
    assert not failed, failed
    packets = list(read_pcap((keep / "lab" / "capture.pcap").read_bytes()))
    details = {s["detail"]["label"]: s["detail"] for s in report["steps"]
               if s["do"] == "gentle_shutdown"}
    findings = {label: shutdown_findings(d, packets) for label, d in details.items()}
    (keep / "findings.json").write_text(json.dumps(findings, indent=1))
    return {"report": report, "details": details, "findings": findings}


def _encrypted_and_delivered_while_charon_was_up(found: dict[str, Any]) -> None:
    up = found["while_charon_up"]
    assert up["sent"] >= 10
    assert up["cleartext"] == 0
    assert up["esp"] == up["sent"]
    assert up["delivered"] == up["sent"]


def test_charon_leaves_right_after_a_workload_that_exits_before_the_timeout(
    shutdown: dict[str, Any],
) -> None:
    found, detail = shutdown["findings"]["drained"], shutdown["details"]["drained"]
    t = found["timeline"]
    assert "drained after" in detail["drain_log"]
    assert not found["workload_outlived_charon"]
    assert t["workload_exited"] <= t["drain_returned"] <= t["charon_exited"]
    assert 0 <= found["charon_exit_after_workload_exit"] <= 1.5
    assert t["charon_exited"] < DRAINED["timeout"]
    _encrypted_and_delivered_while_charon_was_up(found)


def test_charon_leaves_at_the_policy_timeout_while_the_workload_still_runs(
    shutdown: dict[str, Any],
) -> None:
    found, detail = shutdown["findings"]["timeout"], shutdown["details"]["timeout"]
    t = found["timeline"]
    assert detail["recorded_timeout"] == str(POLICY_TIMEOUT)  # written by the agent
    assert "timeout after" in detail["drain_log"]
    assert found["workload_outlived_charon"]
    assert POLICY_TIMEOUT <= t["drain_returned"] <= POLICY_TIMEOUT + DRAIN_STARTUP_SECONDS
    assert t["charon_exited"] < t["workload_exited"]
    _encrypted_and_delivered_while_charon_was_up(found)


@pytest.mark.parametrize("label", ["drained", "timeout"])
def test_no_cleartext_leaves_the_node_after_charon_left_in_required_mode(
    shutdown: dict[str, Any], label: str
) -> None:
    found = shutdown["findings"][label]
    after = found["after_charon_left"]
    assert after["sent"] >= 5
    assert after["cleartext"] == 0
    before, after_stop = found["owned_policies"]
    assert after_stop == before  # strongmesh's xfrm policies stay when charon stops


def test_the_node_is_back_to_esp_after_charon_restarted(shutdown: dict[str, Any]) -> None:
    report = shutdown["report"]
    after = matrix(report, "after-restart")
    assert {after[p] for p in node_pairs(report)} == {("esp", True)}
