"""A connection whose config changed gets new SAs (charon keeps old SAs on the old config
otherwise): a per-peer connection makes before it breaks (the plan names it; the agent
initiates anew), a catch-all is reset (the adapter closes its IKE_SAs right after reloading
it). A catch-all that only answers other addresses (a peer became known) keeps its SAs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from vici.exception import CommandException

from controller.strongswan.diff import ActualCharon, CharonPlan, conn_fingerprint, plan_changes
from controller.strongswan.render import DesiredCharon
from controller.strongswan.vici_client import Charon
from tests.fakes import FakeCharon
from tests.unit.test_strongswan_diff import CREDS, desired, policy


@pytest.mark.parametrize(
    ("ledger", "expected"),
    [
        ("changed", ("sm-a",)),  # we loaded it with another config: reset
        (None, ()),  # unknown (ledger lost): reloaded, but its SAs may be right; keep them
        ("absent", ()),  # new connection: nothing to renegotiate
    ],
)
def test_only_a_changed_connection_is_renegotiated(
    ledger: str | None, expected: tuple[str, ...]
) -> None:
    charon = FakeCharon()
    charon.converge(desired((policy("a"), CREDS)))
    if ledger == "absent":
        del charon.conns["sm-a"]
    elif ledger is None:
        charon.conns["sm-a"] = None
    new = desired((policy("a", esp={"proposals": ["aes256gcm16!"]}), CREDS))
    plan = plan_changes(new, charon.read_actual())
    assert list(plan.load_conns) == ["sm-a"]
    assert plan.reset_conns == expected
    assert plan.renegotiate_conns == ()  # "sm-a" is a catch-all


BODY = {"version": "2", "proposals": ["aes128-sha256-modp2048"], "remote_addrs": ["10.0.0.0/24"]}
PEER = {"version": "2", "proposals": ["aes128-sha256-modp2048"], "remote_addrs": ["10.0.0.2"]}


def plan_from(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> CharonPlan:
    actual = ActualCharon(charon_id="c1", conns={n: conn_fingerprint(b) for n, b in before.items()})
    return plan_changes(DesiredCharon(connections=after), actual)


def test_a_changed_peer_connection_is_renegotiated_not_reset() -> None:
    new = {**PEER, "proposals": ["aes256-sha256-modp3072"]}
    plan = plan_from({"sm-a@n2": PEER}, {"sm-a@n2": new})
    assert (plan.renegotiate_conns, plan.reset_conns) == (("sm-a@n2",), ())


def test_a_catch_all_answering_other_addresses_keeps_its_sas() -> None:
    narrower = {**BODY, "remote_addrs": ["10.0.0.0-10.0.0.1", "10.0.0.3-10.0.0.255"]}
    plan = plan_from({"sm-a": BODY}, {"sm-a": narrower})
    assert list(plan.load_conns) == ["sm-a"]
    assert (plan.renegotiate_conns, plan.reset_conns) == ((), ())


def test_peer_connections_are_loaded_before_the_catch_all() -> None:
    """A catch-all that stops answering a newly known peer must not be loaded while that
    peer's own connection is still missing: nothing would answer the peer meanwhile."""
    plan = plan_from({}, {"sm-a": BODY, "sm-a@n2": PEER, "sm-a@n1": PEER})
    assert list(plan.load_conns) == ["sm-a@n1", "sm-a@n2", "sm-a"]


def test_unchanged_connection_is_neither_reloaded_nor_renegotiated() -> None:
    charon = FakeCharon()
    want = desired((policy("a"), CREDS))
    charon.converge(want)
    plan = plan_changes(want, charon.read_actual())
    assert plan.renegotiate_conns == ()
    assert plan.is_empty


class SaSession:
    """VICI session holding two IKE_SAs of sm-a; records commands."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def load_conn(self, message: Any) -> dict[str, Any]:
        self.calls.append(("load_conn", list(message)))
        return {}

    def list_sas(self, message: Any) -> Any:
        self.calls.append(("list_sas", message))
        yield {"sm-a": {"uniqueid": b"7"}}
        yield {"sm-a": {"uniqueid": b"9"}}

    def terminate(self, message: Any) -> Any:
        self.calls.append(("terminate", message))
        yield {"msg": b"closing"}

    def unload_conn(self, message: Any) -> dict[str, Any]:
        self.calls.append(("unload_conn", message))
        return {}


def test_adapter_closes_the_ike_sas_of_a_reset_connection_after_reloading_it(
    tmp_path: Path,
) -> None:
    session = SaSession()
    charon = Charon(f"unix://{tmp_path}/charon.vici")
    charon._session = session
    plan = CharonPlan(
        load_conns={"sm-a": {"version": 2}},
        fingerprints={"sm-a": "f2"},
        reset_conns=("sm-a",),
    )
    charon.apply(plan)
    assert session.calls == [
        ("load_conn", ["sm-a"]),
        ("list_sas", {"ike": "sm-a"}),
        ("terminate", {"ike-id": "7", "timeout": "-1"}),
        ("terminate", {"ike-id": "9", "timeout": "-1"}),
    ]
    assert "reset sm-a" in plan.summary()


def test_adapter_leaves_a_renegotiated_connections_sas_up(tmp_path: Path) -> None:
    session = SaSession()
    charon = Charon(f"unix://{tmp_path}/charon.vici")
    charon._session = session
    plan = CharonPlan(load_conns={"sm-a@n2": {"version": 2}}, fingerprints={"sm-a@n2": "f2"},
                      renegotiate_conns=("sm-a@n2",))
    charon.apply(plan)
    assert session.calls == [("load_conn", ["sm-a@n2"])]  # the agent initiates the new one
    assert "renegotiate sm-a@n2" in plan.summary()


def test_unloaded_connection_has_its_ike_sas_closed_before_it_goes(tmp_path: Path) -> None:
    session = SaSession()
    charon = Charon(f"unix://{tmp_path}/charon.vici")
    charon._session = session
    charon.apply(CharonPlan(unload_conns=("sm-a",)))
    assert [c[0] for c in session.calls] == ["list_sas", "terminate", "terminate", "unload_conn"]


def test_an_sa_the_peer_closed_meanwhile_is_not_an_error(tmp_path: Path) -> None:
    class Vanished(SaSession):
        def terminate(self, message: Any) -> Any:
            self.calls.append(("terminate", message))
            raise CommandException("no matching SAs to terminate found")
            yield  # a generator, like vici's streamed commands

    session = Vanished()
    charon = Charon(f"unix://{tmp_path}/charon.vici")
    charon._session = session
    charon.apply(CharonPlan(
        load_conns={"sm-a": {"version": 2}}, fingerprints={"sm-a": "f2"},
        reset_conns=("sm-a",),
    ))
    assert [c[0] for c in session.calls] == ["load_conn", "list_sas", "terminate", "terminate"]
