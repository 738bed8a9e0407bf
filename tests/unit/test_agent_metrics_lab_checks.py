"""How the lab judges its metrics and gentle-shutdown records (``hack.labkit.lab.ops_report``
and the parsers of ``hack.labkit.lab.steps_ops``)."""

from __future__ import annotations

from typing import Any

import pytest

from hack.labkit.lab.ops_report import (
    metric_sas,
    metric_value,
    shutdown_findings,
    swanctl_child_sas,
    swanctl_ike_sas,
    swanctl_states,
)
from hack.labkit.lab.pcap import Packet
from hack.labkit.lab.steps_ops import pass_count, rekey_counts

# Real swanctl 5.9.8 output (lab, two IKE_SAs for one pair: both nodes initiated), plus an
# IKE_SA that is still connecting and a CHILD_SA being rekeyed.
SWANCTL = """\
sm-node-mesh: #2, ESTABLISHED, IKEv2, a02a44a858a35326_i b95c899683b87791_r*
  local  'C=US, O=strongmesh, CN=strongmesh-node' @ 10.77.0.1[500]
  remote 'C=US, O=strongmesh, CN=strongmesh-node' @ 10.77.0.2[500]
  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048
  established 1s ago, rekeying in 13820s
  sm-node-mesh: #3, reqid 1397556335, INSTALLED, TRANSPORT, ESP:AES_GCM_16-128
    installed 1s ago, rekeying in 3389s, expires in 3959s
    in  c59d765d,     43 bytes,     1 packets
    out c43e48e7,     43 bytes,     1 packets
    local  10.77.0.1/32
    remote 10.77.0.2/32
  sm-node-mesh: #4, reqid 1397556335, REKEYED, TRANSPORT, ESP:AES_GCM_16-128
    local  10.77.0.1/32
    remote 10.77.0.2/32
sm-node-mesh: #1, ESTABLISHED, IKEv2, 02f5ef7972a584e8_i* adae7d116e3a8e77_r
  local  'C=US, O=strongmesh, CN=strongmesh-node' @ 10.77.0.1[500]
  remote 'C=US, O=strongmesh, CN=strongmesh-node' @ 10.77.0.2[500]
  sm-node-mesh: #2, reqid 1397556335, INSTALLED, TRANSPORT, ESP:AES_GCM_16-128
    in  c7f8e72f,     45 bytes,     1 packets
sm-node-mesh: #5, CONNECTING, IKEv2, 0b0b0b0b0b0b0b0b_i* 0000000000000000_r
  local  '%any' @ 10.77.0.1[500]
"""

METRICS = """\
# HELP strongmesh_sas CHILD_SAs held by charon, by policy and state.
# TYPE strongmesh_sas gauge
strongmesh_sas{policy="node-mesh",state="INSTALLED"} 2.0
strongmesh_sas{policy="node-mesh",state="REKEYED"} 1.0
strongmesh_sas{policy="other",state="INSTALLED"} 1.0
strongmesh_sas{policy="other",state=""} 1.0
# HELP strongmesh_rekeys_total Rekeyings seen, by SA kind.
# TYPE strongmesh_rekeys_total counter
strongmesh_rekeys_total{kind="ike"} 2.0
strongmesh_rekeys_total{kind="child"} 3.0
# HELP strongmesh_reconcile_duration_seconds Duration of reconcile passes.
# TYPE strongmesh_reconcile_duration_seconds histogram
strongmesh_reconcile_duration_seconds_bucket{le="+Inf"} 7.0
strongmesh_reconcile_duration_seconds_count 7.0
strongmesh_reconcile_duration_seconds_sum 0.5
"""


