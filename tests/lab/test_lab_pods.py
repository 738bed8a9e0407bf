"""The lab with pods: a pod host ``node-i-pod`` (10.244.i.10) behind every node, routed through
it without an overlay, in cluster mode: the example policy (Transport mode), then its Tunnel
mode variant, each with the MTU drill (the largest packet that crosses ESP whole).

Transport SAs protect only node-address pairs (selectors 10.77.0.i/32 <-> 10.77.0.0/24), so
everything with a pod address on one end crosses the switch in the clear with the pod's own
address, and is delivered: no noIpsecSubnets entry is needed for it (a packet from
``node-1-pod`` arrives at ``node-2`` from 10.244.1.10, which no protect policy of node-2
selects; forwarded packets meet no policy at all: the product installs no ``fwd`` policies).
In Tunnel mode (the pod network 10.244.0.0/16 listed in ipsecSubnets) the pod-to-pod rows
across nodes flip to ``esp``; the rest stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hack.labkit.lab.pcap import Packet, read_pcap
from tests.lab.conftest import EXAMPLE, bystander_pairs, matrix, node_pairs, policy_variant

Lab = Callable[..., dict[str, Any]]
NODES = ("node-1", "node-2", "node-3")
PODS = tuple(f"{n}-pod" for n in NODES)
POD_PAIRS = [(a, b) for a in PODS for b in PODS if a != b]
INTERFACE_MTU = 1500  # the lab's veths and bridge
SIZES = list(range(1436, 1476))  # around both modes' figures for aes128gcm16 (1446, 1466)


def mtu_step(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"do": "mtu", "label": "mtu", "pairs": [list(p) for p in pairs], "sizes": SIZES}


def esp_during(tmp_path: Path, detail: dict[str, Any]) -> list[Packet]:
    """The ESP packets the switch carried while the MTU drill ran."""
    packets = read_pcap((tmp_path / "lab" / "capture.pcap").read_bytes())
    return [p for p in packets if p.esp and detail["started"] <= p.time <= detail["ended"] + 1]


def assert_full_size_crosses_whole(
    report: dict[str, Any], tmp_path: Path, expected: int
) -> None:
    """The largest packet delivered is exactly the figure the nodes report, one byte more is
    not delivered, and the ESP packets on the wire fill the MTU without ever being fragments."""
    detail = next(s["detail"] for s in report["steps"] if s["do"] == "mtu")
    status = report["policy_status"]
    assert status["summary"]["maxInnerPacket"] == expected
    assert {n["maxInnerPacket"] for n in status["nodes"]} == {expected}
    for row in detail["pairs"]:
        assert row["largest_delivered"] == expected, row
        assert not row["sizes"][str(expected + 1)]["delivered"], row
    esp = esp_during(tmp_path, detail)
    assert esp
    assert not [p for p in esp if p.fragment]
    assert max(p.length for p in esp) == INTERFACE_MTU


def test_pods_are_routed_through_their_nodes_in_the_clear_while_nodes_talk_esp(
    lab: Lab, tmp_path: Path
) -> None:
    report = lab(
        EXAMPLE,
        nodes=3,
        pods=True,
        steps=[*({"do": "get", "kind": "Node", "name": name} for name in NODES),
               mtu_step(("node-1", "node-2"), ("node-2", "node-1"))],
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

    # Transport mode with aes128gcm16: 20 IP + 8 ESP + 8 IV + 16 ICV + 2 trailer, padded to 4
    assert_full_size_crosses_whole(report, tmp_path, 1466)


TUNNEL = {"mode": "Tunnel", "ipsecSubnets": ["10.77.0.0/24", "10.244.0.0/16"]}


def test_tunnel_mode_carries_pod_traffic_between_nodes_in_esp_and_never_in_the_clear(
    lab: Lab, tmp_path: Path
) -> None:
    report = lab(
        policy_variant(tmp_path / "tunnel.yaml", TUNNEL),
        nodes=3,
        pods=True,
        steps=[
            mtu_step(("node-1-pod", "node-2-pod"), ("node-3-pod", "node-1-pod")),
            {"do": "restart_charon", "node": "node-2"},
            # at once: Required must drop pod traffic, never leak it, while charon is empty
            {"do": "probe", "label": "during-restart", "timeout": 45},
        ],
    )
    seen = matrix(report)
    assert {seen[p] for p in POD_PAIRS} == {("esp", True)}
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert {seen[p] for p in bystander_pairs(report)} == {("cleartext", True)}
    own = [(f"{n}-pod", n) for n in NODES] + [(n, f"{n}-pod") for n in NODES]
    assert {seen[p] for p in own} == {("none", True)}
    # a pod and another node's own address: not a pod pair, as in Transport mode
    other = [(p, n) for p in PODS for n in NODES if not p.startswith(n + "-")]
    assert {seen[p] for p in other + [(b, a) for a, b in other]} == {("cleartext", True)}

    # each pair of nodes holds a tunnel-mode CHILD_SA for its pods beside the transport one
    for node in report["nodes"]:
        children = {sa["child"] for sa in node["sas"] if sa["state"] == "INSTALLED"}
        tunnels = {c for c in children if c.endswith("~pods")}
        assert len(tunnels) == 2, (node["name"], children)

    during = matrix(report, "during-restart")
    assert {during[p] for p in POD_PAIRS} == {("esp", True)}
    packets = list(read_pcap((tmp_path / "lab" / "capture.pcap").read_bytes()))
    clear = {(p.src, p.dst) for p in packets if b"SMPROBE:" in p.payload
             and p.src.startswith("10.244.") and p.dst.startswith("10.244.")}
    assert clear == set()  # no pod-to-pod datagram ever crossed the switch in the clear

    # Tunnel mode with aes128gcm16: the outer IP header instead of the kept one, 20 bytes more
    assert_full_size_crosses_whole(report, tmp_path, 1446)
