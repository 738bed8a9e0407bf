"""The lab's MTU drill: the largest packet that crosses ESP whole.

Standard library only: mixed into ``inside.Lab``, which runs as PID 1 inside user-mode-linux.

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
from typing import Any

from hack.labkit.lab.steps_ops import PROBE_PORT

IP_MTU_DISCOVER = 10  # <linux/in.h>
IP_PMTUDISC_PROBE = 3
IPV4_UDP_HEADERS = 28
RESEND_SECONDS = 0.3


class MtuSteps:
    """The ``mtu`` step (needs ``senders``, ``receivers``, ``host``, ``results``)."""

    senders: dict[str, socket.socket]
    receivers: dict[str, socket.socket]
    results: dict[str, Any]

    def host(self, name: str) -> Any:
        raise NotImplementedError

    def step_mtu(self, step: dict[str, Any]) -> dict[str, Any]:
        label = str(step.get("label", "mtu"))
        sizes = sorted(int(s) for s in step["sizes"])
        timeout = float(step.get("timeout", 10))
        nonce = os.urandom(3).hex()
        pending: dict[bytes, dict[str, Any]] = {}
        rows = []
        for src, dst in step["pairs"]:
            row: dict[str, Any] = {"src": src, "dst": dst, "sizes": {}}
            for size in sizes:
                token = f"SMMTU:{label}:{src}:{dst}:{size}:{nonce}:".encode()
                payload = token.ljust(size - IPV4_UDP_HEADERS, b"x")
                record = {"delivered": False, "attempts": 0, "errors": []}
                row["sizes"][str(size)] = record
                pending[payload[: len(token)]] = {"row": row, "record": record,
                                                  "payload": payload}
            rows.append(row)
        started = time.time()
        saved = {}
        for src, _ in step["pairs"]:
            sock = self.senders[src]
            saved[src] = sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        try:
            next_send = started
            while time.time() - started < timeout and any(
                    not p["record"]["delivered"] for p in pending.values()):
                if time.time() >= next_send:
                    for item in pending.values():
                        self._send(item)
                    next_send = time.time() + RESEND_SECONDS
                self._collect(pending, max(0.0, next_send - time.time()))
            self._collect(pending, 0.5)  # datagrams still on their way
        finally:
            for src, value in saved.items():
                self.senders[src].setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, value)
        for row in rows:
            delivered = [int(s) for s, r in row["sizes"].items() if r["delivered"]]
            row["largest_delivered"] = max(delivered, default=None)
        return {"label": label, "started": started, "ended": time.time(), "pairs": rows}

    def _send(self, item: dict[str, Any]) -> None:
        record, row = item["record"], item["row"]
        if record["delivered"]:
            return
        record["attempts"] += 1
        try:
            self.senders[row["src"]].sendto(item["payload"],
                                            (self.host(row["dst"]).address, PROBE_PORT))
        except OSError as exc:  # EMSGSIZE: the sender knows it cannot go whole
            if len(record["errors"]) < 3:
                record["errors"].append(f"{type(exc).__name__}: {exc}")

    def _collect(self, pending: dict[bytes, dict[str, Any]], wait: float) -> None:
        receivers = {self.receivers[name].fileno(): name for name in
                     {p["row"]["dst"] for p in pending.values()}}
        ready, _, _ = select.select(list(receivers), [], [], wait)
        for fd in ready:
            name = receivers[fd]
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, _ = self.receivers[name].recvfrom(65535)
                    for token, item in pending.items():
                        if (data.startswith(token) and item["row"]["dst"] == name
                                and len(data) == len(item["payload"])):
                            item["record"]["delivered"] = True
