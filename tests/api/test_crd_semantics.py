"""What kube-apiserver does with our CRDs, where the operator, the agent or users rely on it.

Each test names the behaviour and who depends on it. The answers are kube-apiserver's own
(schema validation, CEL rules, the status subresource, finalizers, patches, selectors, tables),
through the official client as the cluster admin.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.operator.finalizer import FINALIZER
from tests.api.server import KubeApiServer

pytestmark = pytest.mark.api

GROUP, VERSION, PLURAL = "strongmesh.io", "v1alpha1", "ipsecpolicies"
JSON_PATCH = "application/json-patch+json"


def policy(name: str = "mesh", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ipsecSubnets": ["10.77.0.0/24"],
        "credentials": {
            "secretRef": {"name": "ipsec-credentials", "namespace": "strongmesh-system"}
        },
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPsecPolicy",
        "metadata": {"name": name},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


@pytest.fixture
def crs(apiserver: KubeApiServer) -> Any:
    return k8s.CustomObjectsApi(apiserver.client())


@pytest.fixture
def core(apiserver: KubeApiServer) -> Any:
    return k8s.CoreV1Api(apiserver.client())


def refusal(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    body: dict[str, Any] = json.loads(caught.value.body or "{}")
    return int(caught.value.status), body


# ---- schema: users get the server's field errors (kubectl apply prints them) -----------------
@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"enforcement": "Maybe"}, "spec.enforcement",
         'Unsupported value: "Maybe": supported values: "Required", "Optional"'),
        ({"ipsecSubnets": None}, "spec.ipsecSubnets", "Required value"),
        ({"logLevel": "loud"}, "spec.logLevel",
         'Invalid value: "string": spec.logLevel in body must be of type integer: "string"'),
        ({"ipsecSubnets": ["10.0.0.0/33"]}, "spec.ipsecSubnets[0]",
         'Invalid value: "10.0.0.0/33": spec.ipsecSubnets[0] in body must be of type cidr: '
         '"10.0.0.0/33"'),
    ],
)
def test_schema_violations_are_422_with_the_field_and_message(
    crs: Any, spec: dict[str, Any], field: str, message: str
) -> None:
    status, body = refusal(crs.create_cluster_custom_object, GROUP, VERSION, PLURAL,
                           policy(**spec))
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["details"]["kind"] == "IPsecPolicy"
    causes = {(c["field"], c["message"]) for c in body["details"]["causes"]}
    assert (field, message) in causes, causes


def test_cel_rule_of_the_crd_is_enforced(crs: Any) -> None:
    """certificateExpiry thresholds must decrease (a CEL rule, compiled by the real server)."""
    thresholds = {"infoDays": 30, "warnDays": 60, "errorDays": 7, "criticalDays": 3}
    status, body = refusal(crs.create_cluster_custom_object, GROUP, VERSION, PLURAL,
                           policy(certificateExpiry=thresholds))
    assert status == 422
    (cause,) = body["details"]["causes"]
    assert cause["field"] == "spec.certificateExpiry"
    assert cause["message"] == (
        "Invalid value: thresholds must satisfy criticalDays <= errorDays <= warnDays <= infoDays"
    )


def test_unknown_fields_are_pruned_by_default_and_refused_when_strict(crs: Any) -> None:
    """kubectl apply validates strictly; other clients' typos are dropped, not stored."""
    status, body = refusal(crs.create_cluster_custom_object, GROUP, VERSION, PLURAL,
                           policy(colour="blue"), field_validation="Strict")
    assert status == 400
    assert 'unknown field "spec.colour"' in body["message"]
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy(colour="blue"))
    assert "colour" not in created["spec"]


def test_duplicate_policy_rows_in_an_ipsec_node_are_refused(crs: Any) -> None:
    """status.policies is a map list keyed by name: an agent cannot report a policy twice."""
    crs.create_cluster_custom_object(GROUP, VERSION, "ipsecnodes", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "IPsecNode", "metadata": {"name": "n1"},
    })
    twice = [{"name": "mesh", "generation": 1}, {"name": "mesh", "generation": 2}]
    status, body = refusal(crs.patch_cluster_custom_object_status, GROUP, VERSION,
                           "ipsecnodes", "n1", {"status": {"policies": twice}})
    assert status == 422
    (cause,) = body["details"]["causes"]
    assert (cause["reason"], cause["field"]) == ("FieldValueDuplicate", "status.policies[1]")


# ---- generation and the status subresource: what the agent and the operator key on ----------
def test_spec_change_bumps_generation_and_a_main_resource_write_keeps_status(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    crs.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, "mesh", {"status": {"observedGeneration": 1}})
    patched = crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh",
        {"spec": {"mode": "Tunnel"}, "status": {"observedGeneration": 99}})
    assert patched["metadata"]["generation"] == 2
    assert patched["status"]["observedGeneration"] == 1


def test_status_write_changes_nothing_but_status(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    patched = crs.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, "mesh",
        {"metadata": {"labels": {"x": "y"}}, "spec": {"mode": "Tunnel"},
         "status": {"observedGeneration": 1}})
    assert patched["metadata"]["generation"] == 1
    assert "labels" not in patched["metadata"]
    assert patched["spec"]["mode"] == "Transport"
    assert patched["status"]["observedGeneration"] == 1


