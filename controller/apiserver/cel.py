"""A small subset of CEL for CRD ``x-kubernetes-validations`` rules.

Supported: ``self`` and field access, indexing, literals, ``! - * / % + -``, comparisons,
``in``, ``&& ||``, ``?:``, ``has(self.x)``, ``size()``, ``startsWith``/``endsWith``/
``contains``/``matches``, ``int()``/``string()``. Rules using anything else (macros such as
``all``/``exists``, ``oldSelf`` transition rules) are reported as unsupported and skipped by
the caller, so the server never rejects an object on a rule it cannot evaluate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Node = tuple[Any, ...]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+\.\d+|\d+)u?
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%()\[\].,?:])
    | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class CelUnsupportedError(ValueError):
    """The rule uses CEL this evaluator does not implement."""


class CelError(ValueError):
    """Evaluation failed (as a CEL runtime error would, e.g. ``no such key``)."""


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise CelUnsupportedError(f"cannot tokenize at {text[pos:]!r}")
        pos = match.end()
        if match.group("num"):
            raw = match.group("num")
            out.append(("lit", float(raw) if "." in raw else int(raw)))
        elif match.group("str"):
            out.append(("lit", bytes(match.group("str")[1:-1], "utf-8").decode("unicode_escape")))
        elif match.group("op"):
            out.append(("op", match.group("op")))
        else:
            name = match.group("id")
            literals = {"true": True, "false": False, "null": None}
            if name in literals:
                out.append(("lit", literals[name]))
            elif name == "in":
                out.append(("op", "in"))
            else:
                out.append(("id", name))
    out.append(("end", None))
    return out


_BINARY = {
    "||": 1,
    "&&": 2,
    "==": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "in": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}
_METHODS = {"size", "startsWith", "endsWith", "contains", "matches"}
_FUNCTIONS = {"size", "has", "int", "string"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self, value: Any = None) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        if value is not None and token[1] != value:
            raise CelUnsupportedError(f"expected {value!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.expr()
        if self.peek()[0] != "end":
            raise CelUnsupportedError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self) -> Node:
        cond = self.binary(1)
        if self.peek() == ("op", "?"):
            self.take("?")
            yes = self.expr()
            self.take(":")
            return ("if", cond, yes, self.expr())
        return cond

    def binary(self, level: int) -> Node:
        left = self.unary()
        while True:
            kind, value = self.peek()
            prec = _BINARY.get(value) if kind == "op" else None
            if prec is None or prec < level:
                return left
            self.take()
            left = ("bin", value, left, self.binary(prec + 1))

    def unary(self) -> Node:
        if self.peek() in (("op", "!"), ("op", "-")):
            op = self.take()[1]
            return ("un", op, self.unary())
        return self.postfix(self.primary())

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "lit":
            return ("lit", value)
        if kind == "op" and value == "(":
            node = self.expr()
            self.take(")")
            return node
        if kind == "op" and value == "[":
            items = self.arguments("]")
            return ("list", items)
        if kind == "id":
            if self.peek() == ("op", "("):
                if value not in _FUNCTIONS:
                    raise CelUnsupportedError(f"function {value}")
                self.take("(")
                return ("call", value, self.arguments(")"))
            if value != "self":
                raise CelUnsupportedError(f"identifier {value}")
            return ("self",)
        raise CelUnsupportedError(f"unexpected {value!r}")

    def arguments(self, close: str) -> list[Node]:
        args: list[Node] = []
        if self.peek() == ("op", close):
            self.take(close)
            return args
        while True:
            args.append(self.expr())
            if self.take()[1] == close:
                return args

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek() == ("op", "."):
                self.take(".")
                kind, name = self.take()
                if kind != "id":
                    raise CelUnsupportedError("field name expected")
                if self.peek() == ("op", "("):
                    if name not in _METHODS:
                        raise CelUnsupportedError(f"method {name}")
                    self.take("(")
                    node = ("method", name, node, self.arguments(")"))
                else:
                    node = ("field", node, name)
            elif self.peek() == ("op", "["):
                self.take("[")
                index = self.expr()
                self.take("]")
                node = ("index", node, index)
            else:
                return node


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "in":
        return a in b
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "<": lambda x, y: x < y,
        "<=": lambda x, y: x <= y,
        ">": lambda x, y: x > y,
        ">=": lambda x, y: x >= y,
    }
    try:
        return ops[op](a, b)
    except TypeError as exc:
        raise CelError(f"no such overload: {op}") from exc


def _eval(node: Node, self_value: Any) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "self":
        return self_value
    if kind == "list":
        return [_eval(n, self_value) for n in node[1]]
    if kind == "field":
        base = _eval(node[1], self_value)
        if not isinstance(base, dict) or node[2] not in base:
            raise CelError(f"no such key: {node[2]}")
        return base[node[2]]
    if kind == "index":
        base, index = _eval(node[1], self_value), _eval(node[2], self_value)
        try:
            return base[index]
        except (KeyError, IndexError, TypeError) as exc:
            raise CelError(f"no such key: {index}") from exc
    if kind == "if":
        return _eval(node[2] if _eval(node[1], self_value) else node[3], self_value)
    if kind == "un":
        value = _eval(node[2], self_value)
        return (not value) if node[1] == "!" else -value
    if kind == "bin":
        op = node[1]
        if op in ("&&", "||"):
            left = _eval(node[2], self_value)
            if op == "&&":
                return bool(left) and bool(_eval(node[3], self_value))
            return bool(left) or bool(_eval(node[3], self_value))
        a, b = _eval(node[2], self_value), _eval(node[3], self_value)
        arithmetic: dict[str, Callable[[Any, Any], Any]] = {
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "/": lambda x, y: x // y if isinstance(x, int) and isinstance(y, int) else x / y,
            "%": lambda x, y: x % y,
        }
        if op in arithmetic:
            try:
                return arithmetic[op](a, b)
            except (TypeError, ZeroDivisionError) as exc:
                raise CelError(str(exc)) from exc
        return _compare(op, a, b)
    if kind == "call":
        name, args = node[1], node[2]
        if name == "has":
            if len(args) != 1 or args[0][0] != "field":
                raise CelError("has() needs a field selection")
            base = _eval(args[0][1], self_value)
            return isinstance(base, dict) and args[0][2] in base
        values = [_eval(a, self_value) for a in args]
        if name == "size":
            return len(values[0])
        if name == "int":
            return int(values[0])
        return str(values[0])
    if kind == "method":
        name, target = node[1], _eval(node[2], self_value)
        values = [_eval(a, self_value) for a in node[3]]
        if name == "size":
            return len(target)
        if not isinstance(target, str):
            raise CelError(f"no such overload: {name}")
        if name == "startsWith":
            return target.startswith(values[0])
        if name == "endsWith":
            return target.endswith(values[0])
        if name == "contains":
            return values[0] in target
        return re.search(values[0], target) is not None
    raise CelUnsupportedError(f"node {kind}")


def compile_rule(rule: str) -> Callable[[Any], Any]:
    """A function evaluating ``rule`` with ``self`` bound to its argument."""
    if "oldSelf" in rule:
        raise CelUnsupportedError("transition rules (oldSelf)")
    tree = _Parser(rule).parse()
    return lambda value: _eval(tree, value)
