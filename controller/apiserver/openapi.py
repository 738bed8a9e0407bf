"""OpenAPI v3 documents, enough for kubectl.

kubectl reads ``/openapi/v3`` to learn that PATCH accepts ``fieldValidation`` (then it leaves
schema validation to the server: ``kubectl apply``/``create`` send ``fieldValidation=Strict``),
and ``kubectl explain`` reads the schemas. Custom resources carry their CRD schema; built-ins a
permissive object schema. PATCH of built-ins does not advertise strategic merge here, so kubectl
computes strategic patches from its compiled-in types, as it does for older servers.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controller.apiserver.registry import Registry
from controller.apiserver.resources import ResourceType

Obj = dict[str, Any]

_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")


def _param(name: str, kind: str = "string") -> Obj:
    return {"name": name, "in": "query", "schema": {"type": kind, "uniqueItems": True}}


def _schema_name(rt: ResourceType) -> str:
    group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{group}.{rt.version}.{rt.kind}"


def _gvk(rt: ResourceType) -> Obj:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _ref(rt: ResourceType) -> Obj:
    return {"$ref": f"#/components/schemas/{_schema_name(rt)}"}


def _op(
    rt: ResourceType, action: str, verb: str, params: tuple[str, ...], body: list[str] | None = None
) -> Obj:
    op: Obj = {
        "operationId": f"{verb}{rt.kind}",
        "parameters": [_param(p, "boolean" if p == "force" else "string") for p in params],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": _ref(rt)}}}
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
    }
    if body:
        op["requestBody"] = {
            "content": {
                ct: {"schema": _ref(rt) if ct == "application/json" else {"type": "object"}}
                for ct in body
            },
            "required": True,
        }
    return op


def _paths(rt: ResourceType) -> dict[str, Obj]:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    if rt.namespaced:
        prefix += "/namespaces/{namespace}"
    collection = f"{prefix}/{rt.plural}"
    patch_types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]
    item: Obj = {
        "get": _op(rt, "get", "read", ()),
        "put": _op(rt, "put", "replace", _WRITE_PARAMS, ["application/json"]),
        "patch": _op(rt, "patch", "patch", (*_WRITE_PARAMS, "force"), patch_types),
        "delete": _op(rt, "delete", "delete", ("dryRun",), ["application/json"]),
    }
    paths = {
        collection: {
            "get": _op(rt, "list", "list", ("labelSelector", "fieldSelector", "watch")),
            "post": _op(rt, "post", "create", _WRITE_PARAMS, ["application/json"]),
        },
        f"{collection}/{{name}}": item,
    }
    if rt.status_subresource:
        paths[f"{collection}/{{name}}/status"] = {
            "get": _op(rt, "get", "readStatus", ()),
            "put": _op(rt, "put", "replaceStatus", _WRITE_PARAMS, ["application/json"]),
            "patch": _op(rt, "patch", "patchStatus", (*_WRITE_PARAMS, "force"), patch_types),
        }
    return paths


def _component(rt: ResourceType) -> Obj:
    schema: Obj = (
        dict(rt.schema)
        if rt.schema
        else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    properties = dict(schema.get("properties") or {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema["properties"] = properties
    schema["x-kubernetes-group-version-kind"] = [_gvk(rt)]
    return schema


def group_version_document(registry: Registry, group: str, version: str) -> Obj | None:
    types = registry.resources(group, version)
    if not types:
        return None
    paths: Obj = {}
    schemas: Obj = {}
    for rt in types:
        paths.update(_paths(rt))
        schemas[_schema_name(rt)] = _component(rt)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document_hash(doc: Obj) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def index(registry: Registry) -> Obj:
    """``/openapi/v3``: one entry per group version, URLs carrying a content hash."""
    paths: Obj = {}
    for group, versions in registry.groups():
        for version in versions:
            doc = group_version_document(registry, group, version)
            if doc is None:
                continue
            rel = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={document_hash(doc)}"}
    return {"paths": paths}
