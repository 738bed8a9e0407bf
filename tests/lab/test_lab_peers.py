"""One initiator per pair, SAs before traffic, and no duplicates: the no-stall data plane.

Cluster mode, three nodes. The lower address of each pair initiates its per-peer connection as
soon as the peer is published, so the policy is Ready only once every pair holds an SA, and a
pair's first datagram finds it: delivered at the first attempt, over ESP. Each pair holds one
IKE_SA and one CHILD_SA (one ESP state each way), also after a rekey, after charon restarts on
the initiator or on the responder, and after a peer leaves the policy and returns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab.conftest import EXAMPLE, matrix, node_pairs, policy_variant

Lab = Callable[..., dict[str, Any]]
POLICY = "node-mesh"


def _inbound_per_peer(states: dict[str, list[dict[str, Any]]], nodes: int) -> list[int]:
    counts = []
    for i in range(1, nodes + 1):
        me = f"10.77.0.{i}"
        for j in range(1, nodes + 1):
            if i != j:
                peer = f"10.77.0.{j}"
                counts.append(sum(1 for s in states[f"node-{i}"]
                                  if s["src"] == peer and s["dst"] == me))
    return counts


def _step(report: dict[str, Any], action: str, index: int = 0) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in report["steps"] if s["do"] == action]
    return found[index]


def _mesh(nodes: int) -> str:
    return f"all {nodes} selected nodes enforce generation 1 with SAs to all their peers"


def test_sas_exist_before_traffic_and_stay_one_per_pair_through_rekey_and_restarts(
    lab: Lab,
) -> None:
    report = lab(EXAMPLE, nodes=3, steps=[
        {"do": "metrics", "rekey": "node-1", "timeout": 30},
        {"do": "wait_one_sa_per_peer", "timeout": 30},
        {"do": "snapshot", "label": "after-rekey"},
        {"do": "restart_charon", "node": "node-1"},  # the initiator of both its pairs
        {"do": "wait_policy", "name": POLICY, "message_contains": _mesh(3), "timeout": 60},
        {"do": "wait_one_sa_per_peer", "timeout": 60},
        {"do": "probe", "label": "after-initiator-restart", "timeout": 20},
        {"do": "restart_charon", "node": "node-3"},  # the responder of both its pairs
        {"do": "wait_policy", "name": POLICY, "message_contains": _mesh(3), "timeout": 60},
        {"do": "wait_one_sa_per_peer", "timeout": 60},
        {"do": "probe", "label": "after-responder-restart", "timeout": 20},
    ])
    # Ready came with the mesh: the warm-up's first datagram of every pair found its SA
    warmup = {(r["src"], r["dst"]): r for r in report["rounds"]["warmup"]["traffic"]}
    for pair in node_pairs(report):
        assert (warmup[pair]["seen"], warmup[pair]["delivered"], warmup[pair]["attempts"]) == (
            "esp", True, 1), pair
    assert _inbound_per_peer(report["states"]["main"], 3) == [1] * 6
    for node in report["nodes"]:
        installed = [sa for sa in node["sas"] if sa["state"] == "INSTALLED"]
        assert sorted(sa["peer"] for sa in installed) == sorted(
            f"10.77.0.{i}" for i in range(1, 4) if node["address"] != f"10.77.0.{i}")
        assert {sa["connection"] for sa in installed} == {
            f"sm-{POLICY}@node-{i}" for i in range(1, 4) if node["address"] != f"10.77.0.{i}"}
    rekey = _step(report, "metrics")["detail"]["rekey"]
    assert rekey["rekeyed"], rekey
    assert _inbound_per_peer(report["states"]["after-rekey"], 3) == [1] * 6
    for label in ("after-initiator-restart", "after-responder-restart"):
        seen = matrix(report, label)
        assert {seen[p] for p in node_pairs(report)} == {("esp", True)}, label


def test_a_peer_that_leaves_and_returns_gets_exactly_one_sa_per_pair_again(
    lab: Lab, tmp_path: Path
) -> None:
    selected = policy_variant(tmp_path / "p.yaml", {"nodeSelector": {"matchExpressions": [
        {"key": "lab.strongmesh.io/group", "operator": "In", "values": ["a", "b"]}]}})
    report = lab(selected, nodes=3, steps=[
        {"do": "label_node", "node": "node-3", "labels": {"lab.strongmesh.io/group": "out"}},
        {"do": "wait_policy", "name": POLICY, "message_contains": _mesh(2), "timeout": 60},
        {"do": "wait_one_sa_per_peer", "nodes": ["node-1", "node-2"], "timeout": 60},
        {"do": "snapshot", "label": "left"},
        {"do": "label_node", "node": "node-3", "labels": {"lab.strongmesh.io/group": "b"}},
        {"do": "wait_policy", "name": POLICY, "message_contains": _mesh(3), "timeout": 60},
        {"do": "wait_one_sa_per_peer", "timeout": 60},
        {"do": "snapshot", "label": "returned"},
        {"do": "probe", "label": "returned", "timeout": 20},
    ])
    left = report["states"]["left"]
    assert [s for s in left["node-1"] if "10.77.0.3" in (s["src"], s["dst"])] == []
    assert _inbound_per_peer(report["states"]["returned"], 3) == [1] * 6
    seen = matrix(report, "returned")
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
