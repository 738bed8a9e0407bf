"""Pure pieces of the embedded API server, table-driven: patches, selectors, JSONPath,
schema pruning/defaulting, ages, and the watch event a change becomes."""

from __future__ import annotations

from typing import Any

import pytest

from controller.apiserver import cel, formats, patch
from controller.apiserver.jsonpath import compile_path, find
from controller.apiserver.schema import StructuralSchema
from controller.apiserver.selectors import SelectorError, field_selector, label_selector
from controller.apiserver.store import Change, ExpiredError, Store
from controller.apiserver.table import human_duration
from controller.apiserver.watch import event_for


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [
        ({"a": 1}, [{"op": "add", "path": "/b", "value": 2}], {"a": 1, "b": 2}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3]}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/0", "value": 0}], {"a": [0, 1, 2]}),
        ({"a": 1, "b": 2}, [{"op": "remove", "path": "/a"}], {"b": 2}),
        ({"a": 1}, [{"op": "replace", "path": "/a", "value": 5}], {"a": 5}),
        ({"a": {"x": 1}}, [{"op": "move", "from": "/a/x", "path": "/y"}], {"a": {}, "y": 1}),
        ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1}),
        ({"a/b": 1}, [{"op": "replace", "path": "/a~1b", "value": 2}], {"a/b": 2}),
        ({"v": "7"}, [{"op": "test", "path": "/v", "value": "7"}], {"v": "7"}),
    ],
)
def test_json_patch_operations(doc: Any, ops: Any, expected: Any) -> None:
    assert patch.json_patch(doc, ops) == expected


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/v", "value": "8"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "add", "path": "/x/y", "value": 1}],
    ],
)
def test_json_patch_failures_raise_patch_error(ops: Any) -> None:
    with pytest.raises(patch.PatchError):
        patch.json_patch({"v": "7"}, ops)


def test_json_patch_does_not_modify_its_input() -> None:
    doc = {"a": {"b": [1]}}
    patch.json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 2}])
    assert doc == {"a": {"b": [1]}}


@pytest.mark.parametrize(
    ("doc", "change", "expected"),
    [
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}, {"a": {"c": 2}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"b": {"c": 1}}, {"a": 1, "b": {"c": 1}}),
    ],
)
def test_merge_patch(doc: Any, change: Any, expected: Any) -> None:
    assert patch.merge_patch(doc, change) == expected


@pytest.mark.parametrize(
    ("doc", "change", "expected"),
    [
        (
            {"metadata": {"finalizers": ["a"]}},
            {"metadata": {"finalizers": ["b"]}},
            {"metadata": {"finalizers": ["a", "b"]}},
        ),
        (
            {"conditions": [{"type": "A", "s": 1}, {"type": "B", "s": 1}]},
            {"conditions": [{"type": "B", "s": 2}, {"type": "C", "s": 3}]},
            {"conditions": [{"type": "A", "s": 1}, {"type": "B", "s": 2}, {"type": "C", "s": 3}]},
        ),
        (
            {"conditions": [{"type": "A"}, {"type": "B"}]},
            {"conditions": [{"type": "A", "$patch": "delete"}]},
            {"conditions": [{"type": "B"}]},
        ),
        (
            {"data": {"a": "1", "b": "2"}},
            {"data": {"$patch": "replace", "c": "3"}},
            {"data": {"c": "3"}},
        ),
        ({"args": ["x", "y"]}, {"args": ["z"]}, {"args": ["z"]}),
        (
            {"metadata": {"finalizers": ["a", "b"]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
            {"metadata": {"finalizers": ["b"]}},
        ),
        ({"a": 1, "b": 2}, {"$retainKeys": ["a"], "a": 3}, {"a": 3}),
        ({"a": 1}, {"$setElementOrder/x": [], "a": None}, {}),
    ],
)
def test_strategic_merge_patch(doc: Any, change: Any, expected: Any) -> None:
    assert patch.strategic_merge_patch(doc, change) == expected


MAP_LIST_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "v": {"type": "integer"}},
            },
        }
    },
}


