"""The four patch types clients send, as pure functions on JSON values.

- ``application/json-patch+json`` (RFC 6902; kopf tests ``resourceVersion``/finalizers with it),
- ``application/merge-patch+json`` (RFC 7386; kopf, kubectl apply for custom resources),
- ``application/strategic-merge-patch+json`` (kubectl apply for built-ins; lists merge by the
  Kubernetes merge keys of the few fields that have them here),
- ``application/apply-patch+yaml`` (server-side apply, simplified: see ``server_side_apply``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

JSON = Any


class PatchError(Exception):
    """The patch cannot be applied (answered 422)."""


class PatchFormatError(Exception):
    """The patch is malformed (answered 400)."""


# --- RFC 6902 ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFormatError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds")
    return index


def _parent(doc: JSON, parts: list[str]) -> JSON:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path /{'/'.join(parts)} does not exist: missing {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, False)]
        else:
            raise PatchError(f"path /{'/'.join(parts)} does not exist")
    return node


def _get(doc: JSON, parts: list[str]) -> JSON:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"path /{'/'.join(parts)} does not exist")
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, False)]
    raise PatchError(f"path /{'/'.join(parts)} does not exist")


def _add(doc: JSON, parts: list[str], value: JSON) -> JSON:
    if not parts:
        return value
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, True), value)
    else:
        raise PatchError(f"cannot add at /{'/'.join(parts)}")
    return doc


def _remove(doc: JSON, parts: list[str]) -> JSON:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"unable to remove nonexistent key: {token}")
        del parent[token]
    elif isinstance(parent, list):
        del parent[_index(parent, token, False)]
    else:
        raise PatchError(f"cannot remove /{'/'.join(parts)}")
    return doc


def json_patch(doc: JSON, operations: JSON) -> JSON:
    """Apply an RFC 6902 patch to a copy of ``doc``."""
    if not isinstance(operations, list):
        raise PatchFormatError("a JSON patch must be a list of operations")
    result = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchFormatError(f"invalid JSON patch operation: {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "add":
            result = _add(result, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            result = _remove(result, parts)
        elif kind == "replace":
            _get(result, parts)
            result = (
                _add(_remove(result, parts), parts, copy.deepcopy(op.get("value")))
                if parts
                else copy.deepcopy(op.get("value"))
            )
        elif kind == "move":
            source = _pointer(op["from"])
            value = _get(result, source)
            result = _add(_remove(result, source), parts, value)
        elif kind == "copy":
            value = copy.deepcopy(_get(result, _pointer(op["from"])))
            result = _add(result, parts, value)
        elif kind == "test":
            actual = _get(result, parts)
            if actual != op.get("value"):
                raise PatchError(
                    f"testing value {op['path']} failed: {json.dumps(actual)} != "
                    f"{json.dumps(op.get('value'))}"
                )
        else:
            raise PatchFormatError(f"unknown JSON patch operation {kind!r}")
    return result


# --- RFC 7386 ---------------------------------------------------------------------------


def merge_patch(doc: JSON, patch: JSON) -> JSON:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge --------------------------------------------------------------------

# Merge keys of list fields (patchMergeKey) for the types this server serves; lists not named
# here are replaced, except the ``merge``-strategy primitive lists below (set union).
MERGE_KEYS = {
    "conditions": "type",
    "addresses": "type",
    "ownerReferences": "uid",
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "taints": "key",
    "imagePullSecrets": "name",
    "secrets": "name",
}
SET_LISTS = {"finalizers"}


def strategic_merge_patch(doc: JSON, patch: JSON, field: str = "") -> JSON:
    """Strategic merge patch with the ``$patch``/``$retainKeys``/``$deleteFromPrimitiveList``
    directives; ``$setElementOrder`` is accepted and ignored (order is kept as sent)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(doc) if isinstance(doc, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key)
        else:
            result[key] = value
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: JSON, patch: list[Any], field: str) -> list[Any]:
    old = list(current) if isinstance(current, list) else []
    if field in SET_LISTS:
        return old + [v for v in patch if v not in old]
    merge_key = MERGE_KEYS.get(field)
    if merge_key is None or not all(isinstance(v, dict) for v in patch):
        return [v for v in copy.deepcopy(patch) if not (isinstance(v, dict) and "$patch" in v)]
    if any(v.get("$patch") == "replace" for v in patch):
        return [v for v in copy.deepcopy(patch) if "$patch" not in v]
    result = [dict(v) if isinstance(v, dict) else v for v in old]
    for item in patch:
        position = next(
            (
                i
                for i, v in enumerate(result)
                if isinstance(v, dict) and v.get(merge_key) == item.get(merge_key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(copy.deepcopy(item))
        else:
            result[position] = strategic_merge_patch(result[position], item, field)
    return result


# --- server-side apply ------------------------------------------------------------------


def _list_map_keys(schema: dict[str, Any] | None) -> list[str] | None:
    if schema and schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys")
        return list(keys) if keys else None
    return None


def _sub(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not schema:
        return None
    props = schema.get("properties", {})
    if key in props:
        sub: dict[str, Any] = props[key]
        return sub
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _remove_unowned(live: JSON, previous: JSON, applied: JSON) -> JSON:
    """Drop from ``live`` the fields the manager applied before but not this time."""
    if not isinstance(live, dict) or not isinstance(previous, dict):
        return live
    applied_map = applied if isinstance(applied, dict) else {}
    result = dict(live)
    for key, before in previous.items():
        if key not in applied_map:
            result.pop(key, None)
        elif key in result:
            result[key] = _remove_unowned(result[key], before, applied_map[key])
    return result


def _apply_merge(live: JSON, applied: JSON, schema: dict[str, Any] | None, field: str) -> JSON:
    if isinstance(applied, dict):
        result = dict(live) if isinstance(live, dict) else {}
        for key, value in applied.items():
            result[key] = _apply_merge(result.get(key), value, _sub(schema, key), key)
        return result
    if isinstance(applied, list):
        keys = _list_map_keys(schema)
        if field in SET_LISTS or (schema or {}).get("x-kubernetes-list-type") == "set":
            old = list(live) if isinstance(live, list) else []
            return old + [v for v in applied if v not in old]
        if keys and isinstance(live, list):
            items = schema.get("items") if schema else None
            result_list = [copy.deepcopy(v) for v in live]
            for item in applied:
                ident = [item.get(k) for k in keys] if isinstance(item, dict) else None
                position = next(
                    (
                        i
                        for i, v in enumerate(result_list)
                        if isinstance(v, dict) and [v.get(k) for k in keys] == ident
                    ),
                    None,
                )
                if position is None:
                    result_list.append(copy.deepcopy(item))
                else:
                    result_list[position] = _apply_merge(result_list[position], item, items, "")
            return result_list
        return copy.deepcopy(applied)
    return copy.deepcopy(applied)


def server_side_apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    previous: dict[str, Any] | None,
    schema: dict[str, Any] | None,
) -> dict[str, Any]:
    """The object after a manager applies ``applied``.

    Simplified field ownership: a manager owns what it applied last time (``previous``); fields
    it applied before and omits now are removed, everything it applies is merged in (maps
    recursively, ``x-kubernetes-list-type: map`` lists by key, set lists by value, other lists
    replaced). Conflicts with other managers are not detected (as if ``--force-conflicts``).
    """
    base = copy.deepcopy(live) if live is not None else {}
    if previous is not None:
        base = _remove_unowned(base, previous, applied)
    merged: dict[str, Any] = _apply_merge(base, applied, schema, "")
    return merged
