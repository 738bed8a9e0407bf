"""Label and field selectors in their query-string syntax.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``,
comma-separated (all must hold). Field selectors: ``path=value``, ``path==value``,
``path!=value`` on the fields the resource supports (others are a 400, as in kube-apiserver).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]


class SelectorError(ValueError):
    """A selector that does not parse or names an unsupported field."""


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_SET_EXPR = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_EXPR = re.compile(r"^([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)$")
_KEY = re.compile(r"^(!?)\s*([^\s!=(),]+)$")


def _label_requirement(expr: str) -> Predicate:
    if match := _SET_EXPR.match(expr):
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_EXPR.match(expr):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _KEY.match(expr):
        negate, key = match.groups()
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {expr!r}")


def label_selector(text: str) -> Predicate:
    """A predicate on an object from a ``labelSelector`` query parameter."""
    requirements = [_label_requirement(e) for e in _split_top(text)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r(labels) for r in requirements)

    return matches


def _lookup(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, dict):
        # Event "source" selects on source.component.
        return str(node.get("component", ""))
    return str(node)


def field_selector(text: str, supported: set[str]) -> Predicate:
    """A predicate on an object from a ``fieldSelector`` query parameter."""
    checks: list[tuple[str, bool, str]] = []
    for expr in _split_top(text):
        match = re.match(r"^([^!=]+)(==|=|!=)(.*)$", expr)
        if not match:
            raise SelectorError(f"invalid selector: {expr!r}; can't understand {expr!r}")
        path, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if path not in supported:
            raise SelectorError(f"field label not supported: {path}")
        checks.append((path, op == "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_lookup(obj, p) == v) != negate for p, negate, v in checks)

    return matches
