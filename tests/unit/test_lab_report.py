"""The lab report: probes classified from the switch capture, summary and matrix."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest

from hack.labkit.lab.pcap import Packet, read_pcap
from hack.labkit.lab.report import classify, format_matrix, standalone_policy_status

TOKEN = "SMPROBE:main:node-1:node-2:abcd"


def frame(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
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
