"""Tunnel mode's cluster inputs through the real kube-apiserver: the operator publishes each
peer's pod CIDRs (``Node.spec.podCIDRs``) in the IPsecPeerSlices agents read, and the policy
shows the smallest packet budget its nodes report."""

from __future__ import annotations

from typing import Any

import pytest

from controller.operator.run import OperatorThread
from tests.api.operator_support import Cluster, G, V, wait_for

pytestmark = pytest.mark.api
SUBNETS = ["10.77.0.0/24", "10.244.0.0/16"]


def node(cluster: Cluster, name: str, address: str, pod_cidr: str | None) -> None:
    body: dict[str, Any] = {"metadata": {"name": name},
                            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}
    if pod_cidr:
        body["spec"] = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    cluster.core.create_node(body)


def enforce(cluster: Cluster, name: str, address: str, max_inner: int) -> None:
    """Write the node's IPsecNode as its agent does once it enforces the policy."""
    writer = cluster.agent(name)
    writer.create_cluster_custom_object(G, V, "ipsecnodes", {
        "apiVersion": f"{G}/{V}", "kind": "IPsecNode", "metadata": {"name": name},
        "spec": {"addresses": [address], "identity": f"CN={name}"}})
    entry = {"name": "mesh", "generation": 1, "enforcing": True, "address": address,
             "interfaceMTU": 1500, "espOverhead": 1500 - max_inner, "maxInnerPacket": max_inner}
    writer.patch_cluster_custom_object_status(G, V, "ipsecnodes", name,
                                              {"status": {"policies": [entry]}})


def published_pods(cluster: Cluster) -> dict[str, list[str]]:
    slices = cluster.custom.list_cluster_custom_object(G, V, "ipsecpeerslices")["items"]
    return {p["node"]: p.get("podCIDRs", []) for s in slices for p in s["spec"]["peers"]}


def test_peers_carry_their_pod_cidrs_and_a_late_allocation_reaches_the_slices(
    cluster: Cluster, operator: OperatorThread
) -> None:
    node(cluster, "node-1", "10.77.0.1", "10.244.1.0/24")
    node(cluster, "node-2", "10.77.0.2", None)  # its pod CIDR not allocated yet
    cluster.secret()
    cluster.policy(mode="Tunnel", ipsecSubnets=SUBNETS)
    enforce(cluster, "node-1", "10.77.0.1", 1446)
    enforce(cluster, "node-2", "10.77.0.2", 1438)
    wait_for(lambda: published_pods(cluster) == {"node-1": ["10.244.1.0/24"], "node-2": []},
             what="both peers published")
    # the node IPAM controller sets podCIDRs once (they are immutable afterwards)
    cluster.core.patch_node("node-2", {"spec": {"podCIDR": "10.244.2.0/24",
                                                "podCIDRs": ["10.244.2.0/24"]}})
    wait_for(lambda: published_pods(cluster).get("node-2") == ["10.244.2.0/24"],
             what="node-2's pod CIDR published")

    summary = wait_for(lambda: cluster.get_policy().get("status", {}).get("summary", {})
                       .get("maxInnerPacket") and cluster.get_policy()["status"]["summary"],
                       what="the policy's packet budget")
    assert summary["maxInnerPacket"] == 1438  # the smallest any node reports
    rows = cluster.get_policy()["status"]["nodes"]
    assert {r["name"]: r["maxInnerPacket"] for r in rows} == {"node-1": 1446, "node-2": 1438}
