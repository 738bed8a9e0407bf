"""Which policies a pass enforces: inputs, or the last good state when an input is bad."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from controller.agent.interfaces import AgentInputs, PolicyInput
from controller.agent.state import GoodPolicy, resolve
from controller.facts import NodeCredentials, NodeFacts
from controller.models.policy import CertificateExpiry, IPsecPolicy

NODE = NodeFacts(name="node-1", addresses=("10.77.0.1",))
CREDS = NodeCredentials("cert", (), "key", ("ca",), "CN=node")


def policy(name: str = "mesh", subnets: tuple[str, ...] = ("10.77.0.0/24",)) -> IPsecPolicy:
    return IPsecPolicy.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "ipsecSubnets": list(subnets),
                "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
            },
        }
    )


def check(data: Mapping[str, str], _: CertificateExpiry) -> tuple[Any, list[str]]:
    """A credential check driven by the test data: 'bad' fails, anything else passes."""
    if data.get("ca.crt") == "bad":
        return None, ["ca.crt: not a certificate"]
    return CREDS, []


GOOD = {"ca.crt": "good"}
BAD = {"ca.crt": "bad"}


def item(name: str = "mesh", generation: int = 1, data: Mapping[str, str] | None = GOOD,
         **kwargs: Any) -> PolicyInput:
    return PolicyInput(policy=policy(name), generation=generation, secret_data=data, **kwargs)


def good(name: str = "mesh", generation: int = 1) -> GoodPolicy:
    return GoodPolicy(policy(name), generation, CREDS)


def test_valid_policy_is_enforced_and_becomes_last_good() -> None:
    result = resolve(AgentInputs(node=NODE, policies=(item(generation=3),)), {}, check)
    assert [(g.name, g.generation) for g in result.enforce] == [("mesh", 3)]
    assert result.last_good["mesh"].generation == 3
    assert result.errors == ()
    assert [(p.name, p.generation, p.enforcing) for p in result.policies] == [("mesh", 3, True)]


def test_bad_credentials_keep_the_last_good_generation_and_report_why() -> None:
    result = resolve(
        AgentInputs(node=NODE, policies=(item(generation=2, data=BAD),)),
        {"mesh": good(generation=1)},
        check,
    )
    assert [(g.name, g.generation) for g in result.enforce] == [("mesh", 1)]
    (status,) = result.policies
    assert (status.generation, status.enforcing) == (1, False)
    assert "enforcing generation 1" in status.message
    assert result.errors == ("policy mesh generation 2: ca.crt: not a certificate",)


def test_bad_credentials_without_history_enforce_nothing() -> None:
    result = resolve(AgentInputs(node=NODE, policies=(item(data=BAD),)), {}, check)
    assert result.enforce == ()
    assert [(p.name, p.enforcing) for p in result.policies] == [("mesh", False)]
    assert result.errors


def test_missing_secret_is_an_error_naming_it() -> None:
    result = resolve(AgentInputs(node=NODE, policies=(item(data=None),)), {}, check)
    assert result.errors == ("policy mesh generation 1: Secret ns/creds not found",)


@pytest.mark.parametrize("errors", [("cannot read policy.yaml",), ("API outage", "again")])
def test_unreadable_inputs_keep_everything_last_good(errors: tuple[str, ...]) -> None:
    last = {"a": good("a"), "b": good("b", 4)}
    result = resolve(AgentInputs(node=NODE, errors=errors), last, check)
    assert [g.name for g in result.enforce] == ["a", "b"]
    assert result.errors == errors
    assert result.last_good == last


def test_policy_gone_from_valid_inputs_is_dropped() -> None:
    result = resolve(AgentInputs(node=NODE, policies=(item("b"),)), {"a": good("a")}, check)
    assert [g.name for g in result.enforce] == ["b"]
    assert "a" not in result.last_good


def test_deleting_policy_is_torn_down_even_with_history() -> None:
    result = resolve(
        AgentInputs(node=NODE, policies=(item(deleting=True),)), {"mesh": good()}, check
    )
    assert result.enforce == ()
    assert result.policies == ()


def test_node_outside_ipsec_subnets_is_reported_not_enforced() -> None:
    outside = NodeFacts(name="node-9", addresses=("192.0.2.9",))
    result = resolve(AgentInputs(node=outside, policies=(item(),)), {}, check)
    assert result.enforce == ()
    (status,) = result.policies
    assert not status.enforcing
    assert "no address inside ipsecSubnets" in status.message


def test_policies_are_resolved_in_name_order() -> None:
    inputs = AgentInputs(node=NODE, policies=(item("zeta"), item("alpha")))
    result = resolve(inputs, {}, check)
    assert [g.name for g in result.enforce] == ["alpha", "zeta"]