def test_metadata_change_does_not_bump_generation(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    patched = crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh", {"metadata": {"labels": {"a": "b"}}})
    assert patched["metadata"]["generation"] == 1


def test_noop_write_keeps_the_resource_version(crs: Any) -> None:
    """The operator compares resourceVersions to drop stale watch events."""
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    patched = crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh", {"spec": {"mode": "Transport"}})
    assert patched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# ---- the operator's finalizer writes --------------------------------------------------------
def test_finalizer_json_patch_with_a_stale_resource_version_test_is_refused(crs: Any) -> None:
    """The operator adds its finalizer with a JSON patch that first tests resourceVersion; a
    concurrent change makes the test fail (422, nothing applied) and it retries."""
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", {"spec": {"logLevel": 2}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion",
         "value": created["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]
    status, _ = refusal(crs.patch_cluster_custom_object, GROUP, VERSION, PLURAL, "mesh", ops,
                        _content_type=JSON_PATCH)
    assert status == 422
    current = crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert "finalizers" not in current["metadata"]
    ops[0]["value"] = current["metadata"]["resourceVersion"]
    patched = crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", ops,
                                              _content_type=JSON_PATCH)
    assert patched["metadata"]["finalizers"] == [FINALIZER]


def test_delete_with_the_finalizer_marks_a_new_generation_then_removing_it_deletes(
    crs: Any,
) -> None:
    """Marking for deletion is a new generation (the status rows then say "current is 2"); a
    deleting object takes no new finalizer; the operator's removal (test + remove) ends it."""
    body = policy()
    body["metadata"]["finalizers"] = [FINALIZER]
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    crs.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    marked = crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["generation"] == 2
    status, body_ = refusal(crs.patch_cluster_custom_object, GROUP, VERSION, PLURAL, "mesh",
                            {"metadata": {"finalizers": [FINALIZER, "other.io/x"]}})
    assert status == 422, body_
    crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", [
        {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ], _content_type=JSON_PATCH)
    status, _ = refusal(crs.get_cluster_custom_object, GROUP, VERSION, PLURAL, "mesh")
    assert status == 404


# ---- selectors: the agent selects by label, watches Secrets and its Node by name ------------
@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=a", ["one"]),
        ("tier!=a", ["three", "two"]),
        ("tier in (a,b)", ["one", "two"]),
        ("tier notin (a)", ["three", "two"]),
        ("tier", ["one", "two"]),
        ("!tier", ["three"]),
    ],
)
def test_label_selectors_filter_lists(crs: Any, selector: str, expected: list[str]) -> None:
    for name, labels in (("one", {"tier": "a"}), ("two", {"tier": "b"}), ("three", {})):
        body = policy(name)
        body["metadata"]["labels"] = labels
        crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    listing = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=selector)
    assert sorted(i["metadata"]["name"] for i in listing["items"]) == expected


def test_field_selector_by_name_and_an_unsupported_field(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("one"))
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("two"))
    listing = crs.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, field_selector="metadata.name=two")
    assert [i["metadata"]["name"] for i in listing["items"]] == ["two"]
    status, body = refusal(crs.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                           field_selector="spec.mode=Tunnel")
    assert status == 400
    assert body["message"] == "field label not supported: spec.mode"


def test_node_field_selector_by_name(core: Any) -> None:
    """The agent's Node watch: only its own Node."""
    for name in ("node-1", "node-2"):
        core.create_node({"metadata": {"name": name}})
    nodes = core.list_node(field_selector="metadata.name=node-1").items
    assert [n.metadata.name for n in nodes] == ["node-1"]


# ---- what users see -------------------------------------------------------------------------
def test_table_output_uses_the_printer_columns(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    crs.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, "mesh",
        {"status": {"summary": {"ready": "2/3", "establishedSAs": 4, "maxInnerPacket": 1446}}})
    table = crs.list_cluster_custom_object(
        GROUP, VERSION, PLURAL,
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert table["kind"] == "Table"
    columns = table["columnDefinitions"]
    assert [c["name"] for c in columns] == [
        "Name", "Ready", "SAs", "Enforcement", "Mode", "Max-Packet", "Age"]
    assert [c["name"] for c in columns if c["priority"]] == ["Max-Packet"]  # -o wide only
    cells = table["rows"][0]["cells"]
    assert cells[:6] == ["mesh", "2/3", 4, "Required", "Transport", 1446]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_events_about_cluster_scoped_objects_live_in_default(core: Any) -> None:
    """Why the operator posts its Events in ``default`` (``--event-namespace``): the server
    refuses an Event about a cluster-scoped object in any other namespace."""
    def event(namespace: str) -> dict[str, Any]:
        return {
            "metadata": {"generateName": "mesh.", "namespace": namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPsecPolicy",
                               "name": "mesh"},
            "reason": "Test", "message": "m", "type": "Normal",
        }

    status, body = refusal(core.create_namespaced_event, "strongmesh-system",
                           event("strongmesh-system"))
    assert status == 422
    assert body["details"]["causes"][0]["field"] == "involvedObject.namespace"
    core.create_namespaced_event("default", event("default"))
    found = core.list_event_for_all_namespaces(
        field_selector="involvedObject.kind=IPsecPolicy,involvedObject.name=mesh").items
    assert [(e.metadata.namespace, e.reason) for e in found] == [("default", "Test")]
