"""What the nodes' kernels hold: their ESP states, and how many of their xfrm policies are
strongmesh's (recognised as the product recognises them: ``controller.ownership``)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from controller.ownership import is_owned_priority
from hack.labkit.lab.network import Host
from hack.labkit.lab.shell import sh

ESP_STATE = re.compile(r"src (\S+) dst (\S+)\s+proto esp spi (0x[0-9a-f]+) reqid (\d+)")
PRIORITY = re.compile(r"priority (\d+)")


def esp_states(host: Host) -> list[dict[str, Any]]:
    """ESP states of a node as (src, dst, spi, reqid)."""
    text = sh("ip", "-n", host.name, "xfrm", "state")
    return [
        {"src": m.group(1), "dst": m.group(2), "spi": m.group(3), "reqid": int(m.group(4))}
        for m in ESP_STATE.finditer(text)
    ]


def owned_policies(host: Host) -> int:
    """How many xfrm policies in strongmesh's priority bands the node holds."""
    text = sh("ip", "-n", host.name, "xfrm", "policy")
    return sum(is_owned_priority(int(p)) for p in PRIORITY.findall(text))


def sas_complete(nodes: Sequence[Host]) -> bool:
    """Every node holds ESP states in both directions with every other node."""
    complete = True
    for host in nodes:
        pairs = {(s["src"], s["dst"]) for s in esp_states(host)}
        for peer in nodes:
            if peer is host:
                continue
            if (host.address, peer.address) not in pairs or (
                    peer.address, host.address) not in pairs:
                complete = False
    return complete


def wait_sas(nodes: Sequence[Host], timeout: float) -> bool:
    """Wait until ``sas_complete``; False if it was not within ``timeout`` s."""
    start = time.time()
    while time.time() - start < timeout:
        if sas_complete(nodes):
            return True
        time.sleep(0.3)
    return False


def one_sa_per_peer_gaps(members: Sequence[Host]) -> dict[str, Any]:
    """What keeps ``members`` from holding exactly one ESP state in and one out with every
    other member and none with a host outside them: per pair ``(in, out)`` counts that are
    not ``(1, 1)``, per node its states with strays. Empty: nothing."""
    inside = {h.address for h in members}
    gaps: dict[str, Any] = {}
    for host in members:
        pairs = [(s["src"], s["dst"]) for s in esp_states(host)]
        for peer in members:
            if peer is not host:
                got = (pairs.count((peer.address, host.address)),
                       pairs.count((host.address, peer.address)))
                if got != (1, 1):
                    gaps[f"{host.name}<->{peer.name}"] = got
        strays = [p for p in pairs if not {p[0], p[1]} <= inside]
        if strays:
            gaps[f"{host.name} strays"] = strays
    return gaps
