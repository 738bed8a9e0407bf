"""Probe traffic between the lab's hosts: UDP datagrams with a unique token, sent from a
socket in the source's network namespace to a receiver in the destination's, and what
arrived. Rounds (``probe_round``) re-send each token until it is delivered; streams
(``Stream``) send a fresh token per pair at a fixed interval, each exactly once. The host
matches the tokens with the switch capture (``report``) to say what the wire carried."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hack.labkit.lab.netns import in_netns
from hack.labkit.lab.network import Host

PROBE_PORT = 7777  # the receivers of probe rounds (and of the ops and MTU steps' datagrams)
STREAM_PORT = 7778  # continuous probes (start_stream .. stop_stream), beside PROBE_PORT's rounds


class Sockets:
    """Per host, a UDP receiver bound to ``port`` and a sender, both non-blocking, both made
    in the host's network namespace (they stay there)."""

    def __init__(self, hosts: Iterable[Host], port: int) -> None:
        self.receivers: dict[str, socket.socket] = {}
        self.senders: dict[str, socket.socket] = {}
        for host in hosts:
            with in_netns(host.name):
                rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                rx.bind(("0.0.0.0", port))
                rx.setblocking(False)
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                tx.setblocking(False)
            self.receivers[host.name] = rx
            self.senders[host.name] = tx

    def close(self) -> None:
        for sock in (*self.receivers.values(), *self.senders.values()):
            sock.close()


def probe_round(sockets: Sockets, hosts: Sequence[Host], label: str, timeout: float,
                interval: float = 0.25) -> dict[str, Any]:
    """Send a token for every ordered pair until it arrives or the timeout passes."""
    nonce = os.urandom(4).hex()
    probes: dict[str, dict[str, Any]] = {}
    for src in hosts:
        for dst in hosts:
            if src is dst:
                continue
            token = f"SMPROBE:{label}:{src.name}:{dst.name}:{nonce}"
            probes[token] = {
                "src": src.name, "dst": dst.name,
                "src_address": src.address, "dst_address": dst.address,
                "token": token, "first_sent": None, "last_sent": None, "attempts": 0,
                "send_errors": 0, "delivered": False, "delivered_at": None,
            }
    start = time.time()
    next_send = start
    fds = {s.fileno(): name for name, s in sockets.receivers.items()}
    while time.time() - start < timeout:
        now = time.time()
        if now >= next_send:
            for token, p in probes.items():
                if p["delivered"]:
                    continue
                p["attempts"] += 1
                p["first_sent"] = p["first_sent"] or now
                p["last_sent"] = now
                try:
                    sockets.senders[p["src"]].sendto(
                        token.encode(), (p["dst_address"], PROBE_PORT)
                    )
                except OSError:
                    p["send_errors"] += 1
            next_send = now + interval
        if all(p["delivered"] for p in probes.values()):
            break
        ready, _, _ = select.select(list(fds), [], [], max(0.0, next_send - time.time()))
        for fd in ready:
            sock = sockets.receivers[fds[fd]]
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, _ = sock.recvfrom(2048)
                    got = probes.get(data.decode(errors="replace"))
                    if got is not None and got["dst"] == fds[fd] and not got["delivered"]:
                        got["delivered"] = True
                        got["delivered_at"] = time.time()
    return {
        "label": label,
        "started": start,
        "seconds": round(time.time() - start, 3),
        "probes": list(probes.values()),
    }


class Stream:
    """Background probes: every ``interval`` s one fresh datagram per ordered pair, with a
    token of its own (label, sequence number, pair), sent once and never again; what arrives
    at the pair's destination is recorded with its arrival time. ``current`` names the scenario
    step running at each send."""

    def __init__(self, label: str, pairs: list[tuple[Host, Host]], interval: float,
                 current: Callable[[], dict[str, Any] | None]) -> None:
        self.label = label
        self.pairs = pairs
        self.interval = interval
        self.current = current
        self.nonce = os.urandom(4).hex()
        self.datagrams: dict[str, dict[str, Any]] = {}
        self.late = 0  # sends that fell behind the schedule by more than one interval
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{label}", daemon=True)
        self.sockets = Sockets({h.name: h for pair in pairs for h in pair}.values(),
                               STREAM_PORT)

    def start(self) -> None:
        self.started = time.time()
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Stop sending, then wait up to ``grace`` s for datagrams still on their way."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.stopped = time.time()
        deadline = self.stopped + grace
        while time.time() < deadline and not all(d["delivered"] for d in self.datagrams.values()):
            self._receive(0.05)
        self.sockets.close()

    def _run(self) -> None:
        seq = 0
        next_send = time.time()
        while not self._stop.is_set():
            now = time.time()
            if now >= next_send:
                self._send(seq, now)
                seq += 1
                next_send += self.interval
                if next_send < now:  # fell behind (a busy lab): never burst to catch up
                    self.late += 1
                    next_send = now + self.interval
            self._receive(max(0.0, min(0.05, next_send - time.time())))

    def _send(self, seq: int, now: float) -> None:
        step = self.current()
        for src, dst in self.pairs:
            token = f"SMSTREAM:{self.label}:{seq}:{src.name}:{dst.name}:{self.nonce}"
            record: dict[str, Any] = {
                "seq": seq, "src": src.name, "dst": dst.name, "src_address": src.address,
                "dst_address": dst.address, "token": token, "sent": now,
                "step": None if step is None else dict(step),
                "send_error": None, "delivered": False, "delivered_at": None,
            }
            self.datagrams[token] = record
            try:
                self.sockets.senders[src.name].sendto(token.encode(), (dst.address, STREAM_PORT))
            except OSError as exc:  # e.g. EAGAIN: Required mode and no SA
                record["send_error"] = f"{type(exc).__name__}: {exc}"

    def _receive(self, wait: float) -> None:
        receivers = self.sockets.receivers
        fds = {s.fileno(): name for name, s in receivers.items()}
        ready, _, _ = select.select(list(fds), [], [], wait)
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, _ = receivers[fds[fd]].recvfrom(2048)
                    got = self.datagrams.get(data.decode(errors="replace"))
                    if got is not None and got["dst"] == fds[fd] and not got["delivered"]:
                        got["delivered"] = True
                        got["delivered_at"] = time.time()

    def result(self) -> dict[str, Any]:
        datagrams = list(self.datagrams.values())
        return {
            "label": self.label, "interval": self.interval, "started": self.started,
            "stopped": self.stopped, "late": self.late,
            "sent": len(datagrams),
            "delivered": sum(d["delivered"] for d in datagrams),
            "send_errors": sum(d["send_error"] is not None for d in datagrams),
            "datagrams": datagrams,
        }
