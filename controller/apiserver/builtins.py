"""Strategies of built-in kinds: their defaults and the checks kube-apiserver makes on them.

Built-ins have no structural schema here, so what their Go strategies enforce and that
clients can trip over is spelled out: Secret ``stringData`` folding and immutability, the
Namespace lifecycle fields, Event namespaces, and the namespaces that cannot be deleted.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from controller.apiserver import errors
from controller.apiserver.errors import Cause
from controller.apiserver.resources import ResourceType

Obj = dict[str, Any]

UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public")


def _is(rt: ResourceType, kind: str) -> bool:
    return rt.group == "" and rt.kind == kind


def _secret(obj: Obj) -> Obj:
    """Fold ``stringData`` into ``data`` (base64) and default the type, as the API does."""
    out = dict(obj)
    data = dict(out.get("data") or {})
    for key, value in data.items():
        try:
            base64.b64decode(value or "", validate=True)
        except (binascii.Error, TypeError) as exc:
            raise errors.bad_request(f"illegal base64 data in data[{key!r}]: {exc}") from exc
    for key, value in (out.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        out["data"] = data
    out.setdefault("type", "Opaque")
    return out


def defaults(rt: ResourceType, obj: Obj, creating: bool) -> Obj:
    """The object with the kind's server-side defaults."""
    if _is(rt, "Secret"):
        return _secret(obj)
    if _is(rt, "Namespace") and creating:
        spec = dict(obj.get("spec") or {})
        spec.setdefault("finalizers", ["kubernetes"])
        return {**obj, "spec": spec, "status": {"phase": "Active"}}
    return obj


def create_causes(rt: ResourceType, obj: Obj) -> list[Cause]:
    """Kind-specific validation of a new object."""
    if not _is(rt, "Event"):
        return []
    namespace = obj["metadata"].get("namespace", "")
    involved = (obj.get("involvedObject") or {}).get("namespace", "")
    # Events of cluster-scoped objects live in "default" (or no namespace); others in the
    # namespace of the object they are about.
    if (involved and involved != namespace) or (not involved and namespace != "default"):
        return [
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{involved}": does not match event.namespace',
                "involvedObject.namespace",
            )
        ]
    return []


def update_causes(rt: ResourceType, old: Obj, new: Obj) -> list[Cause]:
    """Kind-specific validation of an update (immutable fields)."""
    causes: list[Cause] = []
    if _is(rt, "Secret") and new.get("type") != old.get("type"):
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{new.get("type")}": field is immutable',
                "type",
            )
        )
    if (_is(rt, "Secret") or _is(rt, "ConfigMap")) and old.get("immutable"):
        for key in ("data", "binaryData", "immutable"):
            if new.get(key) != old.get(key):
                causes.append(
                    Cause(
                        "FieldValueForbidden",
                        "Forbidden: field is immutable when `immutable` is set",
                        key,
                    )
                )
    return causes


def deletion_forbidden(rt: ResourceType, obj: Obj) -> str | None:
    """Why the object may not be deleted, if it may not."""
    name = obj["metadata"]["name"]
    if _is(rt, "Namespace") and name in UNDELETABLE_NAMESPACES:
        return f'namespaces "{name}" is forbidden: this namespace may not be deleted'
    return None
