"""The lab with pods: a pod host ``node-i-pod`` (10.244.i.10) behind every node, routed through
it without an overlay, in cluster mode with the example policy (Transport mode).

Transport SAs protect only node-address pairs (selectors 10.77.0.i/32 <-> 10.77.0.0/24), so
everything with a pod address on one end crosses the switch in the clear with the pod's own
address, and is delivered: no noIpsecSubnets entry is needed for it (a packet from
``node-1-pod`` arrives at ``node-2`` from 10.244.1.10, which no protect policy of node-2
selects; forwarded packets meet no policy at all: the product installs no ``fwd`` policies).
When Tunnel mode protects the pod CIDRs, the pod-to-pod rows are the ones expected to flip to
``esp``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hack.labkit.lab.pcap import read_pcap
from tests.lab.conftest import EXAMPLE, bystander_pairs, matrix, node_pairs

Lab = Callable[..., dict[str, Any]]
NODES = ("node-1", "node-2", "node-3")
PODS = tuple(f"{n}-pod" for n in NODES)


def test_pods_are_routed_through_their_nodes_in_the_clear_while_nodes_talk_esp(
    lab: Lab, tmp_path: Path
) -> None:
    report = lab(
        EXAMPLE,
        nodes=3,
        pods=True,
        steps=[{"do": "get", "kind": "Node", "name": name} for name in NODES],
    )
    assert [n["name"] for n in report["nodes"]] == list(NODES)  # the lab nodes only
    assert report["pods"] == [
        {"name": f"node-{i}-pod", "address": f"10.244.{i}.10", "node": f"node-{i}",
         "podCIDR": f"10.244.{i}.0/24"}
        for i in (1, 2, 3)
    ]
    seen = matrix(report)
    hosts = [*NODES, *PODS, "bystander"]
    assert sorted(seen) == sorted((a, b) for a in hosts for b in hosts if a != b)

    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert {seen[p] for p in bystander_pairs(report)} == {("cleartext", True)}
    pod_pairs = [(a, b) for a in PODS for b in PODS if a != b]
    assert {seen[p] for p in pod_pairs} == {("cleartext", True)}
    own = [(f"{n}-pod", n) for n in NODES] + [(n, f"{n}-pod") for n in NODES]
    assert {seen[p] for p in own} == {("none", True)}  # never on the switch
    other = [(p, n) for p in PODS for n in NODES if not p.startswith(n + "-")]
    other += [(b, a) for a, b in other]
    assert {seen[p] for p in other} == {("cleartext", True)}
    with_bystander = [(p, "bystander") for p in PODS] + [("bystander", p) for p in PODS]
    assert {seen[p] for p in with_bystander} == {("cleartext", True)}

    # no overlay, no NAT: a pod's probe crosses the switch with the pods' own addresses, at
    # most once per attempt (node-1 forwards it straight to node-2)
    packets = list(read_pcap((tmp_path / "lab" / "capture.pcap").read_bytes()))
    crossing = [(p.src, p.dst) for p in packets
                if b"SMPROBE:main:node-1-pod:node-2-pod:" in p.payload]
    attempts = next(r["attempts"] for r in report["traffic"]
                    if (r["src"], r["dst"]) == ("node-1-pod", "node-2-pod"))
    assert set(crossing) == {("10.244.1.10", "10.244.2.10")}
    assert len(crossing) <= attempts

    network = report["pod_network"]
    for i, name in enumerate(NODES, start=1):
        sysctls = network["sysctls"][name]
        assert sysctls["net.ipv4.ip_forward"]["now"] == 1
        others = [j for j in (1, 2, 3) if j != i]
        assert {f"10.244.{j}.0/24 via 10.77.0.{j} dev eth0" for j in others} <= {
            r.strip() for r in network["routes"][name]}
        assert network["routes"][f"{name}-pod"][0].strip() == f"default via 10.244.{i}.1 dev eth0"
    for name, sysctls in network["sysctls"].items():
        assert all(v["now"] != 1 for k, v in sysctls.items() if k.endswith("rp_filter")), name

    gets = [s["detail"] for s in report["steps"] if s["do"] == "get"]
    for i, node in enumerate(gets, start=1):
        assert node["spec"]["podCIDR"] == f"10.244.{i}.0/24"
        assert node["spec"]["podCIDRs"] == [f"10.244.{i}.0/24"]
