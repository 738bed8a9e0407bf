"""The only code that talks to charon: a thin, synchronous adapter over PyPI ``vici``.

Decisions live in ``render``/``diff``/``sas``; this module reads what charon holds, performs a
``CharonPlan``, and keeps the small ledger that ``diff`` needs (which fingerprint each ``sm-*``
connection was loaded with, which certificates and keys strongmesh put in). The ledger is kept
in memory and in a JSON state file beside the VICI socket, keyed by ``charon_id()``: a restarted
agent adopts a running charon without reloading anything, and a restarted charon (new id) is
known to hold nothing of ours.

vici is synchronous and a session is not thread-safe: every call holds a lock, so the agent may
call from worker threads. A broken socket is reopened once per call; charon's own refusals
(``CommandException``) are not retried but reported as ``CharonError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from operator import methodcaller
from pathlib import Path
from typing import Any, TypeVar

import vici
from vici.exception import CommandException, SessionException

from controller.models.node import SecurityAssociation
from controller.strongswan.diff import ActualCharon, CharonPlan, owned_after
from controller.strongswan.render import AUTHORITY_PREFIX, CONN_PREFIX, cert_name
from controller.strongswan.sas import parse_sas

log = logging.getLogger(__name__)

STATE_FILE_NAME = "strongmesh-charon-state.json"
MARKER_PREFIX = "strongmesh-instance-"
MARKER_POOL = "192.0.2.255/32"  # TEST-NET-1; the pool is never referenced, so never used
T = TypeVar("T")


class CharonError(RuntimeError):
    """charon could not be reached, or refused a command."""


class CharonApplyError(CharonError):
    """Some steps of a plan failed; the others were applied (and recorded)."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("; ".join(f"{step}: {why}" for step, why in self.failures.items()))


def socket_path(uri: str) -> str:
    """The filesystem path of a ``unix://`` VICI URI."""
    if not uri.startswith("unix://"):
        raise ValueError(f"only unix:// VICI URIs are supported, not {uri!r}")
    return uri[len("unix://") :]


