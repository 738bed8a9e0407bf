"""The lab report: probes classified from the switch capture, summary and matrix."""

from __future__ import annotations

import ipaddress
import os
import struct
from typing import Any

import pytest

from hack.labkit.lab.pcap import Packet, read_pcap
from hack.labkit.lab.report import classify, format_matrix, standalone_policy_status

TOKEN = "SMPROBE:main:node-1:node-2:abcd"


def frame(src: str, dst: str, proto: int, l4: bytes, flags: int = 0) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, flags, 64, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def pcap(*frames: tuple[float, bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262, 1)
    for stamp, data in frames:
        sec, usec = int(stamp), round((stamp % 1) * 1e6)
        out += struct.pack("<IIII", sec, usec, len(data), len(data)) + data
    return out


def test_pcap_reader_decodes_esp_nat_t_and_udp_payloads() -> None:
    data = pcap(
        (100.5, frame("10.77.0.1", "10.77.0.2", 50, b"\0" * 16)),
        (100.6, frame("10.77.0.1", "10.77.0.2", 17, udp(4500, 4500, b"\x01\x02\x03\x04xx"))),
        (100.7, frame("10.77.0.1", "10.77.0.2", 17, udp(4500, 4500, b"\0\0\0\0ike"))),
        (100.8, frame("10.77.0.1", "10.77.0.200", 17, udp(5000, 7777, TOKEN.encode()))),
    )
    packets = list(read_pcap(data))
    assert [(p.esp, p.src, p.dst) for p in packets] == [
        (True, "10.77.0.1", "10.77.0.2"),
        (True, "10.77.0.1", "10.77.0.2"),
        (False, "10.77.0.1", "10.77.0.2"),
        (False, "10.77.0.1", "10.77.0.200"),
    ]
    assert packets[3].payload == TOKEN.encode()
    assert packets[0].time == pytest.approx(100.5)


def test_pcap_reader_gives_each_esp_packet_its_spi_and_sequence_number() -> None:
    header = struct.pack("!II", 0xC1FE66F3, 1) + b"\0" * 8
    data = pcap(
        (1.0, frame("10.77.0.3", "10.77.0.1", 50, header)),
        (1.1, frame("10.77.0.3", "10.77.0.1", 17, udp(4500, 4500, header))),
        (1.2, frame("10.77.0.3", "10.77.0.1", 17, udp(5000, 7777, TOKEN.encode()))),
    )
    assert [(p.spi, p.esp_seq) for p in read_pcap(data)] == [
        (0xC1FE66F3, 1), (0xC1FE66F3, 1), (0, 0)]


def test_pcap_reader_gives_ip_lengths_and_tells_fragments() -> None:
    data = pcap(
        (1.0, frame("10.77.0.1", "10.77.0.2", 50, b"\0" * 1480, flags=0x4000)),  # DF
        (1.1, frame("10.77.0.1", "10.77.0.2", 50, b"\0" * 1480, flags=0x2000)),  # MF
        (1.2, frame("10.77.0.1", "10.77.0.2", 50, b"\0" * 8, flags=185)),  # offset 1480
    )
    assert [(p.length, p.fragment) for p in read_pcap(data)] == [
        (1500, False), (1500, True), (28, True)]


def test_pcap_reader_rejects_other_files() -> None:
    with pytest.raises(ValueError, match="not a pcap"):
        list(read_pcap(b"x" * 40))


PROBE: dict[str, Any] = {
    "token": TOKEN, "src_address": "10.77.0.1", "dst_address": "10.77.0.2",
    "first_sent": 10.0, "last_sent": 12.0, "delivered_at": 12.01, "delivered": True,
}


@pytest.mark.parametrize(
    ("packets", "seen"),
    [
        ([Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")], "esp"),
        # a cleartext copy anywhere makes it cleartext, even with ESP beside it
        ([Packet(11.0, "10.77.0.1", "10.77.0.2", True, b""),
          Packet(10.0, "10.77.0.1", "10.77.0.2", False, b"x" + TOKEN.encode())], "cleartext"),
        # ESP in the other direction, or outside the probe's window, is not this probe's
        ([Packet(11.0, "10.77.0.2", "10.77.0.1", True, b"")], "none"),
        ([Packet(20.0, "10.77.0.1", "10.77.0.2", True, b"")], "none"),
        ([], "none"),
    ],
)
def test_probe_is_classified_from_the_wire(packets: list[Packet], seen: str) -> None:
    assert classify(PROBE, packets) == seen


def test_unsent_probe_is_none() -> None:
    assert classify(dict(PROBE, first_sent=None, last_sent=None), []) == "none"


def test_matrix_shows_what_the_wire_saw_and_delivery() -> None:
    rows = [
        {"src": "node-1", "dst": "node-2", "seen": "esp", "delivered": True},
        {"src": "node-2", "dst": "node-1", "seen": "cleartext", "delivered": False},
    ]
    text = format_matrix(rows)
    lines = text.splitlines()
    assert "esp ok" in lines[2]
    assert "cleartext LOST" in lines[3]


def test_standalone_policy_status_counts_ready_nodes_and_sas() -> None:
    nodes = [
        {"name": "node-1", "errors": [], "policies": [{"name": "m", "generation": 2}],
         "sas": [{"policy": "m", "peer": "10.77.0.2"}]},
        {"name": "node-2", "errors": ["bad"], "policies": [
            {"name": "m", "generation": 1, "enforcing": False}], "sas": []},
    ]
    status = standalone_policy_status(nodes, {"m": 2})["m"]
    assert status["summary"] == {"selectedNodes": 2, "readyNodes": 1, "ready": "1/2",
                                 "establishedSAs": 1}
    assert [n["enforcing"] for n in status["nodes"]] == [True, False]


def test_verdict_tallies_node_pairs_and_bystander_pairs_apart() -> None:
    from hack.labkit.lab.report import verdict

    report = {
        "nodes": [{"name": "node-1"}, {"name": "node-2"}],
        "traffic": [
            {"src": "node-1", "dst": "node-2", "seen": "esp", "delivered": True},
            {"src": "node-2", "dst": "node-1", "seen": "esp", "delivered": True},
            {"src": "node-1", "dst": "bystander", "seen": "none", "delivered": False},
            {"src": "bystander", "dst": "node-1", "seen": "cleartext", "delivered": False},
        ],
    }
    assert verdict(report) == (
        "Node to node (2 directions): 2 esp. With the bystander (2 directions): "
        "1 cleartext (not delivered), 1 none (not delivered)."
    )


def test_expected_generations_default_to_one(tmp_path: Any) -> None:
    from hack.labkit.lab.host import policy_generations

    path = tmp_path / "p.yaml"
    path.write_text(
        "kind: IPsecPolicy\nmetadata: {name: a}\n---\nkind: Secret\nmetadata: {name: s}\n"
        "---\nkind: IPsecPolicy\nmetadata: {name: b, generation: 4}\n"
    )
    assert policy_generations(path) == {"a": 1, "b": 4}


def test_timings_measure_from_policy_applied_to_the_last_esp_delivery() -> None:
    from hack.labkit.lab.host import timings

    probe = dict(PROBE, src="node-1", dst="node-2", first_sent=10.0, delivered_at=12.5)
    back = dict(PROBE, src="node-2", dst="node-1", src_address="10.77.0.2",
                dst_address="10.77.0.1", first_sent=10.0, delivered_at=13.0)
    packets = [Packet(12.4, "10.77.0.1", "10.77.0.2", True, b""),
               Packet(12.9, "10.77.0.2", "10.77.0.1", True, b"")]
    results = {"started": 0.0, "timeline": {"policy applied": 5.0}}
    got = timings(results, {"probes": [probe, back]}, ["node-1", "node-2"], packets)
    assert got["policy_applied_to_all_pairs_esp"] == 8.0
    assert got["first_packet_to_sa_seconds"] == {"min": 2.5, "median": 3.0, "max": 3.0}


# ------------------------------------------------------------------------------------- pods
HOSTS: list[dict[str, Any]] = [
    {"name": "node-1", "address": "10.77.0.1", "role": "node", "node": "node-1",
     "carrier": "10.77.0.1", "podCIDR": None},
    {"name": "node-2", "address": "10.77.0.2", "role": "node", "node": "node-2",
     "carrier": "10.77.0.2", "podCIDR": None},
    {"name": "node-1-pod", "address": "10.244.1.10", "role": "pod", "node": "node-1",
     "carrier": "10.77.0.1", "podCIDR": "10.244.1.0/24"},
    {"name": "node-2-pod", "address": "10.244.2.10", "role": "pod", "node": "node-2",
     "carrier": "10.77.0.2", "podCIDR": "10.244.2.0/24"},
    {"name": "bystander", "address": "10.77.0.200", "role": "bystander", "node": None,
     "carrier": "10.77.0.200", "podCIDR": None},
]
ADDRESS = {h["name"]: h["address"] for h in HOSTS}
CARRIERS = {h["name"]: h["carrier"] for h in HOSTS}


def pod_probe(src: str, dst: str, **changes: Any) -> dict[str, Any]:
    return dict(PROBE, src=src, dst=dst, src_address=ADDRESS[src], dst_address=ADDRESS[dst],
                token=f"SMPROBE:main:{src}:{dst}:abcd") | changes


def test_carriers_come_from_the_recorded_hosts() -> None:
    from hack.labkit.lab.report import carrier_addresses

    assert carrier_addresses(HOSTS) == CARRIERS
    assert carrier_addresses([{"name": "x", "address": "10.0.0.9"}]) == {"x": "10.0.0.9"}


@pytest.mark.parametrize(
    ("src", "dst", "packets", "seen"),
    [
        # Transport mode: a forwarded pod packet crosses with the pods' addresses, in the clear
        ("node-1-pod", "node-2-pod",
         [Packet(11.0, "10.244.1.10", "10.244.2.10", False,
                 b"SMPROBE:main:node-1-pod:node-2-pod:abcd")], "cleartext"),
        # Tunnel mode: ESP between the two carrying nodes, the pods invisible
        ("node-1-pod", "node-2-pod", [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")],
         "esp"),
        ("node-1-pod", "node-2", [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")], "esp"),
        ("bystander", "node-2-pod", [Packet(11.0, "10.77.0.200", "10.77.0.2", True, b"")],
         "esp"),
        # ESP between the wrong nodes, the other way, or outside the window is not this probe's
        ("node-1-pod", "node-2-pod", [Packet(11.0, "10.77.0.2", "10.77.0.1", True, b"")],
         "none"),
        ("node-1-pod", "node-2-pod", [Packet(11.0, "10.77.0.1", "10.77.0.200", True, b"")],
         "none"),
        ("node-1-pod", "node-2-pod", [Packet(20.0, "10.77.0.1", "10.77.0.2", True, b"")],
         "none"),
        # ESP with the pods' own addresses outside (no node wraps a pod packet that way)
        ("node-1-pod", "node-2-pod", [Packet(11.0, "10.244.1.10", "10.244.2.10", True, b"")],
         "none"),
        # a token in the clear anywhere wins over any ESP between the nodes
        ("node-1-pod", "node-2-pod",
         [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b""),
          Packet(11.1, "10.77.0.1", "10.77.0.2", False,
                 b"SMPROBE:main:node-1-pod:node-2-pod:abcd")], "cleartext"),
        # a pod and its own node: nothing crosses the switch, whatever the node sends
        ("node-1-pod", "node-1", [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")], "none"),
        ("node-1", "node-1-pod", [Packet(11.0, "10.77.0.1", "10.77.0.1", True, b"")], "none"),
        # node pairs as before
        ("node-1", "node-2", [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")], "esp"),
    ],
)
def test_pod_probes_are_judged_by_the_esp_of_their_carrying_nodes(
    src: str, dst: str, packets: list[Packet], seen: str
) -> None:
    assert classify(pod_probe(src, dst), packets, CARRIERS) == seen


def test_a_probe_of_a_host_without_a_carrier_uses_its_own_addresses() -> None:
    packets = [Packet(11.0, "10.244.1.10", "10.244.2.10", True, b"")]
    assert classify(pod_probe("node-1-pod", "node-2-pod"), packets) == "esp"
    assert classify(pod_probe("node-1-pod", "node-2-pod"), packets, {"x": "y"}) == "esp"


def test_traffic_rows_pass_the_carriers_on() -> None:
    from hack.labkit.lab.report import traffic_rows

    packets = [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")]
    rows = traffic_rows([pod_probe("node-1-pod", "node-2-pod")], packets, CARRIERS)
    assert [(r["src"], r["dst"], r["seen"], r["delivered"]) for r in rows] == [
        ("node-1-pod", "node-2-pod", "esp", True)]
    assert traffic_rows([pod_probe("node-1-pod", "node-2-pod")], packets)[0]["seen"] == "none"


@pytest.mark.parametrize(
    ("src", "dst", "kind"),
    [
        ("node-1", "node-2", "node-node"),
        ("node-1", "bystander", "node-bystander"),
        ("bystander", "node-2", "node-bystander"),
        ("node-1-pod", "node-2-pod", "pod-pod"),
        ("node-1-pod", "node-1", "pod-own-node"),
        ("node-2", "node-2-pod", "pod-own-node"),
        ("node-1-pod", "node-2", "pod-other-node"),
        ("node-2", "node-1-pod", "pod-other-node"),
        ("node-1-pod", "bystander", "pod-bystander"),
        ("bystander", "node-2-pod", "pod-bystander"),
    ],
)
def test_pairs_fall_into_classes(src: str, dst: str, kind: str) -> None:
    from hack.labkit.lab.report import pair_class

    assert pair_class(src, dst, {h["name"]: h for h in HOSTS}) == kind


def pod_report() -> dict[str, Any]:
    """Every ordered pair of HOSTS: node pairs esp, pod and own node none, the rest clear."""
    from hack.labkit.lab.report import pair_class, pod_rows

    names = [h["name"] for h in HOSTS]
    seen = {"node-node": "esp", "pod-own-node": "none"}
    by_name = {h["name"]: h for h in HOSTS}
    return {
        "ready": True, "mode": "cluster",
        "nodes": [{"name": n, "address": ADDRESS[n], "sas": []} for n in ("node-1", "node-2")],
        "hosts": HOSTS,
        "pods": pod_rows(HOSTS),
        "traffic": [
            {"src": a, "dst": b, "seen": seen.get(pair_class(a, b, by_name), "cleartext"),
             "delivered": True}
            for a in names for b in names if a != b
        ],
    }


def test_pod_rows_name_each_pod_its_node_and_pod_cidr() -> None:
    assert pod_report()["pods"] == [
        {"name": "node-1-pod", "address": "10.244.1.10", "node": "node-1",
         "podCIDR": "10.244.1.0/24"},
        {"name": "node-2-pod", "address": "10.244.2.10", "node": "node-2",
         "podCIDR": "10.244.2.0/24"},
    ]


def test_verdict_tallies_every_pair_class_with_pods() -> None:
    from hack.labkit.lab.report import verdict

    assert verdict(pod_report()).splitlines() == [
        "Node to node (2 directions): 2 esp.",
        "With the bystander (4 directions): 4 cleartext.",
        "Pod to pod across nodes (2 directions): 2 cleartext.",
        "Pod and its own node (4 directions): 4 none.",
        "Pod and another node (4 directions): 4 cleartext.",
        "Pod and the bystander (4 directions): 4 cleartext.",
    ]


def test_summary_lists_the_pods_and_shows_them_in_the_matrix() -> None:
    from hack.labkit.lab.report import format_summary

    text = format_summary(pod_report())
    assert "  node-1-pod (10.244.1.10) behind node-1, pod CIDR 10.244.1.0/24" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Traffic"))
    columns = lines[header + 1].split()
    assert columns == ["node-1", "node-2", "node-1-pod", "node-2-pod", "bystander"]
    row = next(line for line in lines if line.startswith("node-1-pod "))
    assert row.split()[1:] == ["none", "ok", "cleartext", "ok", "-", "cleartext", "ok",
                               "cleartext", "ok"]
    assert "a pod and its own node talk inside the node" in text


def test_summary_without_pods_is_unchanged_in_shape() -> None:
    from hack.labkit.lab.report import format_summary

    report = pod_report()
    keep = {"node-1", "node-2", "bystander"}
    report["traffic"] = [r for r in report["traffic"] if {r["src"], r["dst"]} <= keep]
    report.pop("hosts")
    report.pop("pods")
    text = format_summary(report)
    assert "Pod" not in text
    assert "pod" not in text
    assert text.splitlines()[-1] == (
        "Node to node (2 directions): 2 esp. With the bystander (4 directions): 4 cleartext.")


def test_report_classifies_pod_probes_through_the_recorded_carriers() -> None:
    from hack.labkit.lab.host import build_report

    probes = [pod_probe("node-1-pod", "node-2-pod"), pod_probe("node-1", "node-2")]
    results = {
        "ready": True, "started": 0.0, "hosts": HOSTS,
        "rounds": [{"label": "main", "seconds": 1.0, "probes": probes}],
        "pods": {"routes": {"node-1": ["10.244.2.0/24 via 10.77.0.2 dev eth0"]}},
    }
    packets = [Packet(11.0, "10.77.0.1", "10.77.0.2", True, b"")]
    report = build_report(results, packets, 2, {})
    assert [(r["src"], r["dst"], r["seen"]) for r in report["traffic"]] == [
        ("node-1-pod", "node-2-pod", "esp"), ("node-1", "node-2", "esp")]
    assert report["rounds"]["main"]["traffic"] == report["traffic"]
    assert [n["name"] for n in report["nodes"]] == ["node-1", "node-2"]
    assert [p["name"] for p in report["pods"]] == ["node-1-pod", "node-2-pod"]
    assert report["pod_network"] == results["pods"]
    without = build_report({"ready": True, "started": 0.0, "rounds": []}, [], 2, {})
    assert (without["hosts"], without["pods"], without["pod_network"]) == ([], [], {})


def _datagram(seq: int, src: str, dst: str, sent: float, delivered_at: float | None,
              step: dict[str, Any] | None = None) -> dict[str, Any]:
    i, j = src.rsplit("-", 1)[1], dst.rsplit("-", 1)[1]
    return {"seq": seq, "src": src, "dst": dst, "src_address": f"10.77.0.{i}",
            "dst_address": f"10.77.0.{j}", "token": f"SMSTREAM:s:{seq}:{src}:{dst}:ab",
            "sent": sent, "step": step, "send_error": None,
            "delivered": delivered_at is not None, "delivered_at": delivered_at}


def test_stream_datagrams_are_judged_once_each_and_totalled_per_step() -> None:
    from hack.labkit.lab.report import stream_report

    apply = {"index": 1, "do": "apply"}
    wait = {"index": 2, "do": "wait_authorities"}
    datagrams = [
        _datagram(0, "node-1", "node-2", 100.0, 100.01, apply),   # ESP right after: esp
        _datagram(1, "node-1", "node-2", 100.25, None, wait),     # lost, ESP went: esp
        _datagram(2, "node-1", "node-2", 100.5, 100.51, wait),    # in the clear
        _datagram(0, "node-2", "node-1", 100.0, None, apply),     # lost, nothing on the wire
    ]
    packets = [
        Packet(100.005, "10.77.0.1", "10.77.0.2", True, b"", spi=0xA, esp_seq=7),
        Packet(100.255, "10.77.0.1", "10.77.0.2", True, b"", spi=0xB, esp_seq=1),
        Packet(100.505, "10.77.0.1", "10.77.0.2", False,
               b"SMSTREAM:s:2:node-1:node-2:ab"),
        Packet(98.0, "10.77.0.2", "10.77.0.1", True, b""),  # long before: not this datagram's
    ]
    steps = [{"do": "start_stream", "at": 0.0, "seconds": 0.01},
             {"do": "apply", "at": 0.5, "seconds": 0.02},
             {"do": "wait_authorities", "at": 0.6, "seconds": 2.0}]
    report = stream_report({"interval": 0.25, "started": 100.0, "stopped": 101.0,
                            "datagrams": datagrams}, packets, {}, 99.5, steps)
    assert [(r["seq"], r["src"], r["seen"], r["delivered"]) for r in report["datagrams"]] == [
        (0, "node-1", "esp", True), (1, "node-1", "esp", False),
        (2, "node-1", "cleartext", True), (0, "node-2", "none", False)]
    # the ESP packet that carried each: a new SA's first (0xb, 1) is where a switch can lose
    assert [(r["spi"], r["esp_seq"]) for r in report["datagrams"]] == [
        ("0000000a", 7), ("0000000b", 1), (None, None), (None, None)]
    assert report["datagrams"][0]["at"] == 0.5
    assert report["datagrams"][0]["seconds"] == 0.01
    assert (report["sent"], report["delivered"]) == (4, 2)
    assert [(r["seq"], r["src"]) for r in report["lost"]] == [(1, "node-1"), (0, "node-2")]
    assert [r["seq"] for r in report["cleartext"]] == [2]
    assert report["seen"] == {"esp": 2, "cleartext": 1, "none": 1}
    assert (report["from"], report["to"]) == (0.5, 1.5)
    assert report["steps"] == [
        {"index": 1, "do": "apply", "sent": 2, "lost": 1, "cleartext": 0, "none": 1,
         "at": 0.5, "seconds": 0.02},
        {"index": 2, "do": "wait_authorities", "sent": 2, "lost": 1, "cleartext": 1, "none": 0,
         "at": 0.6, "seconds": 2.0},
    ]


def test_impostor_wire_counts_what_passed_between_the_claimed_address_and_the_target() -> None:
    from hack.labkit.lab.report import impostor_wire

    step = {"do": "impostor", "at": 10.0, "seconds": 2.0,
            "args": {"address": "10.77.0.2", "target": "node-1"}}
    packets = [
        Packet(1010.5, "10.77.0.1", "10.77.0.2", True, b""),
        Packet(1010.6, "10.77.0.2", "10.77.0.1", False, b"SMSTREAM:x:1:node-2:node-1:ab"),
        Packet(1011.0, "10.77.0.2", "10.77.0.1", False, b"\x00" * 28),  # IKE: other
        Packet(1011.1, "10.77.0.2", "10.77.0.3", False, b"\x00" * 28),  # another pair
        Packet(1013.0, "10.77.0.2", "10.77.0.1", False, b"\x00" * 28),  # after the step
    ]
    assert impostor_wire(step, packets, 1000.0, {"node-1": "10.77.0.1"}) == {
        "address": "10.77.0.2", "target": "10.77.0.1", "window": [10.0, 12.0],
        "esp": 1, "probes": 1, "other": 1}


def test_summary_says_how_each_stream_went() -> None:
    from hack.labkit.lab.report import format_summary

    report: dict[str, Any] = {
        "ready": True, "nodes": [], "traffic": [],
        "streams": {"rotation": {"sent": 60, "delivered": 34, "lost": [{}] * 26,
                                 "seen": {"esp": 56, "cleartext": 0, "none": 4}}},
    }
    assert ("Stream rotation: 60 datagrams, each sent once: 34 delivered, 26 lost, 0 seen in "
            "the clear.") in format_summary(report).splitlines()


def test_summary_says_where_the_cpu_went_on_the_way_to_ready() -> None:
    from hack.labkit.lab.report import format_summary

    report = pod_report() | {"ready": True, "seconds_to_ready": 6.4, "cpu_to_ready": {
        "agents": 3.1, "charons": 1.2, "busy": 6.0, "other": 1.7}}
    lines = format_summary(report).splitlines()
    assert lines[1] == "  CPU on the way (s): agents 3.1, charons 1.2, other 1.7; busy 6.0 of 6.4"
    assert "CPU on the way" not in format_summary(report | {"cpu_to_ready": None})


def test_cpu_between_two_snapshots_leaves_the_rest_to_other() -> None:
    from hack.labkit.lab.processes import cpu_seconds_between

    tick = os.sysconf("SC_CLK_TCK")
    spent = cpu_seconds_between({"agents": 0, "charons": 0, "busy": 0},
                                {"agents": 3 * tick, "charons": tick, "busy": 5 * tick})
    assert spent == {"agents": 3.0, "charons": 1.0, "busy": 5.0, "other": 1.0}
