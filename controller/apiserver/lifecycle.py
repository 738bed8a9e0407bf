"""Object lifecycle rules of kube-apiserver, as pure functions.

What the server decides on create, update (main resource or ``/status``) and delete:
server-owned metadata (uid, creationTimestamp, generation, deletionTimestamp), the status
subresource split (spec writes keep status, status writes keep everything else), generation
bumps on spec changes only, optimistic concurrency on ``resourceVersion``, finalizers, and the
structural schema of custom resources.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.apiserver import builtins, errors
from controller.apiserver.errors import Cause
from controller.apiserver.resources import BUILTIN_FIELDS, OBJECT_META_FIELDS, ResourceType
from controller.apiserver.schema import StructuralSchema

Obj = dict[str, Any]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# Metadata the server owns: kept from the stored object on every update.
_SERVER_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


def now() -> str:
    """RFC 3339 UTC with second precision, as Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Options:
    """Per-request settings that change how a write is checked."""

    field_validation: str = "Warn"  # Strict | Warn | Ignore
    warnings: list[str] = field(default_factory=list)


class Schemas:
    """Compiled structural schemas per resource type (compiled on first use, and again when
    an updated CRD brings a new schema)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str, str], StructuralSchema] = {}

    def get(self, rt: ResourceType) -> StructuralSchema | None:
        if rt.schema is None:
            return None
        ident = (rt.group, rt.version, rt.plural)
        cached = self._compiled.get(ident)
        if cached is None or cached.schema is not rt.schema:
            cached = self._compiled[ident] = StructuralSchema(rt.schema)
        return cached


def _metadata_causes(meta: Obj, rt: ResourceType) -> list[Cause]:
    causes: list[Cause] = []
    name = meta.get("name", "")
    if not name:
        causes.append(
            Cause(
                "FieldValueRequired",
                "Required value: name or generateName is required",
                "metadata.name",
            )
        )
    elif rt.kind != "Event" and (len(name) > 253 or not _SUBDOMAIN.match(name)):
        causes.append(
            Cause(
                "FieldValueInvalid", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}', "metadata.name"
            )
        )
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": a valid label must be an empty string or '
                    "consist of alphanumeric characters, '-', '_' or '.', and must start and "
                    "end with an alphanumeric character",
                    "metadata.labels",
                )
            )
        if not key or len(key.rsplit("/", 1)[-1]) > 63:
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{key}": name part must be no more than 63 characters',
                    "metadata.labels",
                )
            )
    return causes


def _unknown_fields(rt: ResourceType, unknown: list[str], opts: Options) -> None:
    if unknown and opts.field_validation == "Strict":
        listed = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {listed}"
        )
    if opts.field_validation == "Warn":
        opts.warnings.extend(f'unknown field "{u}"' for u in unknown)


def _known_fields(rt: ResourceType, obj: Obj, opts: Options) -> Obj:
    """Drop (or, strictly, reject) fields the kind does not have, metadata included."""
    meta = obj.get("metadata") or {}
    unknown = [f"metadata.{k}" for k in meta if k not in OBJECT_META_FIELDS]
    top = BUILTIN_FIELDS.get(rt.kind) if not rt.custom else None
    if top is not None:
        unknown = [k for k in obj if k not in top] + unknown
    if not unknown:
        return obj
    _unknown_fields(rt, unknown, opts)
    out = {k: v for k, v in obj.items() if top is None or k in top}
    out["metadata"] = {k: v for k, v in meta.items() if k in OBJECT_META_FIELDS}
    return out


def _custom_schema(rt: ResourceType, obj: Obj, schemas: Schemas, opts: Options) -> Obj:
    """Prune, default and validate a custom resource against its structural schema."""
    schema = schemas.get(rt)
    if schema is None:
        return obj
    pruned, unknown = schema.prune(obj)
    _unknown_fields(rt, unknown, opts)
    defaulted = schema.default(pruned)
    causes = schema.validate(defaulted)
    if causes:
        name = obj.get("metadata", {}).get("name", "")
        raise errors.invalid(rt.kind, rt.group, name, causes)
    return defaulted


def _check_kind(rt: ResourceType, body: Obj) -> None:
    if not isinstance(body.get("metadata", {}), dict):
        raise errors.bad_request("metadata must be an object")
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    if kind and kind != rt.kind:
        raise errors.bad_request(
            f"the object provided is unrecognized (kind {kind!r} does not match {rt.kind!r})"
        )
    if api_version and api_version != rt.api_version:
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({rt.api_version})"
        )


def prepare_create(
    rt: ResourceType, namespace: str, body: Obj, schemas: Schemas, opts: Options
) -> Obj:
    """The object to store for a create request (resourceVersion is set by the store)."""
    if not isinstance(body, dict):
        raise errors.bad_request("the request body must be a JSON object")
    _check_kind(rt, body)
    body = _known_fields(rt, body, opts)
    meta = dict(body.get("metadata") or {})
    if meta.get("resourceVersion"):
        raise errors.bad_request("resourceVersion should not be set on objects to be created")
    if not meta.get("name") and meta.get("generateName"):
        suffix = "".join(random.choices(_NAME_CHARS, k=5))
        meta["name"] = f"{meta['generateName']}{suffix}"
    if rt.namespaced:
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    for key in (*_SERVER_METADATA, "resourceVersion"):
        meta.pop(key, None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    if rt.has_generation:
        meta["generation"] = 1
    obj: Obj = {**body, "apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}
    if rt.has_generation and rt.status_subresource:
        obj.pop("status", None)
    obj = builtins.defaults(rt, obj, creating=True)
    causes = _metadata_causes(meta, rt) + builtins.create_causes(rt, obj)
    if causes:
        raise errors.invalid(rt.kind, rt.group, meta.get("name", ""), causes)
    return _custom_schema(rt, obj, schemas, opts)


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


def prepare_update(
    rt: ResourceType,
    old: Obj,
    body: Obj,
    subresource: str,
    schemas: Schemas,
    opts: Options,
    require_version: bool,
) -> Obj:
    """The object to store for an update of ``old`` (PUT, or the result of a PATCH)."""
    if not isinstance(body, dict):
        raise errors.bad_request("the request body must be a JSON object")
    _check_kind(rt, body)
    body = _known_fields(rt, body, opts)
    old_meta: Obj = old["metadata"]
    name = old_meta["name"]
    new_meta = dict(body.get("metadata") or {})
    if new_meta.get("name", name) != name:
        raise errors.bad_request(
            f"the name of the object ({new_meta.get('name')}) does not match the name on the "
            f"URL ({name})"
        )
    if rt.namespaced and new_meta.get("namespace", old_meta["namespace"]) != old_meta["namespace"]:
        raise errors.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    version = new_meta.get("resourceVersion")
    if version:
        if version != old_meta["resourceVersion"]:
            raise errors.stale(rt.plural, rt.group, name)
    elif require_version and rt.custom:
        raise errors.invalid(
            rt.kind,
            rt.group,
            name,
            [
                Cause(
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update",
                    "metadata.resourceVersion",
                )
            ],
        )

    if subresource == "status":
        # Only status changes; metadata and spec stay as stored.
        result: Obj = _without(old, "status")
        if "status" in body:
            result["status"] = body["status"]
    else:
        result = {**body, "apiVersion": rt.api_version, "kind": rt.kind}
        meta = dict(new_meta)
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = old_meta["namespace"]
        else:
            meta.pop("namespace", None)
        for key in _SERVER_METADATA:
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        result["metadata"] = meta
        if rt.status_subresource:
            result.pop("status", None)
            if "status" in old:
                result["status"] = old["status"]
        result = builtins.defaults(rt, result, creating=False)
        if old_meta.get("deletionTimestamp"):
            added = [
                f
                for f in meta.get("finalizers") or []
                if f not in (old_meta.get("finalizers") or [])
            ]
            if added:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        Cause(
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            f"deleted, found new finalizers {added!r}",
                            "metadata.finalizers",
                        )
                    ],
                )
        causes = _metadata_causes(meta, rt) + builtins.update_causes(rt, old, result)
        if causes:
            raise errors.invalid(rt.kind, rt.group, name, causes)
    result = _custom_schema(rt, result, schemas, opts)
    if rt.has_generation:
        # The served version (apiVersion) is not content: writing through another version
        # of the same resource changes nothing by itself.
        ignored = (
            ("apiVersion", "metadata", "status")
            if rt.status_subresource
            else (
                "apiVersion",
                "metadata",
            )
        )
        if _without(result, *ignored) != _without(old, *ignored):
            meta = dict(result["metadata"])
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
            result["metadata"] = meta
    return result


def changed(old: Obj, new: Obj) -> bool:
    """Whether a write changes anything (no-op writes keep the resourceVersion, as in kube)."""
    return new != old


def check_preconditions(rt: ResourceType, old: Obj, options: Obj) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion)."""
    pre = options.get("preconditions") or {}
    meta = old["metadata"]
    name = meta["name"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise errors.conflict(
            rt.plural,
            rt.group,
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
            f"object meta: {meta.get('uid')}",
        )
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise errors.conflict(
            rt.plural,
            rt.group,
            name,
            "Precondition failed: ResourceVersion in precondition: "
            f"{pre['resourceVersion']}, ResourceVersion in object meta: "
            f"{meta.get('resourceVersion')}",
        )


def mark_deleting(rt: ResourceType, old: Obj) -> Obj:
    """The object after a DELETE that finalizers hold back (or ``old`` if already marked)."""
    meta = dict(old["metadata"])
    if meta.get("deletionTimestamp"):
        return old
    meta["deletionTimestamp"] = now()
    meta["deletionGracePeriodSeconds"] = 0
    if rt.has_generation:
        meta["generation"] = int(meta.get("generation", 1)) + 1
    result = {**old, "metadata": meta}
    if rt.group == "" and rt.kind == "Namespace":
        result["status"] = {**(old.get("status") or {}), "phase": "Terminating"}
    return result


def finalizers_pending(obj: Obj) -> bool:
    return bool(obj["metadata"].get("finalizers"))