def _plain(value: Any) -> Any:
    """vici serialises only dict/list/bytes/str: turn Mappings and tuples into those."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | str):
        return value
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value)


class _Ledger:
    """What strongmesh loaded into one charon instance (identified by its charon_id)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.charon_id = ""
        self.conns: dict[str, str] = {}
        self.certs: frozenset[str] = frozenset()
        self.keys: frozenset[str] = frozenset()
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self.charon_id = str(data["charon_id"])
            self.conns = {str(k): str(v) for k, v in data["conns"].items()}
            self.certs = frozenset(map(str, data["certs"]))
            self.keys = frozenset(map(str, data["keys"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable charon state file %s: %s", self.path, exc)
            self.charon_id, self.conns = "", {}
            self.certs = self.keys = frozenset()

    def adopt(self, charon_id: str) -> None:
        """Forget everything recorded for another charon instance."""
        if charon_id != self.charon_id:
            self.charon_id = charon_id
            self.conns = {}
            self.certs = self.keys = frozenset()

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "charon_id": self.charon_id,
            "conns": dict(sorted(self.conns.items())),
            "certs": sorted(self.certs),
            "keys": sorted(self.keys),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:  # memory still has it; only an agent restart loses it
            log.warning("cannot write charon state file %s: %s", self.path, exc)


class Charon:
    """A VICI connection to one charon, with the ledger of what strongmesh loaded into it."""

    def __init__(self, uri: str, *, state_path: str | None = "", timeout: float = 10.0) -> None:
        """``state_path``: "" (default) puts the ledger beside the socket; None keeps it in
        memory only."""
        self.uri = uri
        self._path = socket_path(uri)
        self._timeout = timeout
        if state_path == "":
            state_path = str(Path(self._path).parent / STATE_FILE_NAME)
        self._ledger = _Ledger(Path(state_path) if state_path else None)
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._session: Any = None

    # -- connection -------------------------------------------------------------------------

    def _open(self) -> Any:
        if self._session is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self._path)
            except OSError as exc:
                sock.close()
                raise CharonError(f"cannot connect to charon at {self.uri}: {exc}") from exc
            self._sock = sock
            self._session = vici.Session(sock)
        return self._session

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._session = None

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session)``; reopen a broken socket once; wrap charon's refusals."""
        with self._lock:
            for attempt in (1, 2):
                session = self._open()
                try:
                    return fn(session)
                except CommandException as exc:
                    raise CharonError(f"{what}: {exc}") from exc
                except (OSError, SessionException, struct.error) as exc:
                    self._drop()
                    if attempt == 2:
                        raise CharonError(f"{what}: connection to charon failed: {exc}") from exc
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> Charon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------

    def charon_id(self) -> str:
        """An id that changes whenever charon restarts (so the agent re-applies everything).

        charon reports nothing unique per process: ``stats`` gives its start time, but computes
        it from two clocks and the second jitters between calls; the pid is invisible across
        containers and reused within them. So strongmesh leaves a marker that lives exactly as
        long as the charon process: an address pool named ``strongmesh-instance-<uuid>`` (no
        connection references it, so it is never handed out; ``clear-creds`` does not touch
        pools). The first call on a fresh charon creates it.
        """

        def read_or_mark(session: Any) -> str:
            pools = [_text(name) for name in session.get_pools()]
            marks = sorted(p for p in pools if p.startswith(MARKER_PREFIX))
            if marks:
                return marks[0]
            mark = f"{MARKER_PREFIX}{uuid.uuid4().hex}"
            session.load_pool({mark: {"addrs": MARKER_POOL}})
            return mark

        return self._call("get-pools", read_or_mark)

    def stats(self) -> dict[str, Any]:
        """charon's ``stats`` (uptime, workers, loaded plugins...) with text values."""
        return _decode(self._call("stats", lambda s: s.stats()))  # type: ignore[no-any-return]

    def read_actual(self) -> ActualCharon:
        """What charon holds now, joined with the ledger of what strongmesh loaded into it."""
        with self._lock:
            cid = self.charon_id()
            self._ledger.adopt(cid)
            conns = self._call("get-conns", lambda s: s.get_conns())
            names = [_text(n) for n in conns.get("conns", [])]
            certs = self._call("list-certs", lambda s: list(s.list_certs()))
            keys = self._call("get-keys", lambda s: s.get_keys())
            authorities = self._call("get-authorities", lambda s: s.get_authorities())
            return ActualCharon(
                charon_id=cid,
                conns={n: self._ledger.conns.get(n) for n in names if n.startswith(CONN_PREFIX)},
                certs=frozenset(_cert_names(certs)),
                keys=frozenset(_text(k) for k in keys.get("keys", [])),
                authorities=frozenset(
                    a
                    for a in (_text(x) for x in authorities.get("authorities", []))
                    if a.startswith(AUTHORITY_PREFIX)
                ),
                owned_certs=self._ledger.certs,
                owned_keys=self._ledger.keys,
            )

    def list_sas(self) -> list[SecurityAssociation]:
        """strongmesh's SAs (connections named ``sm-*``), typed. Blocking: with ``noblock``
        charon leaves out every IKE_SA busy with an exchange at that moment (a CHILD_SA being
        made, a rekey), and the pass would take a busy link for a missing one."""
        events = self._call("list-sas", lambda s: list(s.list_sas({})))
        return parse_sas(events)

    def list_conns(self) -> list[dict[str, Any]]:
        """``list-conns`` as charon answers it (text values); for diagnostics and tests."""
        return [_decode(e) for e in self._call("list-conns", lambda s: list(s.list_conns()))]

    # -- writing ----------------------------------------------------------------------------

    def initiate(self, connection: str, child: str | None = None) -> None:
        """Start negotiating a CHILD_SA of the connection (its IKE_SA first, unless it has one)
        without waiting for it: the outcome shows in ``list_sas`` and in charon's events."""
        name = child or connection

        def start(session: Any) -> None:
            for _ in session.initiate({"child": name, "ike": connection, "timeout": "-1"}):
                pass

        self._call(f"initiate {name}", start)

    def terminate_ike(self, ike_id: str) -> None:
        """Close one IKE_SA (with its CHILD_SAs) without waiting for the peer's answer."""
        self._terminate("ike-id", ike_id, f"terminate ike {ike_id}")

    def terminate_child(self, child_id: str) -> None:
        """Close one CHILD_SA (its IKE_SA stays) without waiting for the peer's answer."""
        self._terminate("child-id", child_id, f"terminate child {child_id}")

    def _terminate(self, selector: str, sa_id: str, what: str) -> None:
        def close(session: Any) -> None:
            try:
                for _ in session.terminate({selector: sa_id, "timeout": "-1"}):
                    pass
            except CommandException as exc:  # gone meanwhile: nothing to do
                if "no matching" not in str(exc):
                    raise

        self._call(what, close)

    def apply(self, plan: CharonPlan) -> None:
        """Perform ``plan`` step by step; a failing step does not stop the independent ones.

        The ledger records what succeeded, so the next plan retries only what failed. Raises
        ``CharonApplyError`` naming every failed step.
        """
        if plan.is_empty:
            return
        with self._lock:
            failures: dict[str, str] = {}
            before = ActualCharon(
                charon_id=self._ledger.charon_id,
                owned_certs=self._ledger.certs,
                owned_keys=self._ledger.keys,
            )

            def step(label: str, fn: Callable[[Any], object]) -> bool:
                try:
                    self._call(label, fn)
                    return True
                except CharonError as exc:
                    failures[label] = str(exc)
                    return False

            if plan.clear_creds:
                step("clear-creds", methodcaller("clear_creds"))
            for name in plan.unload_conns:
                # unload-conn leaves the connection's SAs up: close them first
                step(f"terminate {name}", partial(_terminate_ikes, name=name))
                if step(f"unload-conn {name}", methodcaller("unload_conn", {"name": name})):
                    self._ledger.conns.pop(name, None)
            for kid in plan.unload_keys:
                step(f"unload-key {kid}", methodcaller("unload_key", {"id": kid}))
            for name in plan.unload_authorities:
                step(f"unload-authority {name}", methodcaller("unload_authority", {"name": name}))
            for name, der in plan.load_authorities.items():
                step(
                    f"load-authority {name}",
                    methodcaller("load_authority", {name: {"cacert": der}}),
                )
            for name, der in plan.load_certs.items():
                cert = {"type": "X509", "flag": "NONE", "data": der}
                step(f"load-cert {name}", methodcaller("load_cert", cert))
            for kid, der in plan.load_keys.items():
                step(f"load-key {kid}", partial(_load_key, expected=kid, der=der))
            for name, body in plan.load_conns.items():
                if step(f"load-conn {name}", methodcaller("load_conn", {name: _plain(body)})):
                    self._ledger.conns[name] = plan.fingerprints[name]
                    if name in plan.reset_conns:
                        step(f"terminate {name}", partial(_terminate_ikes, name=name))
                else:
                    self._ledger.conns.pop(name, None)

            certs, keys = owned_after(plan, before)
            self._ledger.certs, self._ledger.keys = certs, keys
            self._ledger.save()
            if failures:
                raise CharonApplyError(failures)


def _terminate_ikes(session: Any, *, name: str) -> None:
    """Close the IKE_SAs (with their CHILD_SAs) of connection ``name`` without waiting for
    the peers' answers. Listing first avoids charon's error when there is none; an SA that
    vanished in between (the peer closed it) is not an error either."""
    ids = [
        _text(ike.get("uniqueid"))
        for event in session.list_sas({"ike": name})
        for ike in event.values()
        if isinstance(ike, Mapping)
    ]
    for unique_id in ids:
        try:
            for _ in session.terminate({"ike-id": unique_id, "timeout": "-1"}):
                pass
        except CommandException as exc:  # the peer closed it meanwhile: nothing to do
            if "no matching" not in str(exc):
                raise


def _load_key(session: Any, *, expected: str, der: bytes) -> None:
    reply = session.load_key({"type": "any", "data": der})
    got = _text(reply.get("id", b""))
    if got and got != expected:  # our key id rule disagrees with charon's: say so loudly
        raise CommandException(f"charon reports key id {got}, strongmesh computed {expected}")


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return _text(value)


def _cert_names(events: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for event in events:
        data = event.get("data")
        if isinstance(data, bytes | bytearray) and _text(event.get("type", b"")) == "X509":
            yield cert_name(bytes(data))
