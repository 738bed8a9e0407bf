"""Structural schema semantics of CRDs: pruning, defaulting, validation.

Order as in kube-apiserver: unknown fields are pruned (or, with ``fieldValidation=Strict``,
reported), ``null`` in non-nullable fields is dropped, defaults are applied, then the object is
validated. Validation errors become ``details.causes`` with the reasons and messages of the real
server (``FieldValueRequired``, ``FieldValueNotSupported``, ...). CEL rules
(``x-kubernetes-validations``) are evaluated for the subset ``cel`` implements; rules beyond it
are skipped (never rejected).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from jsonschema import Draft4Validator, FormatChecker, ValidationError

from controller.apiserver import cel, formats
from controller.apiserver.errors import Cause

Schema = dict[str, Any]
log = logging.getLogger(__name__)
_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def field_path(parts: Iterable[str | int]) -> str:
    """``spec.ipsecSubnets[0]`` from path parts."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _is_object_schema(schema: Schema) -> bool:
    return "properties" in schema or isinstance(schema.get("additionalProperties"), dict)


def prune(
    value: Any, schema: Schema, path: tuple[str | int, ...] = (), unknown: list[str] | None = None
) -> Any:
    """A copy of ``value`` without fields the schema does not know; their paths go to unknown."""
    if unknown is None:
        unknown = []
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not path and key in _ROOT_KEEP:
                out[key] = item
                continue
            sub: Schema | None = props.get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if sub is None:
                if _preserves(schema) or additional is True:
                    out[key] = item
                else:
                    unknown.append(field_path((*path, key)))
                continue
            if item is None and not sub.get("nullable", False):
                continue
            out[key] = prune(item, sub, (*path, key), unknown)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [prune(v, items, (*path, i), unknown) for i, v in enumerate(value)]
        return list(value)
    return value


