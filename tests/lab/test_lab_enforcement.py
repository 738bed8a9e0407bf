"""Enforcement modes in the kernel lab: what the switch carries between nodes and bystander."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.lab.conftest import (
    EXAMPLE,
    bystander_pairs,
    cleartext_from_nodes,
    matrix,
    node_pairs,
    policy_variant,
)

Lab = Callable[..., dict[str, Any]]


def test_required_with_bystander_bypass_encrypts_nodes_and_leaves_bystander_clear(
    lab: Lab,
) -> None:
    report = lab(EXAMPLE, nodes=3)
    seen = matrix(report)
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert {seen[p] for p in bystander_pairs(report)} == {("cleartext", True)}
    node_to_node = [c for c in cleartext_from_nodes(report) if c[2] != "bystander"]
    assert node_to_node == [], "cleartext between nodes in Required (also during warm-up)"
    assert report["seconds_to_ready"] is not None
    assert report["seconds_to_ready"] > 0
    status = report["policy_status"]  # as the lab's API serves it
    assert status["summary"]["ready"] == "3/3"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_required_without_bypass_blocks_bystander_and_never_sends_cleartext(
    lab: Lab, tmp_path: Path
) -> None:
    report = lab(policy_variant(tmp_path / "p.yaml", {"noIpsecSubnets": None}))
    seen = matrix(report)
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    for node, _ in bystander_pairs(report)[: len(report["nodes"])]:
        # the node's out policy requires an SA the bystander never offers: nothing leaves
        assert seen[(node, "bystander")] == ("none", False)
        # the bystander's cleartext reaches the wire, the node's in policy drops it
        assert seen[("bystander", node)] == ("cleartext", False)
    assert cleartext_from_nodes(report) == []


def test_optional_without_bypass_talks_clear_to_bystander_and_esp_between_nodes(
    lab: Lab, tmp_path: Path
) -> None:
    policy = policy_variant(
        tmp_path / "p.yaml", {"noIpsecSubnets": None, "enforcement": "Optional"}
    )
    report = lab(policy)
    assert report["sas_complete"], "nodes did not negotiate SAs with each other"
    seen = matrix(report)
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert {seen[p] for p in bystander_pairs(report)} == {("cleartext", True)}


def test_custom_proposals_are_the_algorithms_of_the_sas(lab: Lab, tmp_path: Path) -> None:
    policy = policy_variant(
        tmp_path / "p.yaml",
        {
            "ike": {"version": 2, "proposals": ["aes256-sha384-ecp384!"]},
            "esp": {"proposals": ["aes256gcm16!"]},
        },
    )
    report = lab(policy)
    assert {matrix(report)[p] for p in node_pairs(report)} == {("esp", True)}
    sas = [sa for node in report["nodes"] for sa in node["sas"]]
    assert sas, "no SAs reported"
    assert {sa["encryption"] for sa in sas} == {"AES_GCM_16-256"}
    assert {sa.get("integrity", "") for sa in sas} == {""}  # AEAD: no separate integrity
    assert {sa["ikeAlgorithms"] for sa in sas} == {
        "AES_CBC-256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384"
    }