@pytest.mark.parametrize(
    ("live", "applied", "previous", "expected"),
    [
        (None, {"a": 1}, None, {"a": 1}),
        ({"a": 1, "b": 2}, {"a": 3}, None, {"a": 3, "b": 2}),
        ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": 2}, {"a": 1}),
        (
            {"items": [{"name": "x", "v": 1}, {"name": "y", "v": 1}]},
            {"items": [{"name": "y", "v": 2}]},
            None,
            {"items": [{"name": "x", "v": 1}, {"name": "y", "v": 2}]},
        ),
    ],
)
def test_server_side_apply(live: Any, applied: Any, previous: Any, expected: Any) -> None:
    assert patch.server_side_apply(live, applied, previous, MAP_LIST_SCHEMA) == expected


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a in (b, c)", {"a": "c"}, True),
        ("a notin (b,c)", {"a": "c"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("a=b,c in (d)", {"a": "b", "c": "d"}, True),
        ("a=b,c in (d)", {"a": "b"}, False),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert label_selector(selector)({"metadata": {"labels": labels}}) is matches


def test_field_selector_matches_nested_fields_and_rejects_unknown_ones() -> None:
    event = {"involvedObject": {"kind": "Node", "name": "n"}, "metadata": {"name": "e"}}
    supported = {"involvedObject.kind", "involvedObject.name", "metadata.name"}
    assert field_selector("involvedObject.kind=Node,metadata.name!=x", supported)(event)
    assert not field_selector("involvedObject.name=m", supported)(event)
    with pytest.raises(SelectorError):
        field_selector("spec.x=1", supported)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".spec.mode", ["Tunnel"]),
        ("{.spec.mode}", ["Tunnel"]),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[*].type", ["Ready", "Degraded"]),
        (".status.conditions[1].type", ["Degraded"]),
        (".status.missing", []),
    ],
)
def test_jsonpath(path: str, expected: list[Any]) -> None:
    obj = {
        "spec": {"mode": "Tunnel"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Degraded", "status": "False"},
            ]
        },
    }
    assert find(obj, compile_path(path)) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (3 * 86400, "3d"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
    ],
)
def test_human_duration_matches_kubernetes(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "default": {},
            "properties": {
                "mode": {"type": "string", "default": "Transport"},
                "inner": {"type": "object", "properties": {"n": {"type": "integer", "default": 3}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}


def test_pruning_drops_unknown_fields_but_keeps_preserved_ones() -> None:
    schema = StructuralSchema(SCHEMA)
    pruned, unknown = schema.prune(
        {
            "apiVersion": "x",
            "kind": "Y",
            "metadata": {"name": "n"},
            "top": 1,
            "spec": {"mode": None, "bogus": 1, "free": {"any": 1}, "labels": {"k": "v"}},
        }
    )
    assert pruned == {
        "apiVersion": "x",
        "kind": "Y",
        "metadata": {"name": "n"},
        "spec": {"free": {"any": 1}, "labels": {"k": "v"}},
    }
    assert unknown == ["top", "spec.bogus"]


def test_defaulting_fills_missing_fields_recursively() -> None:
    schema = StructuralSchema(SCHEMA)
    assert schema.default({}) == {"spec": {"mode": "Transport"}}
    assert schema.default({"spec": {"inner": {}}}) == {
        "spec": {"mode": "Transport", "inner": {"n": 3}}
    }


def _store_with_history() -> Store:
    store = Store(history=3, first_revision=10)
    for i in range(5):
        store.write("ADDED", "k", {"metadata": {"name": f"o{i}"}})
    return store


def test_store_replays_changes_after_a_revision() -> None:
    store = _store_with_history()
    assert [c.obj["metadata"]["name"] for c in store.changes_since("k", 13)] == ["o3", "o4"]
    assert store.changes_since("other", 13) == []


def test_store_refuses_revisions_older_than_its_history() -> None:
    store = _store_with_history()
    assert store.changes_since("k", 12) != []
    with pytest.raises(ExpiredError):
        store.changes_since("k", 11)


@pytest.mark.parametrize(
    ("change_type", "before", "after", "seen"),
    [
        ("ADDED", None, {"on": "1"}, "ADDED"),
        ("ADDED", None, {}, None),
        ("MODIFIED", {"on": "1"}, {"on": "1"}, "MODIFIED"),
        ("MODIFIED", {}, {"on": "1"}, "ADDED"),
        ("MODIFIED", {"on": "1"}, {}, "DELETED"),
        ("MODIFIED", {}, {}, None),
        ("DELETED", {"on": "1"}, {"on": "1"}, "DELETED"),
    ],
)
def test_selector_watch_events(
    change_type: str, before: dict[str, str] | None, after: dict[str, str], seen: str | None
) -> None:
    def obj(labels: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": "o", "labels": labels}}

    change = Change(change_type, "k", obj(after), 1, obj(before) if before is not None else None)
    event = event_for(change, None, [label_selector("on=1")])
    assert (event[0] if event else None) == seen


@pytest.mark.parametrize(
    ("rule", "value", "result"),
    [
        ("self.a <= self.b && self.b <= self.c", {"a": 1, "b": 2, "c": 3}, True),
        ("self.a <= self.b && self.b <= self.c", {"a": 1, "b": 5, "c": 3}, False),
        ("self.a == 1 || self.b == 1", {"a": 0, "b": 1}, True),
        ("!(self.mode in ['Tunnel', 'Transport'])", {"mode": "Tunnel"}, False),
        ("has(self.x) ? size(self.x) <= 2 : true", {}, True),
        ("has(self.x) ? size(self.x) <= 2 : true", {"x": [1, 2, 3]}, False),
        ("self.name.startsWith('node-') && self.name.size() < 10", {"name": "node-1"}, True),
        ("self.items[1] - 2 * 3 == -1", {"items": [0, 5]}, True),
        ("self.s.matches('^[a-z]+$')", {"s": "abc"}, True),
    ],
)
def test_cel_subset_evaluates_rules(rule: str, value: Any, result: bool) -> None:
    assert cel.compile_rule(rule)(value) is result


@pytest.mark.parametrize(
    "rule",
    ["self.all(x, x > 0)", "self.x == oldSelf.x", "type(self) == int", "self.x.lowerAscii()"],
)
def test_cel_beyond_the_subset_is_reported_unsupported(rule: str) -> None:
    with pytest.raises(cel.CelUnsupportedError):
        cel.compile_rule(rule)


def test_cel_missing_field_is_a_runtime_error() -> None:
    with pytest.raises(cel.CelError, match="no such key: b"):
        cel.compile_rule("self.b > 1")({"a": 1})


@pytest.mark.parametrize(
    ("fmt", "value", "ok"),
    [
        ("cidr", "10.0.0.0/16", True),
        ("cidr", "10.0.0.1/24", True),
        ("cidr", "10.0.0.0/33", False),
        ("cidr", "10.0.0.0", False),
        ("cidr", "fd00::/64", True),
        ("ipv4", "10.0.0.1", True),
        ("ipv4", "fd00::1", False),
        ("date-time", "2026-01-01T00:00:00Z", True),
        ("date-time", "2026-01-01T00:00:00.5+02:00", True),
        ("date-time", "yesterday", False),
        ("unknown-format", "anything", True),
    ],
)
def test_formats(fmt: str, value: str, ok: bool) -> None:
    assert formats.valid(fmt, value) is ok
