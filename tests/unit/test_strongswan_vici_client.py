"""The adapter's own logic with a stand-in vici session (real charon: tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from vici.exception import CommandException

from controller.strongswan.diff import CharonPlan
from controller.strongswan.vici_client import (
    STATE_FILE_NAME,
    Charon,
    CharonApplyError,
    CharonError,
    socket_path,
)


class FakeSession:
    """Records VICI commands; refuses the ones named in ``refuse``."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse = refuse
        self.conns: list[bytes] = []

    def __getattr__(self, command: str) -> Any:
        def call(message: Any = None) -> Any:
            self.calls.append((command, message))
            if command in self.refuse:
                raise CommandException(f"Command failed: {command} refused")
            if command == "get_pools":
                return {"strongmesh-instance-abc": {"base": b"192.0.2.255"}}
            if command == "get_conns":
                return {"conns": self.conns}
            if command in ("get_keys", "get_authorities"):
                return {}
            if command == "list_certs":
                return iter(())
            return {}

        return call


def client(tmp_path: Path, session: FakeSession) -> Charon:
    c = Charon(f"unix://{tmp_path}/charon.vici")
    c._session = session  # the socket is never opened
    return c


def test_only_unix_socket_uris_are_accepted() -> None:
    assert socket_path("unix:///run/charon.vici") == "/run/charon.vici"
    with pytest.raises(ValueError, match="unix://"):
        socket_path("tcp://127.0.0.1:4502")


def test_unreachable_charon_is_a_charon_error(tmp_path: Path) -> None:
    with pytest.raises(CharonError, match="cannot connect"):
        Charon(f"unix://{tmp_path}/missing.vici").charon_id()


def test_plan_steps_run_in_order_and_bodies_become_plain_vici_messages(tmp_path: Path) -> None:
    session = FakeSession()
    plan = CharonPlan(
        clear_creds=True,
        unload_conns=("sm-old",),
        unload_authorities=("sm-ca-old",),
        load_authorities={"sm-ca-new": b"CA"},
        load_certs={"sm-cert-x": b"CERT"},
        load_conns={"sm-a": {"children": {"sm-a": {"remote_ts": ("10.0.0.0/8",)}}}},
        fingerprints={"sm-a": "f-a"},
    )
    client(tmp_path, session).apply(plan)
    assert session.calls == [
        ("clear_creds", None),
        ("list_sas", {"ike": "sm-old"}),  # its SAs are closed first
        ("unload_conn", {"name": "sm-old"}),
        ("unload_authority", {"name": "sm-ca-old"}),
        ("load_authority", {"sm-ca-new": {"cacert": b"CA"}}),
        ("load_cert", {"type": "X509", "flag": "NONE", "data": b"CERT"}),
        ("load_conn", {"sm-a": {"children": {"sm-a": {"remote_ts": ["10.0.0.0/8"]}}}}),
    ]


def test_a_refused_step_is_reported_while_the_others_are_applied_and_recorded(
    tmp_path: Path,
) -> None:
    session = FakeSession(refuse=("load_cert",))
    plan = CharonPlan(
        load_certs={"sm-cert-x": b"CERT"},
        load_conns={"sm-a": {"version": "2"}},
        fingerprints={"sm-a": "f-a"},
    )
    c = client(tmp_path, session)
    c.read_actual()
    with pytest.raises(CharonApplyError) as failed:
        c.apply(plan)
    assert list(failed.value.failures) == ["load-cert sm-cert-x"]
    assert ("load_conn", {"sm-a": {"version": "2"}}) in session.calls
    state = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert state["conns"] == {"sm-a": "f-a"}
    assert state["charon_id"] == "strongmesh-instance-abc"


def test_ledger_of_the_same_charon_is_adopted_and_another_charons_is_ignored(
    tmp_path: Path,
) -> None:
    session = FakeSession()
    session.conns = [b"sm-a", b"admin"]
    ledger = {
        "charon_id": "strongmesh-instance-abc",
        "conns": {"sm-a": "f-a"},
        "certs": [],
        "keys": ["k1"],
    }
    (tmp_path / STATE_FILE_NAME).write_text(json.dumps(ledger))
    actual = client(tmp_path, session).read_actual()
    assert actual.conns == {"sm-a": "f-a"}  # admin is not ours
    assert actual.owned_keys == frozenset({"k1"})
    (tmp_path / STATE_FILE_NAME).write_text(json.dumps({**ledger, "charon_id": "older"}))
    actual = client(tmp_path, session).read_actual()
    assert actual.conns == {"sm-a": None}
    assert actual.owned_keys == frozenset()


@pytest.mark.parametrize("content", ["not json", "[]", '{"charon_id": 1}'])
def test_unreadable_state_file_is_ignored(tmp_path: Path, content: str) -> None:
    (tmp_path / STATE_FILE_NAME).write_text(content)
    session = FakeSession()
    session.conns = [b"sm-a"]
    assert client(tmp_path, session).read_actual().conns == {"sm-a": None}


def test_fresh_charon_gets_an_instance_marker(tmp_path: Path) -> None:
    class Unmarked(FakeSession):
        def get_pools(self) -> dict[str, Any]:
            return {}

    session = Unmarked()
    mark = client(tmp_path, session).charon_id()
    assert mark.startswith("strongmesh-instance-")
    ((command, message),) = session.calls
    assert command == "load_pool"
    assert message == {mark: {"addrs": "192.0.2.255/32"}}
