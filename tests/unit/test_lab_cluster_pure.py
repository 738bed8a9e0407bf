"""Pure parts of the lab's cluster mode: Node objects, paths, readiness, status shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from hack.labkit.lab.cluster import (
    node_object,
    object_path,
    policy_ready,
    status_document,
)
from hack.labkit.lab.report import format_kubectl


@pytest.mark.parametrize(
    ("index", "count", "group"),
    [(1, 3, "a"), (2, 3, "a"), (3, 3, "b"), (1, 1, "a"), (2, 2, "b")],
)
def test_nodes_are_labelled_so_a_selector_can_leave_the_last_one_out(
    index: int, count: int, group: str
) -> None:
    node = node_object(index, count)
    assert node["metadata"]["name"] == f"node-{index}"
    assert node["metadata"]["labels"]["lab.strongmesh.io/group"] == group
    assert node["metadata"]["labels"]["strongmesh.io/lab-index"] == str(index)
    assert {"type": "InternalIP", "address": f"10.77.0.{index}"} in node["status"]["addresses"]


@pytest.mark.parametrize(
    ("kind", "name", "namespace", "path"),
    [
        ("Secret", "creds", "strongmesh-system",
         "/api/v1/namespaces/strongmesh-system/secrets/creds"),
        ("Secret", None, None, "/api/v1/namespaces/default/secrets"),
        ("IPsecPolicy", "p", None, "/apis/strongmesh.io/v1alpha1/ipsecpolicies/p"),
        ("IPsecNode", None, None, "/apis/strongmesh.io/v1alpha1/ipsecnodes"),
        ("Namespace", "x", None, "/api/v1/namespaces/x"),
    ],
)
def test_object_paths(kind: str, name: str | None, namespace: str | None, path: str) -> None:
    assert object_path(kind, name, namespace) == path


def policy(generation: int, observed: int | None, ready: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": []}
    if observed is not None:
        status["observedGeneration"] = observed
    if ready is not None:
        status["conditions"].append({"type": "Ready", "status": ready})
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        (policy(1, 1, "True"), True),
        (policy(2, 1, "True"), False),  # Ready for the previous generation only
        (policy(1, 1, "False"), False),
        (policy(1, None, None), False),  # the operator has not written yet
        (None, False),
    ],
)
def test_ready_means_ready_for_the_current_generation(
    obj: dict[str, Any] | None, ready: bool
) -> None:
    assert policy_ready(obj) is ready


def test_ipsecnode_becomes_the_status_file_shape_the_report_reads() -> None:
    doc = status_document({
        "metadata": {"name": "node-1"},
        "spec": {"addresses": ["10.77.0.1"], "identity": "CN=x"},
        "status": {"sas": [{"peer": "10.77.0.2"}], "policies": [], "errors": []},
    })
    assert doc == {
        "node": "node-1", "addresses": ["10.77.0.1"], "identity": "CN=x",
        "status": {"sas": [{"peer": "10.77.0.2"}], "policies": [], "errors": []},
    }


def test_demo_ends_with_kubectl_output_and_says_when_it_failed() -> None:
    shown = {"command": "kubectl get ipsecpolicies,ipsecnodes", "exit": 0,
             "stdout": "NAME   READY\nnode-mesh   3/3\n", "stderr": ""}
    assert format_kubectl({"kubectl": {"get": shown}}) == (
        "$ kubectl get ipsecpolicies,ipsecnodes\nNAME   READY\nnode-mesh   3/3"
    )
    failed = format_kubectl({"kubectl": {"get": shown | {"exit": 1, "stderr": "refused"}}})
    assert failed.endswith("(exit 1: refused)")
    assert format_kubectl({"kubectl": {}}) == ""


@pytest.mark.parametrize("index", [1, 2, 3, 12])
def test_nodes_own_the_pod_cidr_of_their_pod_host(index: int) -> None:
    import kubernetes_validate

    node = node_object(index, 3)
    assert node["spec"] == {"podCIDR": f"10.244.{index}.0/24",
                            "podCIDRs": [f"10.244.{index}.0/24"]}
    kubernetes_validate.validate(node, "1.32", strict=True)


def test_certificates_are_read_per_policy_from_the_ipsecnodes() -> None:
    from hack.labkit.lab.cluster import policy_certificates

    cert = {"subject": "O=strongmesh, CN=node-1", "issuer": "C=US, O=strongmesh, CN=CA2",
            "notAfter": "2027-01-06T06:20:57Z"}
    items: list[dict[str, Any]] = [
        {"metadata": {"name": "node-1"}, "status": {"policies": [
            {"name": "other", "generation": 1},
            {"name": "node-mesh", "generation": 1, "certificate": cert}]}},
        {"metadata": {"name": "node-2"}, "status": {"policies": [
            {"name": "node-mesh", "generation": 1}]}},
        {"metadata": {"name": "node-3"}},
    ]
    assert policy_certificates(items, "node-mesh") == {"node-1": cert, "node-2": None,
                                                       "node-3": None}


def test_secret_values_come_from_data_or_string_data() -> None:
    import base64

    from hack.labkit.lab.cluster import secret_text

    secret = {"data": {"tls.crt": base64.b64encode(b"PEM").decode()},
              "stringData": {"ca.crt": "BUNDLE"}}
    assert (secret_text(secret, "tls.crt"), secret_text(secret, "ca.crt"),
            secret_text(secret, "tls.key")) == ("PEM", "BUNDLE", "")


def test_the_lab_issuer_example_is_a_valid_issuer() -> None:
    """examples/policy-issuer.yaml (what the identity lab tests run) holds an issuer Secret the
    operator accepts. What ``hack/make-certs --issuer-secret-out`` writes:
    tests/integration/test_cli_validate_process.py."""
    from pathlib import Path

    from controller.manifests import find_secret, load_documents

    root = Path(__file__).resolve().parents[2]
    secret = find_secret(load_documents(str(root / "examples" / "policy-issuer.yaml")),
                         "mesh-ca", "strongmesh-system")
    assert secret is not None
    assert valid_issuer_subject(secret) == "C=US, O=strongmesh, CN=strongmesh Example Issuer CA"


def valid_issuer_subject(secret: Mapping[str, Any]) -> str:
    """The CA subject of an issuer Secret the operator accepts without an error."""
    from controller.manifests import decode_secret
    from controller.models import CertificateExpiry
    from controller.validation import validate_issuer

    issuer, findings = validate_issuer(decode_secret(secret), CertificateExpiry())
    assert issuer is not None, findings
    assert [f for f in findings if f.severity == "error"] == []
    return issuer.subject
