"""The CRDs in crds/ are the models' schema, valid for Kubernetes, and they accept the examples.

Kubernetes is strict about CRD schemas (structural schemas, defaults that validate, list-map
keys that exist); these tests check those rules here, so that `kubectl apply -f crds/` cannot be
the first place a model change is found to be unrepresentable.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controller.models import IPsecNode, IPsecPolicy
from hack.labkit import crdgen

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "IPsecPolicy": ROOT / "crds" / "ipsecpolicies.strongmesh.io.yaml",
    "IPsecNode": ROOT / "crds" / "ipsecnodes.strongmesh.io.yaml",
}
K8S_VERSIONS = ["1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]
# Keywords Kubernetes rejects in a structural schema (or that would make it non-structural).
FORBIDDEN_KEYWORDS = {"$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs", "title"}

Json = dict[str, Any]


def load_crd(kind: str) -> Json:
    data = yaml.safe_load(CRD_FILES[kind].read_text())
    assert isinstance(data, dict)
    return data


def open_api_schema(kind: str) -> Json:
    schema = load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def walk(node: Json, path: str = "") -> Iterator[tuple[str, Json]]:
    """Every schema node with a readable path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


# Formats Kubernetes knows that jsonschema's checker does not (or checks differently).
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("cidr", raises=ValueError)
def _is_cidr(value: object) -> bool:
    # Kubernetes uses Go's net.ParseCIDR, which accepts host bits (10.0.0.1/24).
    return not isinstance(value, str) or bool(ipaddress.ip_network(value, strict=False))


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(dt.datetime.fromisoformat(value))


def schema_errors(kind: str, obj: Json) -> list[str]:
    validator = jsonschema.Draft7Validator(open_api_schema(kind), format_checker=FORMATS)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]


def built_policy() -> Json:
    """A full policy written in the test, so the schema is exercised even without examples/."""
    return {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": "cluster-ipsec"},
        "spec": {
            "nodeSelector": {
                "matchLabels": {"kubernetes.io/os": "linux"},
                "matchExpressions": [
                    {"key": "node-role.kubernetes.io/edge", "operator": "DoesNotExist"}
                ],
            },
            "ipsecSubnets": ["10.77.0.0/24"],
            "noIpsecSubnets": ["10.77.0.200/32"],
            "enforcement": "Optional",
            "mode": "Transport",
            "ike": {
                "version": 2,
                "proposals": ["aes128-sha256-modp2048!"],
                "rekeyTime": "4h",
                "dpdDelay": "30s",
                "dpdAction": "restart",
            },
            "esp": {"proposals": ["aes128gcm16!"], "rekeyTime": "1h"},
            "forceUdpEncapsulation": False,
            "credentials": {
                "secretRef": {"name": "ipsec-credentials", "namespace": "strongmesh-system"}
            },
            "certificateExpiry": {
                "infoDays": 30,
                "warnDays": 14,
                "errorDays": 7,
                "criticalDays": 3,
            },
            "xfrmAcqExpiresSeconds": 6,
            "logLevel": 1,
            "shutdownTimeoutSeconds": 30,
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllNodesEnforcing",
                    "message": "3/3 nodes enforce generation 1",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "summary": {"selectedNodes": 3, "readyNodes": 3, "ready": "3/3", "establishedSAs": 6},
            "nodes": [{"name": "node-1", "enforcing": True, "generation": 1, "establishedSAs": 2}],
        },
    }


def example_policies() -> list[tuple[str, Json]]:
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and doc.get("kind") == "IPsecPolicy":
                found.append((f"{path.name}#{i}", doc))
    return found


# --- drift ---------------------------------------------------------------------------------


def test_crds_on_disk_match_the_models() -> None:
    drift = crdgen.differences(ROOT)
    assert not drift, f"run `make crds`: {sorted(map(str, drift))} differ from controller/models"


# --- valid for Kubernetes ------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_crd_is_a_strictly_valid_apiextensions_v1_object(kind: str, version: str) -> None:
    kubernetes_validate.validate(load_crd(kind), version, strict=True)


