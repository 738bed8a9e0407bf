"""The agent's Prometheus metrics in the kernel lab agree with what charon itself lists."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest

from hack.labkit.lab.host import LabOptions, run_lab
from hack.labkit.lab.ops_report import (
    metric_sas,
    metric_value,
    swanctl_child_sas,
    swanctl_ike_sas,
    swanctl_states,
)
from tests.lab.conftest import EXAMPLE, RESYNC_SECONDS


@pytest.fixture(scope="module")
def metrics_step(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("linux.uml") is None:
        pytest.fail("lab tests need root and user-mode-linux (run hack/install-system-deps)")
    keep = tmp_path_factory.mktemp("lab-metrics")
    # cluster mode: a peer is published once it enforces, so no initiation meets a peer that
    # has not loaded its side yet and every IKE failure counted would be a real one (the
    # standalone lab lists all peers up front: its first initiations may be refused)
    report = run_lab(LabOptions(
        nodes=2, policy=EXAMPLE, mode="cluster", steps=[{"do": "metrics", "rekey": "node-1"}],
        resync_seconds=RESYNC_SECONDS, timeout=300, keep_logs=keep / "lab",
    ))
    (keep / "report.json").write_text(json.dumps(report, indent=1))
    assert not report["errors"], report["errors"]
    assert report["ready"], "agents never reported the policy enforced"
    step = next(s for s in report["steps"] if s["do"] == "metrics")
    assert step["ok"], step["detail"]
    detail: dict[str, Any] = step["detail"]
    return detail


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_installed_sas_in_metrics_match_swanctl_list_sas(
    metrics_step: dict[str, Any], node: str
) -> None:
    seen = metrics_step[node]
    charon_before = swanctl_states(seen["swanctl_before"])
    charon = swanctl_states(seen["swanctl"])
    assert charon_before == charon, "SAs changed during the check; rerun"
    assert charon.get("INSTALLED", 0) >= 1, seen["swanctl"]  # the probes made SAs
    assert metric_sas(seen["metrics"]).get("INSTALLED", 0) == charon["INSTALLED"]
    assert metric_sas(seen["metrics"]) == charon


@pytest.mark.parametrize("node", ["node-1", "node-2"])
def test_metrics_carry_kernel_counters_certificate_expiry_and_pass_timings(
    metrics_step: dict[str, Any], node: str
) -> None:
    text = metrics_step[node]["metrics"]
    # /proc/net/xfrm_stat of the node's network namespace, read at scrape time
    assert metric_value(text, "strongmesh_xfrm_stat", {"counter": "XfrmOutNoStates"}) is not None
    expiry = metric_value(text, "strongmesh_certificate_expiry_seconds", {"policy": "node-mesh"})
    assert expiry is not None
    assert expiry > 365 * 86400  # the example certificate is valid for ten years
    passes = metric_value(text, "strongmesh_reconcile_duration_seconds_count")
    assert passes is not None
    assert passes >= 2
    assert metric_value(text, "strongmesh_reconcile_errors_total") == 0
    assert metric_value(text, "strongmesh_ike_failures_total") == 0


def test_rekeys_are_counted_from_charons_events_on_both_ends(
    metrics_step: dict[str, Any],
) -> None:
    rekey = metrics_step["rekey"]
    assert all(c["rc"] == 0 for c in rekey["commands"]), rekey["commands"]
    children = swanctl_child_sas(rekey["swanctl"])
    # `swanctl --rekey --ike/--child NAME` rekeys every SA of that name on node-1
    expected = {"ike": len(swanctl_ike_sas(rekey["swanctl"])), "child": len(children)}
    assert expected["child"] >= 1
    for node in ("node-1", "node-2"):  # initiator and responder each see every rekey
        before, after = rekey["before"][node], rekey["after"][node]
        counted = {k: after.get(k, 0) - before.get(k, 0) for k in expected}
        assert counted == expected, (node, rekey)
