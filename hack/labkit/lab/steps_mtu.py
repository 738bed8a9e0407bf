"""The lab's MTU drill: the largest packet that crosses ESP whole.

Standard library only: it runs in the lab's PID 1 inside user-mode-linux.

``{"do": "mtu", "label": L, "pairs": [[SRC, DST], ...], "sizes": [N, ...], "timeout"?: T}``:
for every pair, a UDP datagram of every size (the whole IPv4 packet, N bytes) is sent with the
Don't-Fragment bit and the path MTU ignored (``IP_PMTUDISC_PROBE``: exactly the size asked, no
local fragmentation, no cached PMTU), again every 0.3 s until it arrives or T (default 10) s
pass. Recorded per pair and size: delivered, attempts, send errors; per pair the largest size
delivered; and the step's start and end times, so that the test can look at what the switch
carried meanwhile (``hack.labkit.lab.pcap``: ESP lengths, fragments). A packet too large for
ESP plus the interface MTU is refused by the sender (EMSGSIZE) or dropped by the node that
would have to fragment it (ICMP "fragmentation needed"): either way it is not delivered.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hack.labkit.lab.probes import PROBE_PORT, Sockets

if TYPE_CHECKING:
    from hack.labkit.lab.inside import Lab

IP_MTU_DISCOVER = 10  # <linux/in.h>
IP_PMTUDISC_PROBE = 3
IPV4_UDP_HEADERS = 28
RESEND_SECONDS = 0.3


@dataclass(frozen=True)
class Mtu:
    pairs: tuple[tuple[str, str], ...]  # (source host, destination host)
    sizes: tuple[int, ...]  # whole IPv4 packets, bytes
    label: str = "mtu"
    timeout: float = 10


def mtu(lab: Lab, step: Mtu) -> dict[str, Any]:
    sockets = lab.sockets
    addresses = {h.name: h.address for h in lab.network.hosts}
    sizes = sorted(step.sizes)
    nonce = os.urandom(3).hex()
    pending: dict[bytes, dict[str, Any]] = {}
    rows = []
    for src, dst in step.pairs:
        row: dict[str, Any] = {"src": src, "dst": dst, "sizes": {}}
        for size in sizes:
            token = f"SMMTU:{step.label}:{src}:{dst}:{size}:{nonce}:".encode()
            payload = token.ljust(size - IPV4_UDP_HEADERS, b"x")
            record = {"delivered": False, "attempts": 0, "errors": []}
            row["sizes"][str(size)] = record
            pending[payload[: len(token)]] = {"row": row, "record": record, "payload": payload,
                                              "address": addresses[dst]}
        rows.append(row)
    started = time.time()
    saved = {}
    for src, _ in step.pairs:
        sock = sockets.senders[src]
        saved[src] = sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER)
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    try:
        next_send = started
        while time.time() - started < step.timeout and any(
                not p["record"]["delivered"] for p in pending.values()):
            if time.time() >= next_send:
                for item in pending.values():
                    _send(sockets, item)
                next_send = time.time() + RESEND_SECONDS
            _collect(sockets, pending, max(0.0, next_send - time.time()))
        _collect(sockets, pending, 0.5)  # datagrams still on their way
    finally:
        for src, value in saved.items():
            sockets.senders[src].setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, value)
    for row in rows:
        delivered = [int(s) for s, r in row["sizes"].items() if r["delivered"]]
        row["largest_delivered"] = max(delivered, default=None)
    return {"label": step.label, "started": started, "ended": time.time(), "pairs": rows}


def _send(sockets: Sockets, item: dict[str, Any]) -> None:
    record, row = item["record"], item["row"]
    if record["delivered"]:
        return
    record["attempts"] += 1
    try:
        sockets.senders[row["src"]].sendto(item["payload"], (item["address"], PROBE_PORT))
    except OSError as exc:  # EMSGSIZE: the sender knows it cannot go whole
        if len(record["errors"]) < 3:
            record["errors"].append(f"{type(exc).__name__}: {exc}")


def _collect(sockets: Sockets, pending: dict[bytes, dict[str, Any]], wait: float) -> None:
    receivers = {sockets.receivers[name].fileno(): name for name in
                 {p["row"]["dst"] for p in pending.values()}}
    ready, _, _ = select.select(list(receivers), [], [], wait)
    for fd in ready:
        name = receivers[fd]
        with contextlib.suppress(BlockingIOError):
            while True:
                data, _ = sockets.receivers[name].recvfrom(65535)
                for token, item in pending.items():
                    if (data.startswith(token) and item["row"]["dst"] == name
                            and len(data) == len(item["payload"])):
                        item["record"]["delivered"] = True
