"""Judges what the lab's ``metrics`` and ``gentle_shutdown`` steps recorded (pure, host side).

``steps_ops`` only records inside user-mode-linux; these functions turn its records and the
switch capture into findings that tests and people can read: SA counts from both sides of the
metrics check, and, for a gentle shutdown, the timeline plus what the wire carried of the
workload's datagrams before and after charon left.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from hack.labkit.lab.pcap import Packet

# ``swanctl --list-sas``: IKE_SAs start in column 0, their CHILD_SAs are indented:
#   sm-node-mesh: #1, ESTABLISHED, IKEv2, 1c1b0bd7ba2bdcd6_i* 98f4d6f1cd0c2a11_r
#     sm-node-mesh: #1, reqid 100, INSTALLED, TRANSPORT, ESP:AES_GCM_16-128
IKE_LINE = re.compile(r"^(\S[^:]*): #(\d+), (\w+), IKEv\d")
CHILD_LINE = re.compile(r"^\s+(\S[^:]*): #(\d+), reqid (\d+), (\w+), (\w+)")

# ESP seen this long after a datagram was sent still carries it (queued behind an acquire).
ESP_GRACE_SECONDS = 0.5


def swanctl_child_sas(text: str) -> list[dict[str, Any]]:
    """The CHILD_SAs of ``swanctl --list-sas`` output, each with its IKE_SA's name and state."""
    children: list[dict[str, Any]] = []
    ike: dict[str, Any] | None = None
    for line in text.splitlines():
        if m := IKE_LINE.match(line):
            ike = {"name": m.group(1), "unique_id": int(m.group(2)), "state": m.group(3)}
        elif (m := CHILD_LINE.match(line)) and ike is not None:
            children.append({
                "ike": ike["name"], "ike_unique_id": ike["unique_id"],
                "ike_state": ike["state"], "name": m.group(1),
                "unique_id": int(m.group(2)), "reqid": int(m.group(3)), "state": m.group(4),
                "mode": m.group(5),
            })
    return children


def swanctl_ike_sas(text: str) -> list[dict[str, Any]]:
    """The IKE_SAs of ``swanctl --list-sas`` output (name, unique id, state)."""
    return [{"name": m.group(1), "unique_id": int(m.group(2)), "state": m.group(3)}
            for line in text.splitlines() if (m := IKE_LINE.match(line))]


def swanctl_states(text: str) -> dict[str, int]:
    """CHILD_SA state -> count, as charon lists them."""
    counts: dict[str, int] = {}
    for child in swanctl_child_sas(text):
        counts[child["state"]] = counts.get(child["state"], 0) + 1
    return counts


def metric_sas(text: str) -> dict[str, int]:
    """CHILD_SA state -> count from the agent's ``strongmesh_sas`` gauge (all policies summed).

    IKE_SAs without a CHILD_SA are exported with an empty state; they are left out here, as
    they are not CHILD_SAs.
    """
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "strongmesh_sas":
            continue
        for sample in family.samples:
            state = sample.labels.get("state", "")
            if state:
                counts[state] = counts.get(state, 0) + int(sample.value)
    return counts


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """One sample of the exposition text (None if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


def _esp_between(packets: Sequence[Packet], src: str, dst: str, start: float, end: float) -> bool:
    return any(p.esp and p.src == src and p.dst == dst and start <= p.time <= end
               for p in packets)


def _cleartext(packets: Sequence[Packet], token: bytes) -> bool:
    return any(token in p.payload for p in packets if not p.esp)


def datagram_rows(
    detail: Mapping[str, Any], packets: Sequence[Packet]
) -> list[dict[str, Any]]:
    """Every workload datagram: when it was sent, relative to charon's stop, and its fate.

    "Up" ends when charon is told to stop (SIGTERM), not when it has exited: in between it
    deletes its SAs (the kernel's too), so a datagram sent then finds none and is dropped, as
    Required wants; those count with the ones after it (no cleartext, nothing delivered)."""
    label, received = detail["label"], detail.get("received", {})
    times = detail["times"]
    charon_stopping = float(times.get("charon_stop_sent") or times["charon_exited"])
    rows = []
    for seq, at, ok in detail.get("sent", []):
        token = f"SMWORK:{label}:{seq}"
        rows.append({
            "seq": seq,
            "at": at,
            "sent_ok": bool(ok),
            "while_charon_up": at < charon_stopping,
            "delivered": token in received,
            "cleartext": _cleartext(packets, token.encode()),
            "esp": _esp_between(packets, detail["src_address"], detail["dst_address"],
                                at - 0.05, at + ESP_GRACE_SECONDS),
        })
    return rows


def shutdown_findings(detail: Mapping[str, Any], packets: Sequence[Packet]) -> dict[str, Any]:
    """The gentle shutdown in numbers (seconds relative to the start of the drain)."""
    times = {k: (float(v) if v is not None else None) for k, v in detail["times"].items()}
    start = times["drain_started"]
    assert start is not None

    def rel(key: str) -> float | None:
        value = times.get(key)
        return None if value is None else round(value - start, 3)

    rows = datagram_rows(detail, packets)
    up = [r for r in rows if r["while_charon_up"]]
    down = [r for r in rows if not r["while_charon_up"]]
    after = list(detail.get("after", []))
    received = detail.get("received", {})
    workload_exited, charon_exited = times["workload_exited"], times["charon_exited"]
    return {
        "timeline": {k: rel(k) for k in times},
        "workload_outlived_charon": (
            workload_exited is not None and charon_exited is not None
            and workload_exited > charon_exited
        ),
        "charon_exit_after_workload_exit": (
            round(charon_exited - workload_exited, 3)
            if workload_exited is not None and charon_exited is not None else None
        ),
        "while_charon_up": {
            "sent": len(up),
            "delivered": sum(r["delivered"] for r in up),
            "esp": sum(r["esp"] for r in up),
            "cleartext": sum(r["cleartext"] for r in up),
        },
        "after_charon_left": {
            "sent": len(down) + len(after),
            "delivered": sum(r["delivered"] for r in down)
            + sum(a["token"] in received for a in after),
            "cleartext": sum(r["cleartext"] for r in down)
            + sum(_cleartext(packets, str(a["token"]).encode()) for a in after),
        },
        "owned_policies": [detail.get("owned_policies_before"),
                           detail.get("owned_policies_after_stop")],
    }
