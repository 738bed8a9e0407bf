"""The agent's VICI event listener: feeds the metrics, survives charon restarts.

The listener runs here in the test's own thread (``EventListener.run``) against a scripted
subscription, and retries at once: no thread, no socket, no waiting. Its thread and the real
VICI wire protocol are tested in tests/integration/test_agent_events_vici.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import generate_latest

from controller.agent.events import Event, EventListener, OnEvent
from controller.metrics import AgentMetrics


class ScriptedCharon:
    """A subscription that plays scripted sessions: each a list of events (after which charon
    goes away), or an error on connecting. Once the script is played, charon is up and idle,
    and the listener is asked to stop, as the agent's main thread would ask it."""

    def __init__(self, sessions: list[list[Event] | Exception]) -> None:
        self.sessions = sessions
        self.calls = 0
        self.listener: EventListener | None = None
        self.listened_after_stop = False

    def __call__(self) -> Iterator[Event]:
        index = self.calls
        self.calls += 1
        if index >= len(self.sessions):
            assert self.listener is not None
            yield None, None  # registered, nothing happening
            self.listener.stop()
            yield None, None  # the next idle tick: the listener must notice the stop
            self.listened_after_stop = True
            return
        session = self.sessions[index]
        if isinstance(session, Exception):
            raise session
        yield from session
        raise ConnectionResetError("charon went away")


def listen(
    sessions: list[list[Event] | Exception], on_event: OnEvent | None = None
) -> tuple[EventListener, list[str], ScriptedCharon]:
    """Run a listener over ``sessions`` until it stops; returns it, the events seen, charon."""
    seen: list[str] = []

    def record(kind: str, message: Mapping[str, Any]) -> None:
        seen.append(kind)
        if on_event is not None:
            on_event(kind, message)

    charon = ScriptedCharon(sessions)
    listener = EventListener(charon, record, retry_seconds=0)
    charon.listener = listener
    listener.run()
    assert not charon.listened_after_stop
    return listener, seen, charon


def test_events_reach_the_handler_and_idle_ticks_do_not() -> None:
    listener, seen, _ = listen(
        [[(None, None), ("ike-rekey", {}), (None, None), ("child-rekey", {})]]
    )
    assert seen == ["ike-rekey", "child-rekey"]
    assert listener.events == 2


def test_listener_reconnects_after_charon_restarts_and_after_refused_connections() -> None:
    listener, seen, charon = listen(
        [
            FileNotFoundError("no socket yet"),
            [(None, None), ("ike-rekey", {})],
            ConnectionRefusedError("charon starting"),
            [("child-rekey", {})],
        ]
    )
    assert charon.calls == 5
    assert listener.connections == 3  # two sessions, then the idle one
    assert seen == ["ike-rekey", "child-rekey"]


def test_a_failing_handler_does_not_end_the_listener() -> None:
    def handler(kind: str, _: Mapping[str, Any]) -> None:
        if kind == "ike-rekey":
            raise ValueError("bug in a metric")

    _, seen, _ = listen([[("ike-rekey", {}), ("child-rekey", {})]], handler)
    assert seen == ["ike-rekey", "child-rekey"]


def test_stop_ends_the_listener_while_charon_is_idle() -> None:
    listener, seen, charon = listen([])
    assert (charon.calls, listener.connections, seen) == (1, 1, [])


def test_events_are_counted_in_the_metrics_across_a_charon_restart() -> None:
    metrics = AgentMetrics(read_stat=lambda: "")
    listen(
        [
            [("ike-rekey", {"sm-mesh": {"state": "ESTABLISHED"}}),
             ("ike-updown", {"sm-mesh": {"state": "CONNECTING"}})],
            [("child-rekey", {"sm-mesh": {"state": "ESTABLISHED"}}),
             ("ike-updown", {"up": "yes", "sm-mesh": {"state": "ESTABLISHED"}})],
        ],
        metrics.observe_event,
    )
    text = generate_latest(metrics.registry).decode()
    assert 'strongmesh_rekeys_total{kind="ike"} 1.0' in text
    assert 'strongmesh_rekeys_total{kind="child"} 1.0' in text
    assert "strongmesh_ike_failures_total 1.0" in text
