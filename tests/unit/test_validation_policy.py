"""Whole IPsecPolicy bodies: model errors get camelCase paths, semantic checks run alongside."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.validation import Finding, has_errors, validate_policy_body


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": "node-mesh"},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": "creds", "namespace": "strongmesh-system"}},
        },
    }
    base["spec"].update(spec)
    return base


def lines(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            body(enforcement="Sometimes"),
            "spec.enforcement: got 'Sometimes'; expected 'Required' or 'Optional'",
            id="enforcement",
        ),
        pytest.param(
            body(ike={"version": 3}), "spec.ike.version: got 3; expected 1 or 2", id="ike-version"
        ),
        pytest.param(
            body(ike={"proposals": ["aes128-sha256"]}),
            "spec.ike.proposals[0]: IKE proposal 'aes128-sha256' has no DH group; add "
            "one (e.g. modp2048, ecp256, x25519)",
            id="ike-proposal",
        ),
        pytest.param(
            body(esp={"proposals": ["aes128gcm16!", "aes256-sha257"]}),
            "spec.esp.proposals[1]: unknown keyword 'sha257' (did you mean 'sha256'?)",
            id="esp-proposal",
        ),
        pytest.param(
            body(ipsecSubnets=["10.0.0.0/33"]),
            "spec.ipsecSubnets[0]: '10.0.0.0/33' is not a CIDR: prefix length 33 is out "
            "of range for IPv4 (0-32)",
            id="subnet",
        ),
        pytest.param(
            body(ipsecSubnets=[]),
            "spec.ipsecSubnets: must have at least 1 item(s)",
            id="no-subnets",
        ),
        pytest.param(
            body(ipsecSubnets="10.0.0.0/8"),
            "spec.ipsecSubnets: Input should be a valid list (got '10.0.0.0/8')",
            id="subnets-not-a-list",
        ),
        pytest.param(
            body(mode="Tunel"),
            "spec.mode: got 'Tunel'; expected 'Transport' or 'Tunnel'",
            id="mode-typo",
        ),
        pytest.param(
            body(enforcment="Required"),
            "spec.enforcment: unknown field (check the spelling; see the IPsecPolicy reference)",
            id="unknown-field",
        ),
        pytest.param(
            body(ike={"rekeyTime": "4 hours"}),
            "spec.ike.rekeyTime: got '4 hours'; expected a duration such as 30s, 4h or 1h30m",
            id="duration",
        ),
        pytest.param(
            body(logLevel=5),
            "spec.logLevel: Input should be less than or equal to 4 (got 5)",
            id="log-level",
        ),
        pytest.param(
            body(certificateExpiry={"infoDays": 7, "warnDays": 14}),
            "spec.certificateExpiry: thresholds must not increase from info to critical:"
            " infoDays >= warnDays >= errorDays >= criticalDays (got 7, 14, 7, 3)",
            id="expiry-order",
        ),
        pytest.param(
            body(nodeSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
            "spec.nodeSelector.matchExpressions[0].values: operator In needs at least one value",
            id="selector-in-without-values",
        ),
        pytest.param(
            body(
                nodeSelector={
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            ),
            "spec.nodeSelector.matchExpressions[0].values: must be empty for operator Exists",
            id="selector-exists-with-values",
        ),
        pytest.param(
            {**body(), "apiVersion": "strongmesh.io/v1"},
            "apiVersion: got 'strongmesh.io/v1'; expected strongmesh.io/v1alpha1",
            id="api-version",
        ),
        pytest.param(
            {**body(), "metadata": {"name": "Node_Mesh"}},
            "metadata.name: 'Node_Mesh' is not a valid object name (lower case letters, "
            "digits, '-' and '.')",
            id="bad-name",
        ),
        pytest.param(
            {k: v for k, v in body().items() if k != "spec"},
            "spec: required field is missing",
            id="no-spec",
        ),
        pytest.param(
            body(credentials={"secretRef": {"name": "x"}}),
            "spec.credentials.secretRef.namespace: required field is missing",
            id="secret-ref-namespace",
        ),
    ],
)
def test_bad_policies_name_the_field(document: dict[str, Any], expected: str) -> None:
    policy, findings = validate_policy_body(document)
    assert policy is None
    assert expected in lines(findings)


def test_all_problems_are_reported_in_one_pass() -> None:
    document = body(
        enforcement="Sometimes", ipsecSubnets=["10.0.0.1/8"], esp={"proposals": ["aes128"]}
    )
    _, findings = validate_policy_body(document)
    assert [f.path for f in findings] == [
        "spec.enforcement",
        "spec.ipsecSubnets[0]",
        "spec.esp.proposals[0]",
    ]


def test_a_model_error_is_not_repeated_by_the_semantic_checks() -> None:
    _, findings = validate_policy_body(body(ipsecSubnets=[]))
    assert [f.path for f in findings] == ["spec.ipsecSubnets"]


def test_defaults_give_a_clean_policy() -> None:
    policy, findings = validate_policy_body(body())
    assert findings == []
    assert policy is not None
    assert policy.spec.enforcement == "Required"
    assert policy.spec.ike.proposals == ["aes128-sha256-modp2048!"]


def test_warnings_keep_the_policy_usable() -> None:
    policy, findings = validate_policy_body(body(ike={"proposals": ["3des-sha1-modp1024"]}))
    assert policy is not None
    assert not has_errors(findings)
    assert {f.path for f in findings} == {"spec.ike.proposals[0]"}
    assert len(findings) == 3


def test_status_and_unknown_top_level_fields_are_tolerated() -> None:
    document = {**body(), "status": {"observedGeneration": 2}}
    document["metadata"] = {"name": "node-mesh", "uid": "u", "managedFields": []}
    policy, findings = validate_policy_body(document)
    assert findings == []
    assert policy is not None
    assert policy.status is not None
    assert policy.status.observed_generation == 2


def test_status_written_by_others_never_invalidates_the_policy() -> None:
    document = {**body(), "status": {"kopf": {"progress": {}}, "observedGeneration": 1}}
    policy, findings = validate_policy_body(document)
    assert findings == []
    assert policy is not None


def test_input_is_not_modified() -> None:
    document = body(esp={"proposals": ["aes128gcm16!"]})
    before = copy.deepcopy(document)
    validate_policy_body(document)
    assert document == before


def test_non_mapping_body_is_an_error() -> None:
    policy, findings = validate_policy_body(["not", "a", "policy"])  # type: ignore[arg-type]
    assert policy is None
    assert lines(findings) == ["expected an IPsecPolicy object, got ['not', 'a', 'policy']"]


def test_tunnel_mode_tells_which_cni_mtu_to_set() -> None:
    from controller.validation import validate_policy_body

    policy, findings = validate_policy_body(body(mode="Tunnel"))
    assert policy is not None
    (advice,) = [f for f in findings if f.code == "policy.tunnel-mtu"]
    assert advice.severity == "info"
    assert str(advice) == (
        "spec.mode: Tunnel mode adds up to 54 bytes to each pod packet (IPv4, worst of the ESP "
        "proposals): set the pod network's (CNI) MTU to at most 1446 on a 1500 interface, 1406 "
        "on a 1460 interface, 1346 on a 1400 interface, 8946 on a 9001 interface; each "
        "IPsecNode reports the figure for its own interface")
