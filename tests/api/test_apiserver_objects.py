"""Object semantics of the embedded API, through the official ``kubernetes`` client.

Each test states a behaviour of kube-apiserver that kopf, the operator, the agent or kubectl
relies on; the server must show it exactly (no emulator leniency).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.api

GROUP, VERSION, PLURAL = "strongmesh.io", "v1alpha1", "ipsecpolicies"
MERGE = "application/merge-patch+json"
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
        "spec": body,
    }


@pytest.fixture
def crs(apiserver: Any) -> Any:
    return k8s.CustomObjectsApi(apiserver.client())


@pytest.fixture
def core(apiserver: Any) -> Any:
    return k8s.CoreV1Api(apiserver.client())


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Controllers (garbage collector, namespace cleanup) act asynchronously, as in a cluster."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def missing(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


def error_body(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "{}")
    return body


def test_create_sets_server_owned_metadata_and_drops_status(crs: Any) -> None:
    body = policy()
    body["status"] = {"observedGeneration": 7}
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    meta = created["metadata"]
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert "status" not in created


def test_schema_defaults_are_applied_on_create(crs: Any) -> None:
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    assert created["spec"]["enforcement"] == "Required"
    assert created["spec"]["esp"]["proposals"] == ["aes128gcm16!"]


def test_unknown_fields_are_pruned_with_a_warning_by_default(crs: Any) -> None:
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy(colour="blue"))
    assert "colour" not in created["spec"]


def test_unknown_fields_are_rejected_with_strict_field_validation(crs: Any) -> None:
    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, policy(colour="blue"), field_validation="Strict"
        )
    assert caught.value.status == 400
    assert 'unknown field "spec.colour"' in error_body(caught.value)["message"]


@pytest.mark.parametrize(
    ("spec", "reason", "field", "message"),
    [
        (
            {"enforcement": "Maybe"},
            "FieldValueNotSupported",
            "spec.enforcement",
            'Unsupported value: "Maybe": supported values: "Required", "Optional"',
        ),
        ({"ipsecSubnets": None}, "FieldValueRequired", "spec.ipsecSubnets", "Required value"),
        (
            {"logLevel": "loud"},
            "FieldValueTypeInvalid",
            "spec.logLevel",
            'Invalid value: "string": spec.logLevel in body must be of type integer: "string"',
        ),
    ],
)
def test_schema_violations_are_422_invalid_with_causes(
    crs: Any, spec: dict[str, Any], reason: str, field: str, message: str
) -> None:
    body = policy(**spec)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    status = error_body(caught.value)
    assert caught.value.status == 422
    assert status["reason"] == "Invalid"
    assert status["details"]["kind"] == "IPsecPolicy"
    assert status["details"]["group"] == GROUP
    assert {"reason": reason, "field": field, "message": message} in status["details"]["causes"]
    assert status["message"] == f'IPsecPolicy.{GROUP} "mesh" is invalid: {field}: {message}'


def test_invalid_name_is_rejected(crs: Any) -> None:
    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy(name="Not_Valid"))
    assert caught.value.status == 422
    assert error_body(caught.value)["details"]["causes"][0]["field"] == "metadata.name"


def test_duplicate_create_is_409_already_exists(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    assert caught.value.status == 409
    assert error_body(caught.value)["reason"] == "AlreadyExists"


def test_get_of_missing_object_is_404_not_found(crs: Any) -> None:
    with pytest.raises(ApiException) as caught:
        crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "nope")
    assert caught.value.status == 404
    assert error_body(caught.value)["message"] == f'{PLURAL}.{GROUP} "nope" not found'


def test_spec_change_bumps_generation_and_keeps_status(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    crs.patch_cluster_custom_object_status(
        GROUP, VERSION, PLURAL, "mesh", {"status": {"observedGeneration": 1}}
    )
    patched = crs.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        "mesh",
        {"spec": {"mode": "Tunnel"}, "status": {"observedGeneration": 99}},
    )
    assert patched["metadata"]["generation"] == 2
    assert patched["status"]["observedGeneration"] == 1


def test_status_write_keeps_spec_metadata_and_generation(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    patched = crs.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        "mesh",
        {
            "metadata": {"labels": {"x": "y"}},
            "spec": {"mode": "Tunnel"},
            "status": {"observedGeneration": 1},
        },
    )
    assert patched["metadata"]["generation"] == 1
    assert "labels" not in patched["metadata"]
    assert patched["spec"]["mode"] == "Transport"
    assert patched["status"]["observedGeneration"] == 1


def test_metadata_change_does_not_bump_generation(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    patched = crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh", {"metadata": {"labels": {"a": "b"}}}
    )
    assert patched["metadata"]["generation"] == 1
    assert patched["metadata"]["labels"] == {"a": "b"}


def test_noop_write_keeps_resource_version(crs: Any) -> None:
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    patched = crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh", {"spec": {"mode": "Transport"}}
    )
    assert patched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_replace_with_stale_resource_version_is_409_conflict(crs: Any) -> None:
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", {"spec": {"logLevel": 2}})
    created["spec"]["logLevel"] = 3
    with pytest.raises(ApiException) as caught:
        crs.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", created)
    assert caught.value.status == 409
    assert error_body(caught.value)["reason"] == "Conflict"
    assert "the object has been modified" in error_body(caught.value)["message"]


def test_replace_with_current_resource_version_succeeds(crs: Any) -> None:
    current = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    current["spec"]["logLevel"] = 3
    replaced = crs.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", current)
    assert replaced["spec"]["logLevel"] == 3
    assert int(replaced["metadata"]["resourceVersion"]) > int(
        current["metadata"]["resourceVersion"]
    )


def test_replace_of_custom_resource_without_resource_version_is_invalid(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    with pytest.raises(ApiException) as caught:
        crs.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", policy())
    assert caught.value.status == 422
    assert error_body(caught.value)["details"]["causes"][0]["field"] == ("metadata.resourceVersion")


def test_merge_patch_with_stale_resource_version_is_409(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    with pytest.raises(ApiException) as caught:
        crs.patch_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            "mesh",
            {"metadata": {"resourceVersion": "1"}, "spec": {"logLevel": 2}},
        )
    assert caught.value.status == 409


def test_json_patch_failed_test_is_422_and_changes_nothing(crs: Any) -> None:
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    with pytest.raises(ApiException) as caught:
        crs.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, "mesh", ops, _content_type=JSON_PATCH
        )
    assert caught.value.status == 422
    current = crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert current == created


def test_json_patch_with_passing_test_applies(crs: Any) -> None:
    created = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    ops = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": created["metadata"]["resourceVersion"],
        },
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    patched = crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh", ops, _content_type=JSON_PATCH
    )
    assert patched["metadata"]["finalizers"] == ["x/y"]


def test_delete_with_finalizer_marks_then_removing_it_deletes(crs: Any) -> None:
    body = policy()
    body["metadata"]["finalizers"] = ["strongmesh.io/teardown"]
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    crs.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    marked = crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as caught:
        crs.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, "mesh", {"metadata": {"finalizers": ["a", "b"]}}
        )
    assert caught.value.status == 422
    crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "mesh", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as gone:
        crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert gone.value.status == 404


def test_delete_without_finalizers_removes_immediately(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    status = crs.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert status["status"] == "Success"
    assert crs.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"] == []


def test_list_carries_kind_api_version_and_resource_version(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("b"))
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("a"))
    listing = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    assert listing["kind"] == "IPsecPolicyList"
    assert listing["apiVersion"] == f"{GROUP}/{VERSION}"
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a", "b"]
    assert int(listing["metadata"]["resourceVersion"]) >= max(
        int(i["metadata"]["resourceVersion"]) for i in listing["items"]
    )


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=a", ["one"]),
        ("tier!=a", ["three", "two"]),
        ("tier in (a,b)", ["one", "two"]),
        ("tier notin (a)", ["three", "two"]),
        ("tier", ["one", "two"]),
        ("!tier", ["three"]),
        ("tier=a,zone=x", []),
    ],
)
def test_label_selectors_filter_lists(crs: Any, selector: str, expected: list[str]) -> None:
    for name, labels in (("one", {"tier": "a"}), ("two", {"tier": "b"}), ("three", {})):
        body = policy(name)
        body["metadata"]["labels"] = labels
        crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
    listing = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL, label_selector=selector)
    assert sorted(i["metadata"]["name"] for i in listing["items"]) == expected


def test_field_selector_on_name_and_unsupported_field(crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("one"))
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("two"))
    listing = crs.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, field_selector="metadata.name=two"
    )
    assert [i["metadata"]["name"] for i in listing["items"]] == ["two"]
    with pytest.raises(ApiException) as caught:
        crs.list_cluster_custom_object(GROUP, VERSION, PLURAL, field_selector="spec.mode=x")
    assert caught.value.status == 400


def test_namespaced_create_needs_an_existing_namespace(core: Any) -> None:
    secret = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"k": "v"})
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_secret("missing", secret)
    assert caught.value.status == 404
    created = core.create_namespaced_secret("default", secret)
    assert created.data == {"k": base64.b64encode(b"v").decode()}
    assert created.type == "Opaque"
    assert created.string_data is None


def test_default_namespaces_exist(core: Any) -> None:
    names = {n.metadata.name for n in core.list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_deleting_a_namespace_deletes_its_objects(core: Any) -> None:
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="gone")))
    core.create_namespaced_config_map(
        "gone", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="c"), data={"a": "b"})
    )
    core.delete_namespace("gone")
    eventually(lambda: missing(lambda: core.read_namespace("gone")))
    assert core.list_config_map_for_all_namespaces().items == []


def test_namespace_stays_terminating_while_contents_have_finalizers(core: Any) -> None:
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="slow")))
    core.create_namespaced_config_map(
        "slow", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="c", finalizers=["x/y"]))
    )
    core.delete_namespace("slow")
    eventually(
        lambda: bool(core.read_namespaced_config_map("c", "slow").metadata.deletion_timestamp)
    )
    assert core.read_namespace("slow").status.phase == "Terminating"
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(
            "slow", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="d"))
        )
    assert caught.value.status == 403
    core.patch_namespaced_config_map("c", "slow", {"metadata": {"finalizers": None}})
    eventually(lambda: missing(lambda: core.read_namespace("slow")))


def test_events_can_be_posted_and_found_by_involved_object(core: Any) -> None:
    event = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(generate_name="mesh."),
        involved_object=k8s.V1ObjectReference(
            kind="IPsecPolicy", name="mesh", api_version=f"{GROUP}/{VERSION}"
        ),
        reason="Invalid",
        message="bad",
        type="Warning",
    )
    created = core.create_namespaced_event("default", event)
    assert created.metadata.name.startswith("mesh.")
    found = core.list_event_for_all_namespaces(
        field_selector="involvedObject.kind=IPsecPolicy,involvedObject.name=mesh"
    )
    assert [e.reason for e in found.items] == ["Invalid"]


def test_strategic_merge_patch_merges_conditions_by_type(core: Any) -> None:
    node = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name="node-1"),
        status=k8s.V1NodeStatus(
            conditions=[
                k8s.V1NodeCondition(type="Ready", status="False"),
                k8s.V1NodeCondition(type="DiskPressure", status="False"),
            ]
        ),
    )
    core.create_node(node)
    patched = core.patch_node_status(
        "node-1",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        _content_type="application/strategic-merge-patch+json",
    )
    assert [(c.type, c.status) for c in patched.status.conditions] == [
        ("Ready", "True"),
        ("DiskPressure", "False"),
    ]


def test_server_side_apply_creates_then_removes_fields_it_no_longer_applies(
    apiserver: Any, crs: Any
) -> None:
    applied = policy()
    applied["metadata"]["labels"] = {"a": "1", "b": "2"}
    # An apply that creates answers 201, which this client maps to None: read it back.
    crs.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        "mesh",
        applied,
        field_manager="tester",
        _content_type="application/apply-patch+yaml",
    )
    created = crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
    assert created["metadata"]["labels"] == {"a": "1", "b": "2"}
    applied["metadata"]["labels"] = {"a": "1"}
    applied["spec"]["mode"] = "Tunnel"
    updated = crs.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        "mesh",
        applied,
        field_manager="tester",
        _content_type="application/apply-patch+yaml",
    )
    assert updated["metadata"]["labels"] == {"a": "1"}
    assert updated["spec"]["mode"] == "Tunnel"
    assert updated["metadata"]["generation"] == 2


def test_crds_created_through_the_api_are_served(apiserver: Any) -> None:
    ext: Any = k8s.ApiextensionsV1Api(apiserver.client())
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {
                                            "size": {"x-kubernetes-int-or-string": True}
                                        },
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
    )
    crd = ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    crs: Any = k8s.CustomObjectsApi(apiserver.client())
    for size in (3, "3Gi"):
        crs.create_namespaced_custom_object(
            "example.com",
            "v1",
            "default",
            "widgets",
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": f"w{size}".lower()},
                "spec": {"size": size},
            },
        )
    with pytest.raises(ApiException) as caught:
        crs.create_namespaced_custom_object(
            "example.com",
            "v1",
            "default",
            "widgets",
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "bad"},
                "spec": {"size": [1]},
            },
        )
    assert caught.value.status == 422
    ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as missing:
        crs.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert missing.value.status == 404


def test_table_output_uses_printer_columns(apiserver: Any, crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy())
    crs.patch_cluster_custom_object_status(
        GROUP,
        VERSION,
        PLURAL,
        "mesh",
        {"status": {"summary": {"ready": "2/3", "establishedSAs": 4}}},
    )
    table = crs.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Ready", "SAs", "Enforcement", "Mode", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["mesh", "2/3", 4, "Required", "Transport"]
    assert cells[5].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_duplicate_keys_in_a_map_list_are_invalid(crs: Any) -> None:
    crs.create_cluster_custom_object(
        GROUP,
        VERSION,
        "ipsecnodes",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPsecNode", "metadata": {"name": "n1"}},
    )
    twice = [{"name": "mesh", "generation": 1}, {"name": "mesh", "generation": 2}]
    with pytest.raises(ApiException) as caught:
        crs.patch_cluster_custom_object_status(
            GROUP, VERSION, "ipsecnodes", "n1", {"status": {"policies": twice}}
        )
    assert caught.value.status == 422
    assert error_body(caught.value)["details"]["causes"] == [
        {
            "reason": "FieldValueDuplicate",
            "field": "status.policies[1]",
            "message": 'Duplicate value: map[string]interface {}{"name":"mesh"}',
        }
    ]


def _owned_ipsec_node(crs: Any, core: Any) -> None:
    node = core.create_node(k8s.V1Node(metadata=k8s.V1ObjectMeta(name="node-1")))
    crs.create_cluster_custom_object(
        GROUP,
        VERSION,
        "ipsecnodes",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPsecNode",
            "metadata": {
                "name": "node-1",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": node.metadata.uid}
                ],
            },
        },
    )


def test_deleting_an_owner_deletes_its_dependents(crs: Any, core: Any) -> None:
    _owned_ipsec_node(crs, core)
    core.delete_node("node-1")
    assert crs.list_cluster_custom_object(GROUP, VERSION, "ipsecnodes")["items"] != []
    eventually(lambda: crs.list_cluster_custom_object(GROUP, VERSION, "ipsecnodes")["items"] == [])


def test_orphan_propagation_keeps_dependents_without_the_reference(crs: Any, core: Any) -> None:
    _owned_ipsec_node(crs, core)
    core.delete_node("node-1", propagation_policy="Orphan")
    kept = crs.get_cluster_custom_object(GROUP, VERSION, "ipsecnodes", "node-1")
    assert "ownerReferences" not in kept["metadata"]


def _post(url: str, body: dict[str, Any], query: str = "") -> tuple[int, dict[str, Any], Any]:
    request = urllib.request.Request(
        f"{url}?{query}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def test_unknown_fields_of_builtins_are_dropped_with_a_warning_or_rejected(
    apiserver: Any,
) -> None:
    url = f"{apiserver.url}/api/v1/namespaces/default/secrets"
    typo = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "colour": "x"},
        "stringdata": {"a": "b"},
    }
    code, body, _ = _post(url, typo, "fieldValidation=Strict")
    assert code == 400
    assert 'unknown field "stringdata"' in body["message"]
    assert 'unknown field "metadata.colour"' in body["message"]
    code, body, headers = _post(url, typo)
    assert code == 201
    assert "stringdata" not in body
    assert "colour" not in body["metadata"]
    assert '299 - "unknown field \\"stringdata\\""' in headers.get_all("Warning")


def test_cidr_format_is_checked(crs: Any) -> None:
    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, policy(ipsecSubnets=["10.0.0.0/33"])
        )
    assert caught.value.status == 422
    assert error_body(caught.value)["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.ipsecSubnets[0]",
            "message": 'Invalid value: "10.0.0.0/33": spec.ipsecSubnets[0] in body must be of '
            'type cidr: "10.0.0.0/33"',
        }
    ]


def test_validation_rules_of_the_crd_are_enforced(crs: Any) -> None:
    thresholds = {"infoDays": 30, "warnDays": 60, "errorDays": 7, "criticalDays": 3}
    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, policy(certificateExpiry=thresholds)
        )
    assert caught.value.status == 422
    (cause,) = error_body(caught.value)["details"]["causes"]
    assert cause["field"] == "spec.certificateExpiry"
    assert cause["message"].startswith('Invalid value: "object": thresholds must satisfy')


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_system_namespaces_cannot_be_deleted(core: Any, name: str) -> None:
    with pytest.raises(ApiException) as caught:
        core.delete_namespace(name)
    assert caught.value.status == 403


def test_secret_type_and_immutable_data_cannot_change(core: Any) -> None:
    core.create_namespaced_secret(
        "default",
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"a": "b"}, immutable=True),
    )
    for change in ({"type": "kubernetes.io/tls"}, {"stringData": {"a": "c"}}):
        with pytest.raises(ApiException) as caught:
            core.patch_namespaced_secret("s", "default", change)
        assert caught.value.status == 422
    relabelled = core.patch_namespaced_secret("s", "default", {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.labels == {"x": "y"}


def test_event_must_live_in_the_namespace_of_its_object(core: Any) -> None:
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="other")))
    event = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name="e"),
        involved_object=k8s.V1ObjectReference(kind="Secret", name="s", namespace="default"),
        reason="R",
        message="m",
    )
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_event("other", event)
    assert caught.value.status == 422
    assert error_body(caught.value)["details"]["causes"][0]["field"] == ("involvedObject.namespace")
    assert core.create_namespaced_event("default", event).metadata.name == "e"


def _gadget_crd(colours: list[str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"colour": {"type": "string", "enum": colours}},
            }
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def test_an_updated_crd_schema_takes_effect(apiserver: Any) -> None:
    ext: Any = k8s.ApiextensionsV1Api(apiserver.client())
    crs: Any = k8s.CustomObjectsApi(apiserver.client())
    ext.create_custom_resource_definition(_gadget_crd(["red"]))

    def gadget(colour: str) -> dict[str, Any]:
        return {
            "apiVersion": "example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": colour},
            "spec": {"colour": colour},
        }

    with pytest.raises(ApiException) as caught:
        crs.create_cluster_custom_object("example.com", "v1", "gadgets", gadget("blue"))
    assert caught.value.status == 422
    current = ext.read_custom_resource_definition("gadgets.example.com")
    updated = _gadget_crd(["red", "blue"])
    updated["metadata"]["resourceVersion"] = current.metadata.resource_version
    ext.replace_custom_resource_definition("gadgets.example.com", updated)
    created = crs.create_cluster_custom_object("example.com", "v1", "gadgets", gadget("blue"))
    assert created["spec"]["colour"] == "blue"
