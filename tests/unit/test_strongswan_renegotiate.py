"""A connection whose config changed gets new SAs: the plan names it, the adapter closes its
IKE_SAs right after reloading it (charon keeps old SAs on the old config otherwise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from vici.exception import CommandException

from controller.strongswan.diff import CharonPlan, plan_changes
from controller.strongswan.vici_client import Charon
from tests.fakes import FakeCharon
from tests.unit.test_strongswan_diff import CREDS, desired, policy


@pytest.mark.parametrize(
    ("ledger", "expected"),
    [
        ("changed", ("sm-a",)),  # we loaded it with another config: renegotiate
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
    assert plan.renegotiate_conns == expected


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


def test_adapter_closes_the_ike_sas_of_a_renegotiated_connection_after_reloading_it(
    tmp_path: Path,
) -> None:
    session = SaSession()
    charon = Charon(f"unix://{tmp_path}/charon.vici")
    charon._session = session
    plan = CharonPlan(
        load_conns={"sm-a": {"version": 2}},
        fingerprints={"sm-a": "f2"},
        renegotiate_conns=("sm-a",),
    )
    charon.apply(plan)
    assert session.calls == [
        ("load_conn", ["sm-a"]),
        ("list_sas", {"ike": "sm-a", "noblock": "yes"}),
        ("terminate", {"ike-id": "7", "timeout": "-1"}),
        ("terminate", {"ike-id": "9", "timeout": "-1"}),
    ]
    assert "renegotiate sm-a" in plan.summary()


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
        renegotiate_conns=("sm-a",),
    ))
    assert [c[0] for c in session.calls] == ["load_conn", "list_sas", "terminate", "terminate"]