def apply_defaults(value: Any, schema: Schema) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, recursively."""
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        out = dict(value)
        for key, sub in props.items():
            if (
                "default" in sub
                and out.get(key) is None
                and not (key in out and sub.get("nullable", False))
            ):
                out[key] = copy.deepcopy(sub["default"])
        for key, item in out.items():
            item_schema: Schema | None = props.get(key)
            if item_schema is None and isinstance(additional, dict):
                item_schema = additional
            if item_schema is not None:
                out[key] = apply_defaults(item, item_schema)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [apply_defaults(v, items) for v in value]
    return value


def _draft4(schema: Schema) -> Schema:
    """Translate OpenAPI v3 / Kubernetes extensions to JSON Schema draft 4."""
    out: Schema = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _draft4(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _draft4(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_draft4(v) for v in value]
        elif key in ("default", "example", "description"):
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string") and "type" not in schema:
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _causes(error: ValidationError) -> list[Cause]:
    path = field_path(error.absolute_path)
    kw = error.validator
    arg: Any = error.validator_value
    inst: Any = error.instance
    if kw == "required":
        missing = [p for p in arg if isinstance(inst, dict) and p not in inst]
        return [
            Cause("FieldValueRequired", "Required value", field_path((*error.absolute_path, p)))
            for p in missing
        ]
    if kw == "enum":
        supported = ", ".join(_go_value(v) for v in arg)
        return [
            Cause(
                "FieldValueNotSupported",
                f"Unsupported value: {_go_value(inst)}: supported values: {supported}",
                path,
            )
        ]
    if kw == "type":
        want = arg if isinstance(arg, str) else " or ".join(a for a in arg if a != "null")
        return [
            Cause(
                "FieldValueTypeInvalid",
                f'Invalid value: "{_json_type(inst)}": {path} in body must be of type '
                f'{want}: "{_json_type(inst)}"',
                path,
            )
        ]
    if kw == "maxLength":
        return [Cause("FieldValueTooLong", f"Too long: may not be more than {arg} bytes", path)]
    if kw == "maxItems":
        return [
            Cause(
                "FieldValueTooMany", f"Too many: {len(inst)}: must have at most {arg} items", path
            )
        ]
    details = {
        "pattern": f"{path} in body should match '{arg}'",
        "minLength": f"{path} in body should be at least {arg} chars long",
        "minItems": f"{path} in body should have at least {arg} items",
        "minimum": f"{path} in body should be greater than or equal to {arg}",
        "maximum": f"{path} in body should be less than or equal to {arg}",
        "minProperties": f"{path} in body should have at least {arg} properties",
        "maxProperties": f"{path} in body should have at most {arg} properties",
        "uniqueItems": f"{path} in body shouldn't contain duplicates",
        "multipleOf": f"{path} in body should be a multiple of {arg}",
        "oneOf": f"{path} in body must validate one and only one schema (oneOf)",
        "anyOf": f"{path} in body must validate at least one schema (anyOf)",
        "not": f"{path} in body must not validate the schema (not)",
        "format": f"{path} in body must be of type {arg}: {_go_value(inst)}",
    }
    if kw == "uniqueItems":
        return [Cause("FieldValueDuplicate", f"Duplicate value: {_go_value(inst)}", path)]
    detail = details.get(str(kw), error.message)
    return [Cause("FieldValueInvalid", f"Invalid value: {_go_value(inst)}: {detail}", path)]


def _go_map(value: dict[str, Any]) -> str:
    inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in value.items())
    return "map[string]interface {}{" + inner + "}"


def duplicates(value: Any, schema: Schema, path: tuple[str | int, ...] = ()) -> list[Cause]:
    """Duplicate keys in ``x-kubernetes-list-type: map`` lists and values in ``set`` lists."""
    causes: list[Cause] = []
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, additional if isinstance(additional, dict) else None)
            if sub is not None and not (not path and key in _ROOT_KEEP):
                causes.extend(duplicates(item, sub, (*path, key)))
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: set[str] = set()
        for index, item in enumerate(value):
            if list_type == "map" and isinstance(item, dict):
                ident = json.dumps([item.get(k) for k in keys])
                shown = _go_map({k: item.get(k) for k in keys if k in item})
            elif list_type == "set":
                ident = json.dumps(item, sort_keys=True)
                shown = _go_value(item)
            else:
                ident, shown = "", ""
            if ident and ident in seen:
                causes.append(
                    Cause(
                        "FieldValueDuplicate",
                        f"Duplicate value: {shown}",
                        field_path((*path, index)),
                    )
                )
            seen.add(ident)
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                causes.extend(duplicates(item, items, (*path, index)))
    return causes


_RULES: dict[str, Callable[[Any], Any] | None] = {}


def _rule(text: str) -> Callable[[Any], Any] | None:
    """The compiled rule, or None when it uses CEL beyond the supported subset."""
    if text not in _RULES:
        try:
            _RULES[text] = cel.compile_rule(text)
        except cel.CelUnsupportedError as exc:
            log.warning("not evaluating x-kubernetes-validations rule %r: %s", text, exc)
            _RULES[text] = None
    return _RULES[text]


def rule_violations(value: Any, schema: Schema, path: tuple[str | int, ...] = ()) -> list[Cause]:
    """Failures of the ``x-kubernetes-validations`` rules in ``schema`` (CEL subset)."""
    causes: list[Cause] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        check = _rule(rule.get("rule", ""))
        if check is None:
            continue
        try:
            ok = check(value) is True
            message = rule.get("message") or f"failed rule: {rule.get('rule')}"
        except cel.CelError as exc:
            ok, message = False, str(exc)
        if not ok:
            where = field_path(path) + str(rule.get("fieldPath", ""))
            causes.append(
                Cause(
                    rule.get("reason", "FieldValueInvalid"),
                    f'Invalid value: "{_json_type(value)}": {message}',
                    where,
                )
            )
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, additional if isinstance(additional, dict) else None)
            if sub is not None and not (not path and key in _ROOT_KEEP):
                causes.extend(rule_violations(item, sub, (*path, key)))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            causes.extend(rule_violations(item, schema["items"], (*path, index)))
    return causes


class StructuralSchema:
    """A CRD version's ``openAPIV3Schema``, compiled once."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        body = {k: v for k, v in schema.items() if k != "properties"}
        body["properties"] = {
            k: v for k, v in schema.get("properties", {}).items() if k not in _ROOT_KEEP
        }
        checker = FormatChecker(formats=())
        for fmt in formats.CHECKS:
            checker.checks(fmt)(functools.partial(formats.valid, fmt))
        self._validator = Draft4Validator(_draft4(body), format_checker=checker)

    def prune(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        unknown: list[str] = []
        pruned = prune(obj, self.schema, (), unknown)
        return pruned, unknown

    def default(self, obj: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = apply_defaults(obj, self.schema)
        return result

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        causes: list[Cause] = []
        seen: set[tuple[str, str]] = set()
        errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        for error in errors:
            for cause in _causes(error):
                if (cause.reason, cause.field) not in seen:
                    seen.add((cause.reason, cause.field))
                    causes.append(cause)
        causes += duplicates(obj, self.schema)
        # Like the real server, rules run on objects that are otherwise well-formed.
        return causes or rule_violations(obj, self.schema)
