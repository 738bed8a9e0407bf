"""The chart's rendered objects are accepted by an API server, and its CRDs serve policies.

Helm installs the CRDs from templates/ (so that upgrades update them): here the rendered CRDs
replace the ones the embedded API server started with, as `helm upgrade` would, and must then
serve IPsecPolicy with defaulting, validation and the printer columns.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import dynamic
from kubernetes.dynamic.exceptions import ResourceNotFoundError, UnprocessibleEntityError

pytestmark = pytest.mark.api

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "strongmesh"
NAMESPACE = "strongmesh-system"
# Kinds the embedded API server must take from this chart: CRDs, RBAC and the workloads.
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
}

Json = dict[str, Any]


@cache
def _rendered() -> tuple[Json, ...]:
    files = helm.Chart.load(str(CHART)).render({}, name="strongmesh", namespace=NAMESPACE)
    return tuple(
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    )


def rendered() -> list[Json]:
    return copy.deepcopy(list(_rendered()))


def apply(dyn: dynamic.DynamicClient, obj: Json) -> Any:
    """Create the object, or replace it (keeping resourceVersion) when it exists already."""
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    existing = [
        item
        for item in resource.get(namespace=namespace).items
        if item.metadata.name == obj["metadata"]["name"]
    ]
    if existing:
        obj["metadata"]["resourceVersion"] = existing[0].metadata.resourceVersion
        return resource.replace(body=obj, namespace=namespace)
    return resource.create(body=obj, namespace=namespace)


def install(apiserver: Any) -> tuple[dynamic.DynamicClient, set[str]]:
    """Apply every rendered object of a kind the server serves; returns the applied kinds."""
    api = apiserver.client()
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
    dyn = dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]
    applied: set[str] = set()
    for obj in rendered():
        try:
            dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            continue
        out = apply(dyn, obj)
        assert out.metadata.name == obj["metadata"]["name"]
        applied.add(obj["kind"])
    return dyn, applied


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


def test_rendered_objects_apply_to_the_api_server(apiserver: Any) -> None:
    dyn, applied = install(apiserver)
    assert applied >= REQUIRED_KINDS
    sas = dyn.resources.get(api_version="v1", kind="ServiceAccount").get(namespace=NAMESPACE)
    assert {s.metadata.name for s in sas.items} >= {"strongmesh-agent", "strongmesh-operator"}
    config = dyn.resources.get(api_version="v1", kind="ConfigMap").get(
        name="strongmesh-agent-charon", namespace=NAMESPACE
    )
    assert "load_modular = yes" in config.data["strongswan.conf"]
    rbac = "rbac.authorization.k8s.io/v1"
    roles = dyn.resources.get(api_version=rbac, kind="Role").get(namespace=NAMESPACE)
    secret_rules = [r for role in roles.items for r in role.rules if "secrets" in r.resources]
    assert secret_rules, "no Role grants the agent its credential Secrets"
    assert all(r.resourceNames for r in secret_rules), "Secrets readable beyond resourceNames"


def test_chart_crds_replace_the_served_crds_with_the_keep_annotation(apiserver: Any) -> None:
    dyn, _ = install(apiserver)
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    for name in ("ipsecpolicies.strongmesh.io", "ipsecnodes.strongmesh.io"):
        crd = crds.get(name=name).to_dict()
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_policy_gets_the_schema_defaults_through_the_chart_crd(apiserver: Any) -> None:
    dyn, _ = install(apiserver)
    policies = dyn.resources.get(api_version="strongmesh.io/v1alpha1", kind="IPsecPolicy")
    spec = policies.create(body=policy("defaults")).to_dict()["spec"]
    assert spec["enforcement"] == "Required"
    assert spec["mode"] == "Transport"
    assert spec["ike"]["version"] == 2
    assert spec["esp"]["proposals"] == ["aes128gcm16!"]
    assert spec["certificateExpiry"]["criticalDays"] == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [("enforcement", "Sometimes"), ("ike", {"version": 3}), ("logLevel", 9)],
)
def test_policy_with_a_bad_value_is_refused(apiserver: Any, field: str, value: Any) -> None:
    dyn, _ = install(apiserver)
    policies = dyn.resources.get(api_version="strongmesh.io/v1alpha1", kind="IPsecPolicy")
    with pytest.raises(UnprocessibleEntityError):
        policies.create(body=policy("bad", **{field: value}))


def test_kubectl_shows_the_printer_columns(apiserver: Any) -> None:
    dyn, _ = install(apiserver)
    dyn.resources.get(api_version="strongmesh.io/v1alpha1", kind="IPsecPolicy").create(
        body=policy("shown", enforcement="Optional")
    )
    table = apiserver.kubectl("get", "ipp").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "SAS", "ENFORCEMENT", "MODE", "AGE"]
    row = table[1].split()
    assert row[0] == "shown"
    assert "Optional" in row
    assert "Transport" in row
