"""The JSONPath subset that printer columns use.

``.spec.mode``, ``.status.nodes[0].name``, ``.items[*].name``,
``.status.conditions[?(@.type=="Ready")].status``, optionally wrapped in ``{}``.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-$/]+)
      | \[(?P<index>-?\d+)\]
      | \[(?P<star>\*)\]
      | \[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*
        (?P<quote>["']?)(?P<fvalue>[^"')]*)(?P=quote)\)\]
      | \[['"](?P<qfield>[^'"]+)['"]\]
    """,
    re.VERBOSE,
)


class JsonPathError(ValueError):
    """An expression outside the supported subset."""


def compile_path(expr: str) -> list[tuple[str, Any]]:
    text = expr.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise JsonPathError(f"unsupported JSONPath {expr!r} at {text[pos:]!r}")
        if match.group("field") is not None:
            steps.append(("field", match.group("field")))
        elif match.group("qfield") is not None:
            steps.append(("field", match.group("qfield")))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        elif match.group("star") is not None:
            steps.append(("star", None))
        else:
            steps.append(
                ("filter", (match.group("fpath"), match.group("op"), match.group("fvalue")))
            )
        pos = match.end()
    return steps


def _field(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def find(obj: Any, steps: list[tuple[str, Any]]) -> list[Any]:
    """All values the path selects."""
    current = [obj]
    for kind, arg in steps:
        following: list[Any] = []
        for value in current:
            if (kind == "field" and isinstance(value, dict) and arg in value) or (
                kind == "index" and isinstance(value, list) and -len(value) <= arg < len(value)
            ):
                following.append(value[arg])
            elif kind == "star":
                if isinstance(value, list):
                    following.extend(value)
                elif isinstance(value, dict):
                    following.extend(value.values())
            elif kind == "filter" and isinstance(value, list):
                path, op, expected = arg
                for item in value:
                    got = _field(item, path)
                    if got is None:
                        continue
                    if (_as_text(got) == expected) == (op == "=="):
                        following.append(item)
        current = following
    return current
