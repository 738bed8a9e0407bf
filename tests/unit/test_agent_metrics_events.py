"""The agent's VICI event listener: feeds the metrics, survives charon restarts."""

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

from controller.agent.events import EVENTS, Event, EventListener, vici_subscription
from controller.metrics import AgentMetrics


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class ScriptedCharon:
    """Subscriptions that play scripted sessions: a list of events, an error, or 'hang'."""

    def __init__(self, sessions: list[list[Event] | Exception]) -> None:
        self.sessions = sessions
        self.calls = 0
        self.release = threading.Event()

    def __call__(self) -> Iterator[Event]:
        index = self.calls
        self.calls += 1
        if index >= len(self.sessions):
            while not self.release.is_set():  # charon up, nothing happening
                yield None, None
                time.sleep(0.01)
            return
        session = self.sessions[index]
        if isinstance(session, Exception):
            raise session
        yield from session
        raise ConnectionResetError("charon went away")


def _listen(charon: ScriptedCharon, on_event: Callable[[str, Mapping[str, Any]], None]) -> (
    EventListener
):
    listener = EventListener(charon, on_event, retry_seconds=0.01)
    listener.start()
    return listener


def test_events_reach_the_handler_and_idle_ticks_do_not() -> None:
    seen: list[str] = []
    charon = ScriptedCharon([[(None, None), ("ike-rekey", {}), (None, None), ("child-rekey", {})]])
    listener = _listen(charon, lambda kind, _: seen.append(kind))
    try:
        _wait_for(lambda: charon.calls >= 2)
        assert seen == ["ike-rekey", "child-rekey"]
    finally:
        charon.release.set()
        listener.stop()


def test_listener_reconnects_after_charon_restarts_and_after_refused_connections() -> None:
    seen: list[str] = []
    charon = ScriptedCharon(
        [
            FileNotFoundError("no socket yet"),
            [(None, None), ("ike-rekey", {})],
            ConnectionRefusedError("charon starting"),
            [("child-rekey", {})],
        ]
    )
    listener = _listen(charon, lambda kind, _: seen.append(kind))
    try:
        _wait_for(lambda: listener.connections == 3)  # two sessions, then the idle one
        assert seen == ["ike-rekey", "child-rekey"]
    finally:
        charon.release.set()
        listener.stop()


def test_a_failing_handler_does_not_end_the_listener() -> None:
    seen: list[str] = []

    def handler(kind: str, _: Mapping[str, Any]) -> None:
        seen.append(kind)
        if kind == "ike-rekey":
            raise ValueError("bug in a metric")

    charon = ScriptedCharon([[("ike-rekey", {}), ("child-rekey", {})]])
    listener = _listen(charon, handler)
    try:
        _wait_for(lambda: len(seen) == 2)
        assert seen == ["ike-rekey", "child-rekey"]
    finally:
        charon.release.set()
        listener.stop()


def test_stop_ends_the_thread_while_charon_is_idle() -> None:
    charon = ScriptedCharon([])
    listener = _listen(charon, lambda *_: None)
    _wait_for(lambda: listener.connections == 1)
    listener.stop(timeout=2)
    assert listener._thread is not None
    assert not listener._thread.is_alive()
    charon.release.set()


# --- the real VICI wire protocol, spoken by a fake charon on a unix socket -----------------


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
def fake_charon(path: Path, sessions: list[list[tuple[str, dict[str, Any]]]]) -> Iterator[
    list[list[str]]
]:
    """Accepts one connection per session: confirms registrations, sends the session's
    events, then drops the connection (a charon restart). Records what was registered."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    registered: list[list[str]] = []

    def serve() -> None:
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
                time.sleep(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield registered
    finally:
        server.close()


def test_vici_events_are_counted_in_the_metrics_across_a_charon_restart(tmp_path: Path) -> None:
    metrics = AgentMetrics(read_stat=lambda: "")
    sessions: list[list[tuple[str, dict[str, Any]]]] = [
        [("ike-rekey", {"sm-mesh": {"state": "ESTABLISHED"}}),
         ("ike-updown", {"sm-mesh": {"state": "CONNECTING"}})],
        [("child-rekey", {"sm-mesh": {"state": "ESTABLISHED"}}),
         ("ike-updown", {"up": "yes", "sm-mesh": {"state": "ESTABLISHED"}})],
    ]
    with fake_charon(tmp_path / "charon.vici", sessions) as registered:
        listener = EventListener(
            vici_subscription(str(tmp_path / "charon.vici")), metrics.observe_event,
            retry_seconds=0.05,
        )
        listener.start()
        try:
            _wait_for(lambda: listener.events == 4)
        finally:
            listener.stop()
    assert registered == [list(EVENTS), list(EVENTS)]
    text = generate_latest(metrics.registry).decode()
    assert 'strongmesh_rekeys_total{kind="ike"} 1.0' in text
    assert 'strongmesh_rekeys_total{kind="child"} 1.0' in text
    assert "strongmesh_ike_failures_total 1.0" in text


def test_subscription_to_a_missing_socket_fails_so_the_listener_retries(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(vici_subscription(str(tmp_path / "absent.vici"))())
