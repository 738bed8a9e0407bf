"""The API server's audit log, read back: which requests an identity made, and the answers.

``hack/control-plane`` (``up(..., audit=True)``) makes kube-apiserver write one JSON line per
request at Metadata level (no bodies) to ``DIR/logs/audit.log``, synchronously (blocking mode:
a request's line is written before its response is sent). Only the ``ResponseComplete`` stage
is kept, so a watch appears when it ENDS: tests that ask which watches a client opened close
that client first, then wait for the lines (``AuditLog.wait_for``).

A test takes a ``mark()`` (the file's size) before it acts and reads only what came after, so
requests of earlier tests never count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NODE_NAME_CLAIM = "authentication.kubernetes.io/node-name"


@dataclass(frozen=True)
class AuditEvent:
    """One request as the server recorded it."""

    username: str
    node: str | None  # the node-name claim of a node-bound ServiceAccount token
    verb: str  # get, list, watch, create, update, patch, delete, ...
    resource: str
    subresource: str
    namespace: str
    name: str
    uri: str
    user_agent: str
    code: int
    reason: str  # the authorizer's reason ("RBAC: allowed by ...")

    @property
    def path(self) -> str:
        return urlsplit(self.uri).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.uri).query)

    @property
    def field_selector(self) -> str:
        return ",".join(self.query.get("fieldSelector", []))

    def __str__(self) -> str:
        return f"{self.verb} {self.uri} -> {self.code}"


def _event(line: dict[str, Any]) -> AuditEvent:
    user = line.get("user") or {}
    ref = line.get("objectRef") or {}
    node = (user.get("extra") or {}).get(NODE_NAME_CLAIM) or [None]
    return AuditEvent(
        username=str(user.get("username", "")),
        node=node[0],
        verb=str(line.get("verb", "")),
        resource=str(ref.get("resource", "")),
        subresource=str(ref.get("subresource", "")),
        namespace=str(ref.get("namespace", "")),
        name=str(ref.get("name", "")),
        uri=str(line.get("requestURI", "")),
        user_agent=str(line.get("userAgent", "")),
        code=int((line.get("responseStatus") or {}).get("code", 0)),
        reason=str((line.get("annotations") or {}).get("authorization.k8s.io/reason", "")),
    )


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """A position in the log: ``events(since=mark)`` reads only what comes after it."""
        return self.path.stat().st_size if self.path.exists() else 0

    def events(
        self, since: int = 0, username: str | None = None, node: str | None = None
    ) -> list[AuditEvent]:
        """Completed requests after ``since``, optionally of one user (and node claim)."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(since)
            data = log.read()
        # The server may be writing a line right now: only complete lines count.
        complete = data[: data.rfind(b"\n") + 1]
        out = []
        for raw in complete.splitlines():
            line = json.loads(raw)
            if line.get("stage") != "ResponseComplete":
                continue
            event = _event(line)
            if username is not None and event.username != username:
                continue
            if node is not None and event.node != node:
                continue
            out.append(event)
        return out

    def wait_for(
        self,
        since: int,
        accept: Callable[[list[AuditEvent]], bool],
        username: str | None = None,
        node: str | None = None,
        timeout: float = 15.0,
        what: str = "",
    ) -> list[AuditEvent]:
        """The events after ``since`` once ``accept`` takes them (polling; fails at timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(since, username, node)
            if accept(events):
                return events
            if time.monotonic() > deadline:
                shown = "\n  ".join(str(e) for e in events[-30:])
                raise AssertionError(f"audit log never showed {what or accept}; saw:\n  {shown}")
            time.sleep(0.05)
