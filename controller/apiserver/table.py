"""Server-side printing: ``meta.k8s.io/v1`` Table output (``kubectl get``'s columns).

Custom resources get NAME plus the CRD's ``additionalPrinterColumns`` (AGE when it declares
none), cells computed from the columns' JSONPaths with ``date`` columns rendered as ages, like
the apiextensions table convertor. Built-ins get the columns kube-apiserver prints for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.apiserver.jsonpath import compile_path, find
from controller.apiserver.resources import PrinterColumn, ResourceType

Obj = dict[str, Any]
Cell = Callable[[Obj], Any]

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically."
)
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years = hours // (24 * 365)
    if years < 8:
        days = (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"


def age(timestamp: Any) -> str:
    if not isinstance(timestamp, str):
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _meta(obj: Obj, key: str) -> Any:
    return obj.get("metadata", {}).get(key)


def _node_status(obj: Obj) -> str:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            status = {"True": "Ready", "False": "NotReady"}.get(cond.get("status"), "Unknown")
            break
    else:
        status = "Unknown"
    if (obj.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    return status


def _node_roles(obj: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in (_meta(obj, "labels") or {}) if k.startswith(prefix))
    return ",".join(roles) or "<none>"


def _event_object(obj: Obj) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _age(obj: Obj) -> str:
    return age(_meta(obj, "creationTimestamp"))


def _column(
    name: str, kind: str = "string", fmt: str = "", priority: int = 0, description: str = ""
) -> Obj:
    return {
        "name": name,
        "type": kind,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


NAME = _column("Name", fmt="name", description=NAME_DESCRIPTION)
AGE = _column("Age", description=AGE_DESCRIPTION)

BUILTIN_COLUMNS: dict[str, list[tuple[Obj, Cell]]] = {
    "/namespaces": [
        (_column("Status"), lambda o: (o.get("status") or {}).get("phase", "")),
        (AGE, _age),
    ],
    "/nodes": [
        (_column("Status"), _node_status),
        (_column("Roles"), _node_roles),
        (AGE, _age),
        (
            _column("Version"),
            lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""),
        ),
        (
            _column("Internal-IP", priority=1),
            lambda o: next(
                (
                    a.get("address")
                    for a in (o.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP"
                ),
                "<none>",
            ),
        ),
    ],
    "/secrets": [
        (_column("Type"), lambda o: o.get("type", "")),
        (_column("Data", "integer"), lambda o: len(o.get("data") or {})),
        (AGE, _age),
    ],
    "/configmaps": [
        (
            _column("Data", "integer"),
            lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        ),
        (AGE, _age),
    ],
    "/events": [
        (
            _column("Last Seen"),
            lambda o: age(
                o.get("lastTimestamp") or o.get("eventTime") or _meta(o, "creationTimestamp")
            ),
        ),
        (_column("Type"), lambda o: o.get("type", "")),
        (_column("Reason"), lambda o: o.get("reason", "")),
        (_column("Object"), _event_object),
        (_column("Message"), lambda o: o.get("message", "")),
    ],
    "coordination.k8s.io/leases": [
        (_column("Holder"), lambda o: (o.get("spec") or {}).get("holderIdentity", "")),
        (AGE, _age),
    ],
    "apiextensions.k8s.io/customresourcedefinitions": [
        (_column("Created At", "date"), lambda o: _meta(o, "creationTimestamp")),
    ],
}


def _custom_cell(column: PrinterColumn, obj: Obj) -> Any:
    try:
        results = find(obj, compile_path(column.json_path))
    except ValueError:
        return None
    if not results:
        return None
    value = (
        results[0]
        if len(results) == 1
        else " ".join(v if isinstance(v, str) else json.dumps(v) for v in results)
    )
    if column.type == "date":
        return age(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _custom_columns(rt: ResourceType) -> list[tuple[Obj, Cell]]:
    columns = list(rt.printer_columns) or [
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", AGE_DESCRIPTION)
    ]
    return [
        (
            _column(
                c.name,
                c.type,
                c.format,
                c.priority,
                c.description
                or f"Custom resource definition column (in JSONPath format): {c.json_path}",
            ),
            (lambda o, c=c: _custom_cell(c, o)),  # type: ignore[misc]
        )
        for c in columns
    ]


def columns_for(rt: ResourceType) -> list[tuple[Obj, Cell]]:
    if rt.custom:
        return _custom_columns(rt)
    return BUILTIN_COLUMNS.get(rt.key, [(AGE, _age)])


def _partial(obj: Obj) -> Obj:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    rt: ResourceType,
    objects: list[Obj],
    resource_version: str = "",
    include_object: str = "Metadata",
    headers: bool = True,
) -> Obj:
    """A Table with one row per object."""
    columns = columns_for(rt)
    rows = []
    for obj in objects:
        row: Obj = {"cells": [_meta(obj, "name")] + [cell(obj) for _, cell in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    result: Obj = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version} if resource_version else {},
        "columnDefinitions": [NAME] + [c for c, _ in columns] if headers else None,
        "rows": rows,
    }
    return result