def test_swanctl_child_sas_belong_to_their_ike_sa_and_keep_their_state() -> None:
    children = swanctl_child_sas(SWANCTL)
    assert [(c["ike_unique_id"], c["unique_id"], c["state"]) for c in children] == [
        (2, 3, "INSTALLED"), (2, 4, "REKEYED"), (1, 2, "INSTALLED")
    ]
    assert {c["reqid"] for c in children} == {1397556335}
    assert [(i["unique_id"], i["state"]) for i in swanctl_ike_sas(SWANCTL)] == [
        (2, "ESTABLISHED"), (1, "ESTABLISHED"), (5, "CONNECTING")
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SWANCTL, {"INSTALLED": 2, "REKEYED": 1}),
        ("", {}),
        ("sm-a: #1, CONNECTING, IKEv2, 01_i* 00_r\n", {}),
    ],
    ids=["pairs", "nothing", "ike-only"],
)
def test_swanctl_states_count_child_sas_only(text: str, expected: dict[str, int]) -> None:
    assert swanctl_states(text) == expected


def test_metric_sas_sum_policies_and_leave_out_ike_sas_without_children() -> None:
    assert metric_sas(METRICS) == {"INSTALLED": 3, "REKEYED": 1}


def test_metric_value_picks_the_sample_by_name_and_labels() -> None:
    assert metric_value(METRICS, "strongmesh_rekeys_total", {"kind": "child"}) == 3
    assert metric_value(METRICS, "strongmesh_reconcile_duration_seconds_count") == 7
    assert metric_value(METRICS, "strongmesh_rekeys_total", {"kind": "none"}) is None


def test_the_lab_side_parsers_read_the_same_exposition_text() -> None:
    assert pass_count(METRICS) == 7
    assert pass_count("") is None
    assert rekey_counts(METRICS) == {"ike": 2, "child": 3}


def _packet(at: float, esp: bool, payload: bytes = b"", src: str = "10.77.0.1",
            dst: str = "10.77.0.2") -> Packet:
    return Packet(at, src, dst, esp, payload)


def _detail(**times: float | None) -> dict[str, Any]:
    base: dict[str, float | None] = {
        "workload_started": 99.9, "drain_started": 100.0, "workload_exited": 101.0,
        "drain_returned": 101.1, "charon_stop_sent": 101.1, "charon_exited": 101.2,
        "after_sent": 101.3,
    }
    base.update(times)
    return {
        "label": "t", "src_address": "10.77.0.1", "dst_address": "10.77.0.2",
        "times": base,
        "sent": [[0, 100.2, 1], [1, 100.4, 1], [2, 100.6, 1], [3, 101.5, 0]],
        "received": {"SMWORK:t:0": {"at": 100.21}, "SMWORK:t:1": {"at": 100.41}},
        "after": [{"token": "SMAFTER:t:node-2:0", "dst": "node-2", "at": 101.3, "ok": True}],
        "owned_policies_before": 6, "owned_policies_after_stop": 6,
    }


def test_shutdown_findings_judge_each_datagram_by_the_wire_and_the_receiver() -> None:
    packets = [
        _packet(100.21, esp=True),  # seq 0
        _packet(100.41, esp=True),  # seq 1
        _packet(100.61, esp=False, payload=b"SMWORK:t:2"),  # seq 2 leaked, not delivered
        _packet(101.31, esp=False, payload=b"SMAFTER:t:node-2:0"),  # leaked after charon left
        _packet(100.61, esp=True, src="10.77.0.2", dst="10.77.0.1"),  # wrong direction
    ]
    found = shutdown_findings(_detail(), packets)
    assert found["while_charon_up"] == {"sent": 3, "delivered": 2, "esp": 2, "cleartext": 1}
    assert found["after_charon_left"] == {"sent": 2, "delivered": 0, "cleartext": 1}
    assert found["timeline"]["charon_exited"] == pytest.approx(1.2)
    assert found["charon_exit_after_workload_exit"] == pytest.approx(0.2)
    assert not found["workload_outlived_charon"]
    assert found["owned_policies"] == [6, 6]


def test_a_workload_that_exits_after_charon_outlived_it() -> None:
    found = shutdown_findings(_detail(workload_exited=103.0), [])
    assert found["workload_outlived_charon"]
    assert found["charon_exit_after_workload_exit"] == pytest.approx(-1.8)
    assert found["while_charon_up"]["esp"] == 0
