"""The agent's VICI event listener on real unix sockets, in its own thread.

charon on the host kernel cannot rekey (no ESP), so the rekey events come from a stand-in that
speaks VICI's event protocol on a unix socket; stopping the thread is checked against a real
charon. Failed negotiations and restarts of a real charon: test_agent_metrics_charon.py. The
listener's decisions without sockets or threads: tests/unit/test_agent_metrics_events.py.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from vici.protocol import Message, Packet

from controller.agent.events import EVENTS, IDLE_SECONDS, EventListener, vici_subscription
from controller.metrics import AgentMetrics
from tests.charon import start_charon

WAIT_SECONDS = 10.0

Session = list[tuple[str, dict[str, Any]]]


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(struct.pack("!I", len(payload)) + payload)


def _recv(conn: socket.socket) -> bytes:
    header = conn.recv(4, socket.MSG_WAITALL)
    if len(header) < 4:
        raise ConnectionError("closed")
    (length,) = struct.unpack("!I", header)
    data: bytes = conn.recv(length, socket.MSG_WAITALL)
    return data


def _event(name: str, message: dict[str, Any]) -> bytes:
    body: bytes = Message.serialize(message)
    return bytes([Packet.EVENT, len(name)]) + name.encode() + body


@contextlib.contextmanager
def restarting_charon(path: Path, sessions: list[Session]) -> Iterator[list[list[str]]]:
    """charon's event side on ``path``: one connection per session, whose registrations it
    confirms (and records) and whose events it sends before dropping it, as a restarting
    charon does. After the last session the socket refuses connections."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    registered: list[list[str]] = []

    def serve() -> None:
        with server:
            for events in sessions:
                conn, _ = server.accept()
                names: list[str] = []
                with conn:
                    while len(names) < len(EVENTS):
                        packet = _recv(conn)
                        assert packet[0] == Packet.EVENT_REGISTER
                        names.append(packet[2 : 2 + packet[1]].decode())
                        _send(conn, bytes([Packet.EVENT_CONFIRM]))
                    registered.append(names)
                    for name, message in events:
                        _send(conn, _event(name, message))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield registered
    finally:
        thread.join(WAIT_SECONDS)


def test_vici_events_are_counted_in_the_metrics_across_a_charon_restart(tmp_path: Path) -> None:
    metrics = AgentMetrics(read_stat=lambda: "")
    sessions: list[Session] = [
        [("ike-rekey", {"sm-mesh": {"state": "ESTABLISHED"}}),
         ("ike-updown", {"sm-mesh": {"state": "CONNECTING"}})],
        [("child-rekey", {"sm-mesh": {"state": "ESTABLISHED"}}),
         ("ike-updown", {"up": "yes", "sm-mesh": {"state": "ESTABLISHED"}})],
    ]
    all_seen = threading.Event()
    seen: list[str] = []

    def on_event(kind: str, message: Mapping[str, Any]) -> None:
        metrics.observe_event(kind, message)
        seen.append(kind)
        if len(seen) == 4:
            all_seen.set()

    with restarting_charon(tmp_path / "charon.vici", sessions) as registered:
        listener = EventListener(
            vici_subscription(str(tmp_path / "charon.vici")), on_event, retry_seconds=0.05
        )
        listener.start()
        try:
            assert all_seen.wait(WAIT_SECONDS), seen
        finally:
            listener.stop()
    assert registered == [list(EVENTS), list(EVENTS)]
    assert listener.connections == 2
    text = generate_latest(metrics.registry).decode()
    assert 'strongmesh_rekeys_total{kind="ike"} 1.0' in text
    assert 'strongmesh_rekeys_total{kind="child"} 1.0' in text
    assert "strongmesh_ike_failures_total 1.0" in text


def test_subscription_to_a_missing_socket_fails_so_the_listener_retries(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(vici_subscription(str(tmp_path / "absent.vici"))())


def _poll(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_ends_the_listeners_thread_while_a_real_charon_is_idle() -> None:
    with start_charon() as charon:
        listener = EventListener(vici_subscription(str(charon.socket_path)), lambda *_: None)
        listener.start()
        try:
            # counted at the first idle tick, IDLE_SECONDS after registering
            assert _poll(lambda: listener.connections == 1)
        finally:
            listener.stop(timeout=IDLE_SECONDS + 2)
        assert listener._thread is not None
        assert not listener._thread.is_alive()
