"""charon's IKE events, on their own VICI connection: for the metrics, and to wake the loop.

Reconcile passes see only the SAs that exist at the time of a pass; a negotiation that failed
or a rekey that happened between two passes leaves no trace there. charon announces both as
VICI events, so a listener registered for ``ike-updown``, ``child-updown``, ``ike-rekey`` and
``child-rekey`` counts them as they happen, and an SA going up or down asks the agent for a
pass at once (a peer's SA came up: report it; it went down: initiate again). It runs in a
daemon thread on a connection of its own (a VICI session that is listening cannot send
commands, and the reconcile pass must never wait for it), and reconnects when charon
restarts: the old connection breaks, the socket re-appears.
What an event means is decided by ``controller.metrics.classify_vici_event``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

EVENTS = ("ike-updown", "child-updown", "ike-rekey", "child-rekey")
UPDOWN = frozenset({"ike-updown", "child-updown"})
RETRY_SECONDS = 1.0
IDLE_SECONDS = 1.0  # how often an idle listener looks at its stop flag

# (event type, message); (None, None) means "nothing happened for a while"
Event = tuple[str | None, Mapping[str, Any] | None]
Subscribe = Callable[[], Iterable[Event]]
OnEvent = Callable[[str, Mapping[str, Any]], None]


def vici_subscription(path: str, events: Iterable[str] = EVENTS) -> Subscribe:
    """Each call opens a new connection to charon at ``path`` and streams its events."""

    def subscribe() -> Iterator[Event]:
        import vici

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            sock.connect(path)
            session = vici.Session(sock)
            for event_type, message in session.listen(list(events), timeout=IDLE_SECONDS):
                name = event_type.decode() if isinstance(event_type, bytes) else event_type
                yield name, message
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    return subscribe


class EventListener:
    """Feeds charon's events to ``on_event`` until stopped; survives charon restarts."""

    def __init__(
        self,
        subscribe: Subscribe,
        on_event: OnEvent,
        *,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._subscribe = subscribe
        self._on_event = on_event
        self._retry = retry_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0  # successful subscriptions: >1 means it reconnected
        self.events = 0

    def start(self) -> None:
        """Run the listener (``run``) in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="vici-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end; it notices within ``IDLE_SECONDS`` (daemon thread anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Listen in the calling thread until ``stop()`` (tests drive it without a thread)."""
        failing = False
        while not self._stop.is_set():
            try:
                stream = iter(self._subscribe())
                first = True
                for event_type, message in stream:
                    if first:  # registered: from here on no event is missed
                        first = False
                        self.connections += 1
                        if failing:
                            log.info("listening to charon's events again")
                        failing = False
                    if self._stop.is_set():
                        break
                    if event_type is None or message is None:
                        continue
                    self.events += 1
                    try:
                        self._on_event(event_type, message)
                    except Exception:  # a metrics bug must not end the listener
                        log.exception("handling charon event %s failed", event_type)
            except Exception as exc:  # charon down or restarting (vici raises its own kinds)
                if not failing:
                    log.info("charon events unavailable (%s: %s); retrying",
                             type(exc).__name__, exc)
                failing = True
            self._stop.wait(self._retry)
