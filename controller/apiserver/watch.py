"""Watch semantics: which event a change becomes for a watcher with selectors.

As in the watch cache of kube-apiserver, an object that starts matching a watcher's selectors
arrives as ADDED and one that stops matching as DELETED, so that a client's cache built from
list + watch stays equal to a fresh filtered list.
"""

from __future__ import annotations

from typing import Any

from controller.apiserver.selectors import Predicate
from controller.apiserver.store import Change

Obj = dict[str, Any]


def matches(obj: Obj | None, namespace: str | None, predicates: list[Predicate]) -> bool:
    if obj is None:
        return False
    if namespace is not None and obj.get("metadata", {}).get("namespace", "") != namespace:
        return False
    return all(p(obj) for p in predicates)


def event_for(
    change: Change, namespace: str | None, predicates: list[Predicate]
) -> tuple[str, Obj] | None:
    """The (type, object) a watcher sees for ``change``, or None if it sees nothing."""
    now = matches(change.obj, namespace, predicates)
    if change.type == "ADDED":
        return ("ADDED", change.obj) if now else None
    if change.type == "DELETED":
        before = matches(change.previous or change.obj, namespace, predicates)
        return ("DELETED", change.obj) if before else None
    before = matches(change.previous, namespace, predicates)
    if now and before:
        return ("MODIFIED", change.obj)
    if now:
        return ("ADDED", change.obj)
    if before:
        return ("DELETED", change.obj)
    return None


def bookmark(kind: str, api_version: str, revision: int, initial_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": meta},
    }
