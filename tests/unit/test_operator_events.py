"""Events are posted when a problem appears or changes; OptionalEnforcement repeats."""

from __future__ import annotations

from controller.operator.events import (
    EventFacts,
    EventSpec,
    Posted,
    decide_events,
    event_body,
    object_reference,
    policy_reference,
)
from controller.operator.records import PolicyMeta

HOUR = 3600.0


def reasons(
    facts: EventFacts, memory: dict[str, Posted], now: float
) -> tuple[list[str], dict[str, Posted]]:
    todo, kept = decide_events(facts, memory, now, HOUR)
    return [f"{e.type}/{e.reason}" for e in todo], kept


def test_invalid_credentials_warn_once_then_again_when_the_problem_changes() -> None:
    first, memory = reasons(EventFacts(credentials_error="ca.crt: not a CA"), {}, 0)
    again, memory = reasons(EventFacts(credentials_error="ca.crt: not a CA"), memory, 10)
    changed, memory = reasons(EventFacts(credentials_error="tls.key: mismatch"), memory, 20)
    assert (first, again, changed) == (
        ["Warning/CredentialsInvalid"],
        [],
        ["Warning/CredentialsInvalid"],
    )


def test_fixed_then_broken_again_warns_again() -> None:
    _, memory = reasons(EventFacts(credentials_error="ca.crt: bad"), {}, 0)
    _, memory = reasons(EventFacts(), memory, 1)
    again, _ = reasons(EventFacts(credentials_error="ca.crt: bad"), memory, 2)
    assert again == ["Warning/CredentialsInvalid"]


def test_expiry_warns_at_each_new_level_with_the_level_in_the_message() -> None:
    todo, memory = decide_events(
        EventFacts(expiry_level="warning", expiry_message="expires in 10 days"), {}, 0, HOUR
    )
    assert [(e.reason, e.message) for e in todo] == [
        ("CertificateExpiring", "[warning] expires in 10 days")
    ]
    same, memory = reasons(EventFacts(expiry_level="warning"), memory, 5)
    worse, _ = reasons(EventFacts(expiry_level="critical"), memory, 6)
    assert (same, worse) == ([], ["Warning/CertificateExpiring"])


def test_optional_enforcement_repeats_every_interval() -> None:
    posted = []
    memory: dict[str, Posted] = {}
    for now in (0, 1800, 3599, 3600, 5000, 7200):
        todo, memory = reasons(EventFacts(optional=True), memory, now)
        posted.append(bool(todo))
    assert posted == [True, False, False, True, False, True]


def test_overlap_and_ready_are_announced() -> None:
    todo, memory = reasons(EventFacts(overlaps=("x overlaps y",)), {}, 0)
    assert todo == ["Warning/SubnetOverlap"]
    assert reasons(EventFacts(overlaps=("x overlaps y",)), memory, 1)[0] == []
    assert reasons(EventFacts(became_ready=True), {}, 0)[0] == ["Normal/Ready"]


def test_an_event_about_a_policy_refers_to_it_and_carries_its_reason() -> None:
    involved = policy_reference(PolicyMeta("mesh", uid="u-1", resource_version="7"))
    event = event_body(involved, EventSpec("Warning", "SubnetOverlap", "x" * 2000), "default",
                       "operator-0", "2026-01-01T00:00:00Z")
    assert event["involvedObject"] == {
        "apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy", "name": "mesh",
        "uid": "u-1", "resourceVersion": "7"}
    assert event["metadata"] == {"generateName": "mesh.", "namespace": "default"}
    assert (event["type"], event["reason"], len(event["message"])) == (
        "Warning", "SubnetOverlap", 1024)
    assert (event["reportingComponent"], event["reportingInstance"]) == (
        "strongmesh.io/operator", "operator-0")
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-01-01T00:00:00Z"


def test_an_event_about_a_csr_refers_to_it() -> None:
    csr = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": "node-1-abc", "uid": "u-2", "resourceVersion": "3"}}
    assert object_reference(csr) == {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "name": "node-1-abc", "uid": "u-2", "resourceVersion": "3"}
    assert object_reference({})["name"] == ""
