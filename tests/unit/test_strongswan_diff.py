from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.facts import NodeCredentials, NodeFacts
from controller.models.policy import IPsecPolicy
from controller.strongswan.diff import (
    ActualCharon,
    CharonPlan,
    conn_fingerprint,
    plan_changes,
)
from controller.strongswan.render import CharonPolicy, DesiredCharon, cert_name, render_charon
from tests.certs import make_ca
from tests.charon import issue_node
from tests.fakes import FakeCharon

CA, NEXT_CA = make_ca("diff CA"), make_ca("next CA")
NODE = NodeFacts("node-1", ("10.0.0.1",))
CREDS = issue_node(CA, "node-1")
ROTATED = issue_node(CA, "node-1")


def policy(name: str, **spec: Any) -> IPsecPolicy:
    body: dict[str, Any] = {
        "ipsecSubnets": ["10.0.0.0/16"],
        "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
    }
    body.update(spec)
    return IPsecPolicy.model_validate({"metadata": {"name": name}, "spec": body})


def desired(*items: tuple[IPsecPolicy, NodeCredentials]) -> DesiredCharon:
    return render_charon(
        [CharonPolicy(p, c, 100 + i) for i, (p, c) in enumerate(items)], NODE
    )


def test_empty_charon_gets_everything_in_one_plan() -> None:
    want = desired((policy("a"), CREDS))
    plan = plan_changes(want, ActualCharon(charon_id="x"))
    assert list(plan.load_conns) == ["sm-a"]
    assert plan.load_certs == want.certs
    assert plan.load_keys == want.keys
    assert plan.load_authorities == want.authorities
    assert not plan.clear_creds
    assert plan.unload_conns == plan.unload_keys == plan.unload_authorities == ()


def test_second_pass_over_an_applied_plan_is_empty() -> None:
    charon = FakeCharon()
    charon.converge(desired((policy("a"), CREDS), (policy("b"), CREDS)))
    assert len(charon.plans) == 1


def test_changing_one_policy_reloads_only_that_connection() -> None:
    charon = FakeCharon()
    charon.converge(desired((policy("a"), CREDS), (policy("b"), CREDS)))
    plan = charon.converge(
        desired((policy("a"), CREDS), (policy("b", forceUdpEncapsulation=True), CREDS))
    )
    assert list(plan.load_conns) == ["sm-b"]
    assert not plan.clear_creds
    assert not plan.load_certs
    assert not plan.load_keys
    assert not plan.unload_conns


def test_connection_with_unknown_fingerprint_is_reloaded() -> None:
    want = desired((policy("a"), CREDS))
    charon = FakeCharon()
    charon.converge(want)
    charon.conns["sm-a"] = None  # e.g. ledger lost: charon holds it, we cannot vouch for it
    assert list(plan_changes(want, charon.read_actual()).load_conns) == ["sm-a"]


def test_removed_policy_unloads_its_connection_only() -> None:
    charon = FakeCharon()
    charon.converge(desired((policy("a"), CREDS), (policy("b"), CREDS)))
    plan = charon.converge(desired((policy("a"), CREDS)))
    assert plan.unload_conns == ("sm-b",)
    assert not plan.load_conns
    assert not plan.clear_creds  # credentials are still used by sm-a


def test_connections_not_named_sm_are_never_unloaded() -> None:
    actual = ActualCharon(charon_id="x", conns={"admin-vpn": None, "sm-old": "f"})
    assert plan_changes(DesiredCharon(), actual).unload_conns == ("sm-old",)


def test_instance_certificate_rotation_clears_and_reloads_credentials_once() -> None:
    charon = FakeCharon()
    charon.converge(desired((policy("a"), CREDS)))
    want = desired((policy("a"), ROTATED))
    plan = charon.converge(want)
    assert plan.clear_creds
    assert plan.load_certs == want.certs
    assert plan.load_keys == want.keys
    assert plan.unload_keys == ()  # clear-creds took them
    assert list(plan.load_conns) == ["sm-a"]
    assert not plan.load_authorities  # authorities survive clear-creds
    assert charon.keys == set(want.keys)


def test_ca_rotation_swaps_authorities_and_purges_the_old_root() -> None:
    charon = FakeCharon()
    charon.converge(desired((policy("a"), CREDS)))
    both = replace(CREDS, ca_pems=(*CREDS.ca_pems, NEXT_CA.cert_pem))
    plan = charon.converge(desired((policy("a"), both)))
    assert len(plan.load_authorities) == 1
    assert not plan.unload_authorities
    assert not plan.clear_creds
    only_next = replace(CREDS, ca_pems=(NEXT_CA.cert_pem,))
    plan = charon.converge(desired((policy("a"), only_next)))
    assert len(plan.unload_authorities) == 1
    assert plan.clear_creds  # the old root was also loaded through the connection's cacerts
    (old_root_der,) = desired((policy("a"), CREDS)).authorities.values()
    old_root = cert_name(old_root_der)
    assert old_root not in charon.read_actual().certs


def test_credentials_somebody_else_loaded_are_left_alone() -> None:
    foreign = ActualCharon(
        charon_id="x", certs=frozenset({"sm-cert-foreign"}), keys=frozenset({"k"})
    )
    plan = plan_changes(desired((policy("a"), CREDS)), foreign)
    assert not plan.clear_creds
    assert plan.unload_keys == ()


def test_stale_key_of_ours_is_unloaded_by_id() -> None:
    want = desired((policy("a"), CREDS))
    (kid,) = want.keys
    actual = ActualCharon(
        charon_id="x",
        keys=frozenset({kid, "old"}),
        owned_keys=frozenset({kid, "old"}),
    )
    assert plan_changes(want, actual).unload_keys == ("old",)


def test_foreign_authorities_are_left_alone() -> None:
    actual = ActualCharon(charon_id="x", authorities=frozenset({"corp-ca", "sm-ca-dead"}))
    assert plan_changes(DesiredCharon(), actual).unload_authorities == ("sm-ca-dead",)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": "1", "y": ["a"]}, {"y": ["a"], "x": "1"}, True),
        ({"x": 1}, {"x": "1"}, False),  # render writes every value as text
        ({"x": ("a", "b")}, {"x": ["a", "b"]}, True),
        ({"c": [b"der-1"]}, {"c": [b"der-2"]}, False),
        ({"c": {"n": "1"}}, {"c": {"n": "2"}}, False),
        ({"p": ["a", "b"]}, {"p": ["b", "a"]}, False),
    ],
)
def test_fingerprint_ignores_key_order_and_sequence_type_but_not_content(
    a: dict[str, Any], b: dict[str, Any], same: bool
) -> None:
    assert (conn_fingerprint(a) == conn_fingerprint(b)) is same


def test_plan_summary_names_steps_but_never_carries_key_material() -> None:
    want = desired((policy("a"), CREDS))
    summary = plan_changes(want, ActualCharon(charon_id="x")).summary()
    assert "load-conn sm-a" in summary
    assert "load-key" in summary
    assert "PRIVATE" not in summary
    assert "b'" not in summary
    assert CharonPlan().summary() == "nothing to do"
    assert CharonPlan().is_empty
