"""Each watched policy and Secret is parsed once into a record; invalid bodies keep findings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.models.common import LabelSelector
from controller.models.policy import IPsecPolicyStatus
from controller.operator.records import (
    InvalidSpec,
    PolicyRecord,
    SecretContents,
    ValidSpec,
    check_spec,
    in_force,
    newer_or_same,
    only_status_changed,
    parse_policy,
    parse_secret,
    policy_using_issuer,
)


def body(name: str = "p", meta: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": name, **(meta or {})},
        "spec": {
            "ipsecSubnets": ["10.0.0.0/24"],
            "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
            **spec,
        },
    }


def issuer_body(name: str, secret: str, **meta: Any) -> dict[str, Any]:
    return body(name, meta, credentials={"issuer": {"secretRef": {"name": secret,
                                                                  "namespace": "n"}}})


def test_a_valid_body_keeps_its_spec_and_no_errors() -> None:
    record = parse_policy(body(nodeSelector={"matchLabels": {"role": "x"}}))
    assert isinstance(record.checked, ValidSpec)
    assert record.valid_spec is not None
    assert record.spec_errors == ()
    assert record.selector == LabelSelector(match_labels={"role": "x"})
    assert record.secret == ("n", "c")


def test_semantically_invalid_body_keeps_its_spec_for_node_listing() -> None:
    record = parse_policy(body(esp={"proposals": ["aes128"]}))  # no integrity: parses, invalid
    assert isinstance(record.checked, InvalidSpec)
    assert record.checked.spec is not None
    assert record.valid_spec is None
    assert any("spec.esp.proposals" in e for e in record.spec_errors)


def test_unparsable_body_has_no_spec_but_errors_its_secret_and_selector() -> None:
    broken = body(nodeSelector={"matchLabels": {"role": "x"}})
    del broken["spec"]["ipsecSubnets"]
    record = parse_policy(broken)
    assert record.checked.spec is None
    assert any("ipsecSubnets" in e for e in record.spec_errors)
    # still known: which Secret to watch and which nodes' reports concern it
    assert record.secret == ("n", "c")
    assert record.selector == LabelSelector(match_labels={"role": "x"})


def test_an_empty_spec_is_invalid_with_errors() -> None:
    checked = check_spec({"metadata": {"name": "p"}, "spec": {}})
    assert isinstance(checked, InvalidSpec)
    assert checked.spec is None
    assert checked.errors


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, ("", "", 1, (), None)),
        ({"uid": "u", "resourceVersion": "7", "generation": 3, "finalizers": ["a", "b"],
          "deletionTimestamp": "2026-01-01T00:00:00Z"},
         ("u", "7", 3, ("a", "b"), datetime(2026, 1, 1, tzinfo=UTC))),
    ],
    ids=["defaults", "all-set"],
)
def test_metadata_is_read_once(meta: dict[str, Any], expected: tuple[Any, ...]) -> None:
    m = parse_policy(body(meta=meta)).meta
    assert (m.uid, m.resource_version, m.generation, m.finalizers, m.deletion_timestamp) == expected
    assert m.deleting == (expected[4] is not None)


@pytest.mark.parametrize(
    ("status", "served"),
    [
        (None, IPsecPolicyStatus()),  # never written: empty, so the first write is a change
        ({"observedGeneration": 2}, IPsecPolicyStatus(observed_generation=2)),
        ({"kopf": {"progress": {}}}, None),  # not ours: unreadable
    ],
    ids=["never-written", "written", "foreign"],
)
def test_the_served_status_is_parsed_once(
    status: dict[str, Any] | None, served: IPsecPolicyStatus | None
) -> None:
    raw = body() if status is None else body() | {"status": status}
    assert parse_policy(raw).served_status == served


@pytest.mark.parametrize(
    ("change", "only_status"),
    [
        ({"status": {"observedGeneration": 1}}, True),
        ({"metadata": {"name": "p", "resourceVersion": "9"}}, True),
        ({"metadata": {"name": "p", "generation": 2}}, False),
        ({"metadata": {"name": "p", "finalizers": ["strongmesh.io/teardown"]}}, False),
        ({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}}, False),
        ({"spec": body()["spec"] | {"enforcement": "Optional"}}, False),
    ],
    ids=["status", "resource-version", "generation", "finalizers", "deletion", "spec"],
)
def test_only_status_changed(change: dict[str, Any], only_status: bool) -> None:
    assert only_status_changed(parse_policy(body()), parse_policy(body() | change)) == only_status


@pytest.mark.parametrize(
    ("kept", "arriving", "expected"),
    [("5", "6", True), ("5", "5", True), ("6", "5", False), ("", "5", True), ("a", "1", True)],
)
def test_only_a_numerically_older_version_is_refused(kept: str, arriving: str,
                                                     expected: bool) -> None:
    assert newer_or_same(kept, arriving) == expected


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ({"data": {"ca.crt": base64.b64encode(b"PEM").decode()}},
         SecretContents({"ca.crt": "PEM"})),
        ({"stringData": {"tls.key": "K"}}, SecretContents({"tls.key": "K"})),
        ({"data": {"tls.crt": "!!!"}}, SecretContents({}, "data.tls.crt: not valid base64")),
    ],
    ids=["data", "string-data", "undecodable"],
)
def test_secrets_are_decoded_once(secret: dict[str, Any], expected: SecretContents) -> None:
    assert parse_secret(secret) == expected


def records(*bodies: dict[str, Any]) -> dict[str, PolicyRecord]:
    return {b["metadata"]["name"]: parse_policy(b) for b in bodies}


def test_policies_in_force_are_valid_and_not_deleting() -> None:
    policies = records(
        body("ok"),
        body("bad", esp={"proposals": ["aes128"]}),
        body("going", {"deletionTimestamp": "2026-01-01T00:00:00Z"}),
    )
    assert list(in_force(policies)) == ["ok"]


def test_the_policy_using_an_issuer_is_one_in_force() -> None:
    policies = records(
        issuer_body("going", "ca", deletionTimestamp="2026-01-01T00:00:00Z"),
        issuer_body("other", "other-ca"),
        issuer_body("mesh", "ca"),
    )
    found = policy_using_issuer(policies, ("n", "ca"))
    assert found is not None
    assert found.name == "mesh"
    assert policy_using_issuer(policies, ("n", "nope")) is None