@pytest.mark.parametrize(
    ("kind", "plural", "short_name"),
    [("IPsecPolicy", "ipsecpolicies", "ipp"), ("IPsecNode", "ipsecnodes", "ipn")],
)
def test_crd_is_cluster_scoped_with_names_and_status_subresource(
    kind: str, plural: str, short_name: str
) -> None:
    crd = load_crd(kind)
    assert crd["metadata"]["name"] == f"{plural}.strongmesh.io"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == [short_name]
    assert crd["spec"]["names"]["categories"] == ["strongmesh"]
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "IPsecPolicy",
            [
                ("Ready", ".status.summary.ready"),
                ("SAs", ".status.summary.establishedSAs"),
                ("Enforcement", ".spec.enforcement"),
                ("Mode", ".spec.mode"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
        ("IPsecNode", [("Addresses", ".spec.addresses"), ("Age", ".metadata.creationTimestamp")]),
    ],
)
def test_printer_columns_show_the_agreed_fields(kind: str, columns: list[tuple[str, str]]) -> None:
    shown = [
        (c["name"], c["jsonPath"])
        for c in load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    for column in columns:
        assert column in shown


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_printer_columns_point_at_fields_of_the_schema(kind: str) -> None:
    schema = open_api_schema(kind)
    for column in load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        node = schema
        for part in re.sub(r"\[\*\]", "", path).strip(".").split("."):
            node = node.get("items", node)
            assert part in node.get("properties", {}), f"{kind} column {path}: no field {part}"
            node = node["properties"][part]


def test_ipsec_node_gets_a_sas_column_once_its_status_counts_sas() -> None:
    from pydantic import Field

    from controller.models.common import ApiModel

    class CountingStatus(ApiModel):
        established_sas: int = Field(default=0, alias="establishedSAs")

    with_count = {c["name"]: c["jsonPath"] for c in crdgen.node_columns(CountingStatus)}
    assert with_count["SAs"] == ".status.establishedSAs"
    without = {c["name"] for c in crdgen.node_columns(ApiModel)}
    assert "SAs" not in without
    assert {"Addresses", "Age"} <= without


# --- structural schema ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_schema_is_structural(kind: str) -> None:
    problems = []
    for path, node in walk(open_api_schema(kind)):
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if used := FORBIDDEN_KEYWORDS & node.keys():
            problems.append(f"{path}: {sorted(used)}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
    assert not problems


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_metadata_is_left_to_the_api_server(kind: str) -> None:
    assert open_api_schema(kind)["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_unknown_fields_are_preserved_nowhere(kind: str) -> None:
    preserved = [
        p for p, n in walk(open_api_schema(kind)) if "x-kubernetes-preserve-unknown-fields" in n
    ]
    assert preserved == []


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_every_default_validates_against_its_own_schema(kind: str) -> None:
    # The API server rejects a CRD whose default would not survive validation and pruning.
    for path, node in walk(open_api_schema(kind)):
        if "default" in node:
            errors = list(jsonschema.Draft7Validator(node).iter_errors(node["default"]))
            assert not errors, f"{path}: {errors[0].message}"


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_list_map_keys_are_required_fields_of_the_items(kind: str) -> None:
    maps = 0
    for path, node in walk(open_api_schema(kind)):
        if node.get("x-kubernetes-list-type") == "map":
            maps += 1
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), f"{path}: map key {key}"
    assert maps >= 1


def test_conditions_are_a_list_keyed_by_type() -> None:
    conditions = open_api_schema("IPsecPolicy")["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_subnets_carry_the_cidr_format() -> None:
    spec = open_api_schema("IPsecPolicy")["properties"]["spec"]["properties"]
    assert spec["ipsecSubnets"]["items"]["format"] == "cidr"
    assert spec["noIpsecSubnets"]["items"]["format"] == "cidr"


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_cel_rules_only_read_fields_that_always_exist(kind: str) -> None:
    # `self.x` on an absent field is a runtime error in CEL: each must be required or defaulted
    # (or only tested with has(), which is safe on an absent field).
    rules = 0
    for path, node in walk(open_api_schema(kind)):
        for validation in node.get("x-kubernetes-validations", []):
            rules += 1
            assert validation["message"]
            for name in re.findall(r"(?<!has\()self\.(\w+)", validation["rule"]):
                field = node["properties"].get(name)
                assert field is not None, f"{path}: rule reads unknown field {name}"
                assert "default" in field or name in node.get("required", []), f"{path}.{name}"
    if kind == "IPsecPolicy":
        assert rules >= 1


# --- what the schema accepts and rejects ---------------------------------------------------


def test_examples_contain_at_least_one_policy() -> None:
    assert example_policies(), "examples/*.yaml hold no IPsecPolicy"


@pytest.mark.parametrize(
    ("name", "policy"),
    [("built-in-test", built_policy()), *example_policies()],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_policy_validates_against_the_crd_schema(name: str, policy: Json) -> None:
    assert schema_errors("IPsecPolicy", policy) == []
    IPsecPolicy.model_validate(policy)  # and the model agrees


def test_minimal_policy_validates() -> None:
    policy = {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "ipsecSubnets": ["10.0.0.0/16"],
            "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
        },
    }
    assert schema_errors("IPsecPolicy", policy) == []


def test_ipsec_node_as_an_agent_writes_it_validates() -> None:
    node = IPsecNode.model_validate(
        {
            "metadata": {"name": "node-1"},
            "spec": {"addresses": ["10.77.0.1"], "identity": "CN=node-1"},
            "status": {
                "policies": [{"name": "p", "generation": 2}],
                "sas": [{"policy": "p", "peer": "10.77.0.2", "state": "INSTALLED"}],
                "lastHeartbeat": "2026-01-01T00:00:00Z",
            },
        }
    )
    assert schema_errors("IPsecNode", node.to_api()) == []


def _with(path: str, value: object) -> Json:
    policy = built_policy()
    *parents, leaf = path.split(".")
    node = policy
    for part in parents:
        node = node[part]
    node[leaf] = value
    return policy


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        ("spec.enforcement", "Sometimes", "is not one of"),
        ("spec.mode", "Bridge", "is not one of"),
        ("spec.ike.version", 3, "is not one of"),
        ("spec.ike.dpdAction", "hold", "is not one of"),
        ("spec.ike.rekeyTime", "4 hours", "does not match"),
        ("spec.ike.proposals", [], "should be non-empty"),
        ("spec.logLevel", 9, "is greater than the maximum"),
        ("spec.logLevel", -2, "is less than the minimum"),
        ("spec.xfrmAcqExpiresSeconds", 0, "is less than the minimum"),
        ("spec.shutdownTimeoutSeconds", 3601, "is greater than the maximum"),
        ("spec.ipsecSubnets", [], "should be non-empty"),
        ("spec.ipsecSubnets", ["10.0.0.0/33"], "is not a 'cidr'"),
        ("spec.noIpsecSubnets", ["not-a-network"], "is not a 'cidr'"),
        ("spec.certificateExpiry.warnDays", -1, "is less than the minimum"),
        ("spec.nodeSelector.matchExpressions", [{"key": "a", "operator": "Is"}], "is not one of"),
        ("spec.credentials.secretRef", {"name": "x"}, "'namespace' is a required property"),
        ("status.conditions", [{"type": "Ready", "status": "Yes"}], "is not one of"),
    ],
)
def test_bad_values_are_rejected_by_the_schema(path: str, value: object, why: str) -> None:
    errors = schema_errors("IPsecPolicy", _with(path, value))
    assert any(why in e for e in errors), errors


def test_policy_without_credentials_is_rejected() -> None:
    policy = built_policy()
    del policy["spec"]["credentials"]
    assert any(
        "'credentials' is a required property" in e for e in schema_errors("IPsecPolicy", policy)
    )


def test_schema_defaults_are_the_model_defaults() -> None:
    # What `kubectl get -o yaml` shows after defaulting is what the agent would assume.
    spec = open_api_schema("IPsecPolicy")["properties"]["spec"]["properties"]
    model = IPsecPolicy.model_validate(
        {
            "metadata": {"name": "p"},
            "spec": {
                "ipsecSubnets": ["10.0.0.0/8"],
                "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
            },
        }
    ).spec.to_api()
    for name, node in spec.items():
        if "default" in node and node["default"] != {}:
            assert node["default"] == model[name], name
    for section in ("ike", "esp", "certificateExpiry"):
        for name, node in spec[section]["properties"].items():
            assert node["default"] == model[section][name], f"{section}.{name}"


def test_generation_rejects_a_model_that_cannot_be_structural() -> None:
    raw = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    with pytest.raises(crdgen.CrdGenError, match="non-null variants"):
        crdgen.structural(copy.deepcopy(raw), {})
    with pytest.raises(crdgen.CrdGenError, match="no structural form"):
        crdgen.structural({"type": "object", "patternProperties": {}}, {})


def test_optional_fields_become_plain_types_without_null() -> None:
    node = crdgen.structural(
        {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "X"}, {}
    )
    assert node == {"type": "integer"}
