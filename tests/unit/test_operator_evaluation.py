"""One policy evaluated: the status, the patch only when the API serves another status, and
what its Events should say."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.models.node import IPsecNode
from controller.operator.evaluation import PolicyEvaluation, evaluate_policy
from controller.operator.records import parse_policy
from controller.operator.status import CredentialsVerdict, OverlapReport, condition
from controller.operator.verdicts import SecretAssessment

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NODES = {"node-1": {"role": "worker"}}
VALID = SecretAssessment(CredentialsVerdict(True, "Valid", "Secret n/c: ok"))
INVALID = SecretAssessment(CredentialsVerdict(False, "Invalid", "Secret n/c: ca.crt: bad"))
EXPIRING = SecretAssessment(CredentialsVerdict(True, "Valid", "ok"), "warning", "in 10 days")
OVERLAP = OverlapReport("other", "10.0.0.0/24", "10.0.0.0/16", ("node-1",))


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": "mesh", "generation": 1},
        "spec": {
            "ipsecSubnets": ["10.0.0.0/24"],
            "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
            **spec,
        },
        **({"status": status} if status is not None else {}),
    }


ENFORCING = {"node-1": IPsecNode.model_validate({
    "metadata": {"name": "node-1"},
    "status": {"policies": [{"name": "mesh", "generation": 1, "enforcing": True}]},
})}


def evaluate(raw: dict[str, Any], secret: SecretAssessment | None = VALID,
             overlaps: tuple[OverlapReport, ...] = ()) -> PolicyEvaluation:
    return evaluate_policy(parse_policy(raw), secret, overlaps, NODES, ENFORCING, NOW)


def reason(evaluation: PolicyEvaluation, type_: str) -> tuple[str, str] | None:
    found = condition(evaluation.status, type_)
    return (found.status, found.reason) if found else None


@pytest.mark.parametrize(
    ("raw", "secret", "overlaps", "ready", "degraded"),
    [
        (body(), VALID, (), ("True", "AllNodesEnforcing"), ("False", "AsExpected")),
        (body(), INVALID, (), ("False", "CredentialsInvalid"), ("False", "AsExpected")),
        (body(), VALID, (OVERLAP,), ("False", "SubnetOverlap"), ("True", "SubnetOverlap")),
        (body(esp={"proposals": ["aes128"]}), VALID, (), ("False", "InvalidSpec"),
         ("True", "InvalidSpec")),
        (body(ipsecSubnets=[]), None, (), ("False", "InvalidSpec"), ("True", "InvalidSpec")),
    ],
    ids=["ready", "bad-secret", "overlap", "semantic-error", "unparsable"],
)
def test_the_status_follows_spec_secret_and_overlaps(
    raw: dict[str, Any], secret: SecretAssessment | None, overlaps: tuple[OverlapReport, ...],
    ready: tuple[str, str], degraded: tuple[str, str],
) -> None:
    evaluation = evaluate(raw, secret, overlaps)
    assert (reason(evaluation, "Ready"), reason(evaluation, "Degraded")) == (ready, degraded)


def test_invalid_spec_is_degraded_with_a_message_naming_the_field() -> None:
    for raw in (body(esp={"proposals": ["aes128"]}), body(ipsecSubnets=[])):
        degraded = condition(evaluate(raw).status, "Degraded")
        assert degraded is not None
        assert "spec." in degraded.message


def test_the_status_the_api_serves_already_is_not_written_again() -> None:
    first = evaluate(body())
    assert first.status_patch == {"status": first.status.to_api()}
    again = evaluate(body(status=first.status.to_api()))
    assert again.status == first.status
    assert again.status_patch is None


@pytest.mark.parametrize(
    ("raw", "secret", "overlaps", "expected"),
    [
        (body(), VALID, (), {"became_ready": True}),
        (body(), INVALID, (), {"credentials_error": "Secret n/c: ca.crt: bad"}),
        (body(), EXPIRING, (), {"expiry_level": "warning", "expiry_message": "in 10 days",
                                "became_ready": True}),
        (body(enforcement="Optional"), VALID, (), {"optional": True, "became_ready": True}),
        (body(), VALID, (OVERLAP,), {"overlaps": (OVERLAP.describe(),)}),
        (body(ipsecSubnets=[]), None, (), {}),
    ],
    ids=["ready", "bad-secret", "expiring", "optional", "overlap", "unparsable"],
)
def test_event_facts(
    raw: dict[str, Any], secret: SecretAssessment | None, overlaps: tuple[OverlapReport, ...],
    expected: dict[str, Any],
) -> None:
    events = evaluate(raw, secret, overlaps).events
    defaults = {"credentials_error": None, "expiry_level": None, "expiry_message": "",
                "optional": False, "overlaps": (), "became_ready": False}
    assert {key: getattr(events, key) for key in defaults} == defaults | expected


def test_ready_is_announced_once_the_api_serves_it() -> None:
    first = evaluate(body())
    assert first.events.became_ready
    assert first.events.ready_message.startswith("all 1 selected nodes enforce generation 1")
    assert not evaluate(body(status=first.status.to_api())).events.became_ready


def mesh_node(name: str, address: str, established: int = 0) -> IPsecNode:
    """A node enforcing the policy whose agent has not read the slices yet (it expects no
    peers) or, with ``established``, holds that many per-peer SAs."""
    return IPsecNode.model_validate({
        "metadata": {"name": name},
        "status": {"policies": [{"name": "mesh", "generation": 1, "enforcing": True,
                                 "address": address, "expectedPeers": established,
                                 "establishedPeers": established}]},
    })


def test_ready_waits_for_the_sas_to_every_published_peer() -> None:
    """Both agents enforce, but neither has read the slice with the other yet (expecting 0
    peers): the operator publishes them to each other, so the mesh is not there yet."""
    nodes: dict[str, dict[str, str]] = {"node-1": {}, "node-2": {}}
    early = {"node-1": mesh_node("node-1", "10.0.0.1"), "node-2": mesh_node("node-2", "10.0.0.2")}
    evaluation = evaluate_policy(parse_policy(body()), VALID, (), nodes, early, NOW)
    assert reason(evaluation, "Ready") == ("False", "PeersConnecting")
    meshed = {"node-1": mesh_node("node-1", "10.0.0.1", 1),
              "node-2": mesh_node("node-2", "10.0.0.2", 1)}
    evaluation = evaluate_policy(parse_policy(body()), VALID, (), nodes, meshed, NOW)
    assert reason(evaluation, "Ready") == ("True", "AllNodesEnforcing")


def test_pairs_without_an_sa_past_the_grace_period_degrade_the_policy() -> None:
    evaluation = evaluate_policy(parse_policy(body()), VALID, (), NODES, ENFORCING, NOW,
                                 overdue_pairs=[("node-1", "node-2")])
    assert reason(evaluation, "Degraded") == ("True", "PeersMissing")


def certified(not_after: str) -> dict[str, IPsecNode]:
    return {"node-1": IPsecNode.model_validate({
        "metadata": {"name": "node-1"},
        "status": {"policies": [{
            "name": "mesh", "generation": 1, "enforcing": True,
            "certificate": {"subject": "O=strongmesh, CN=node-1", "issuer": "CN=CA",
                            "notAfter": not_after}}]},
    })}


@pytest.mark.parametrize(("not_after", "level", "ready", "event"), [
    ("2026-12-01T00:00:00Z", "ok", "AllNodesEnforcing", None),
    ("2026-01-20T00:00:00Z", "info", "AllNodesEnforcing", None),
    ("2026-01-10T00:00:00Z", "warning", "AllNodesEnforcing", "NodeCertificateExpiring"),
    ("2026-01-02T00:00:00Z", "critical", "AllNodesEnforcing", "NodeCertificateExpiring"),
    ("2025-12-31T00:00:00Z", "expired", "CertificateExpired", "NodeCertificateExpired"),
])
def test_each_nodes_certificate_has_an_alert_level_and_an_expired_one_blocks_ready(
    not_after: str, level: str, ready: str, event: str | None,
) -> None:
    """Thresholds are the policy's certificateExpiry (defaults: 30/14/7/3 days; NOW is
    2026-01-01)."""
    evaluation = evaluate_policy(parse_policy(body()), VALID, (), NODES, certified(not_after),
                                 NOW)
    (row,) = evaluation.status.nodes
    assert (row.certificate_not_after, row.certificate_expiry) == (not_after, level)
    assert reason(evaluation, "Ready")[1] == ready  # type: ignore[index]
    from controller.operator.events import decide_events

    posted, _ = decide_events(evaluation.events, {}, 0.0, 3600.0)
    assert [e.reason for e in posted if e.reason.startswith("Node")] == (
        [event] if event else [])
