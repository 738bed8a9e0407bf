"""The chart as installed on a real kube-apiserver, and what its CRDs serve.

The session's control plane got the chart the way ``helm install`` renders it (the real Helm
engine) applied with the real kubectl (``hack.labkit.identities.install_chart``). Helm installs
the CRDs from templates/ (so that upgrades update them); those CRDs must serve IPsecPolicy with
defaulting, validation and the printer columns. ``crds/`` (for clusters that manage CRDs
themselves, ``crds.enabled=false``) must be accepted by the server as well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import dynamic
from kubernetes.client.exceptions import ApiException

from hack.labkit.identities import render_chart
from tests.api.server import CHART_VALUES, CREDENTIAL_SECRETS, KubeApiServer

pytestmark = pytest.mark.api

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "strongmesh-system"
# Kinds the chart must bring to a cluster: CRDs, RBAC, the admission policy, the workloads.
REQUIRED_KINDS = {
    "CustomResourceDefinition",
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
    "DaemonSet",
    "Service",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}

Json = dict[str, Any]


def rendered() -> list[Json]:
    return render_chart(CHART_VALUES, NAMESPACE)


def dynamic_client(apiserver: KubeApiServer) -> Any:
    return dynamic.DynamicClient(apiserver.client())  # type: ignore[no-untyped-call]


def policy(name: str, **spec: Any) -> Json:
    return {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": name},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": "ipsec-credentials", "namespace": NAMESPACE}},
            **spec,
        },
    }


def test_every_rendered_object_is_served_as_rendered(apiserver: KubeApiServer) -> None:
    docs = rendered()
    assert {d["kind"] for d in docs} >= REQUIRED_KINDS
    dyn = dynamic_client(apiserver)
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        served = resource.get(name=doc["metadata"]["name"],
                              namespace=doc["metadata"].get("namespace")).to_dict()
        assert served["metadata"].get("labels") == doc["metadata"].get("labels"), doc["kind"]


def test_applying_the_chart_again_changes_nothing(apiserver: KubeApiServer) -> None:
    """``helm upgrade`` with the same values: the server sees no difference (``kubectl diff``
    exits 0 when the server-side dry run of every object equals what is live)."""
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": rendered()})
    result = apiserver.kubectl("diff", "-f", "-", input=text, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_credential_secrets_are_readable_only_by_name(apiserver: KubeApiServer) -> None:
    dyn = dynamic_client(apiserver)
    config = dyn.resources.get(api_version="v1", kind="ConfigMap").get(
        name="strongmesh-agent-charon", namespace=NAMESPACE
    )
    assert "load_modular = yes" in config.data["strongswan.conf"]
    rbac = "rbac.authorization.k8s.io/v1"
    roles = dyn.resources.get(api_version=rbac, kind="Role").get(namespace=NAMESPACE)
    secret_rules = {role.metadata.name: r for role in roles.items for r in role.rules
                    if "secrets" in r.resources}
    assert len(secret_rules) == 2, "the agent and the operator each get one Role on Secrets"
    for name, rule in secret_rules.items():
        # only the operator may read the issuer Secret, which holds the CA's private key
        issuers = ["mesh-ca"] if "operator" in name else []
        assert list(rule.resourceNames) == [*CREDENTIAL_SECRETS, *issuers], name
    cluster_roles = dyn.resources.get(api_version=rbac, kind="ClusterRole").get(
        label_selector="app.kubernetes.io/name=strongmesh"
    )
    assert cluster_roles.items
    for role in cluster_roles.items:
        assert all("secrets" not in rule.resources for rule in role.rules), role.metadata.name


def test_chart_crds_carry_the_keep_annotation_and_helm_labels(apiserver: KubeApiServer) -> None:
    crds = dynamic_client(apiserver).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    for name in ("ipsecpolicies.strongmesh.io", "ipsecnodes.strongmesh.io"):
        crd = crds.get(name=name).to_dict()
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert established["Established"] == "True"
        assert established["NamesAccepted"] == "True"


def test_crds_directory_is_accepted_by_the_server(apiserver: KubeApiServer) -> None:
    """``kubectl apply -f crds/`` (CRDs managed outside the chart): a server-side dry run
    validates them as kube-apiserver would (structural schema, CEL rules compile)."""
    documents = [
        yaml.safe_load(path.read_text()) for path in sorted((ROOT / "crds").glob("*.yaml"))
    ]
    assert documents
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    out = apiserver.kubectl("apply", "--dry-run=server", "-f", "-", input=text).stdout
    for doc in documents:
        assert f"customresourcedefinition.apiextensions.k8s.io/{doc['metadata']['name']}" in out


def test_policy_gets_the_schema_defaults_through_the_chart_crd(apiserver: KubeApiServer) -> None:
    policies = dynamic_client(apiserver).resources.get(
        api_version="strongmesh.io/v1alpha1", kind="IPsecPolicy"
    )
    spec = policies.create(body=policy("defaults")).to_dict()["spec"]
    assert spec["enforcement"] == "Required"
    assert spec["mode"] == "Transport"
    assert spec["ike"]["version"] == 2
    assert spec["esp"]["proposals"] == ["aes128gcm16!"]
    assert spec["certificateExpiry"]["criticalDays"] == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("enforcement", "Sometimes",
         'spec.enforcement: Unsupported value: "Sometimes": supported values: "Required", '
         '"Optional"'),
        ("ike", {"version": 3},
         'spec.ike.version: Unsupported value: 3: supported values: "1", "2"'),
        ("logLevel", 9, "spec.logLevel: Invalid value: 9: spec.logLevel in body should be less "
         "than or equal to 4"),
    ],
)
def test_policy_with_a_bad_value_is_refused(
    apiserver: KubeApiServer, field: str, value: Any, message: str
) -> None:
    policies = dynamic_client(apiserver).resources.get(
        api_version="strongmesh.io/v1alpha1", kind="IPsecPolicy"
    )
    with pytest.raises(ApiException) as refused:
        policies.create(body=policy("bad", **{field: value}))
    assert refused.value.status == 422
    assert message in json.loads(refused.value.body or "{}")["message"]
