"""The API's operations (get, list, create, update, patch, delete) over the store.

Protocol-free: handlers translate HTTP to these calls. Each write goes through the lifecycle
rules, commits to the store (which notifies watchers) and returns the stored object.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from controller.apiserver import builtins, errors, lifecycle, patch
from controller.apiserver.errors import ApiError
from controller.apiserver.lifecycle import Options, Schemas
from controller.apiserver.registry import Registry
from controller.apiserver.resources import ResourceType, from_crd
from controller.apiserver.selectors import Predicate
from controller.apiserver.store import Store

Obj = dict[str, Any]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions"
NAMESPACE_KEY = "/namespaces"

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+json": "apply",
}


@dataclass
class WriteRequest:
    """Query parameters shared by writes."""

    dry_run: bool = False
    field_manager: str = ""
    force: bool = False
    options: Options | None = None

    def opts(self) -> Options:
        if self.options is None:
            self.options = Options()
        return self.options


def view(rt: ResourceType, obj: Obj) -> Obj:
    """The stored object as served through ``rt``'s version."""
    if obj.get("apiVersion") == rt.api_version:
        return obj
    return {**obj, "apiVersion": rt.api_version}


class Api:
    """Operations on resources; owns the registry, the store and server-side-apply state."""

    def __init__(self, history: int = 10_000, controller_delay: float = 0.2) -> None:
        self.controller_delay = controller_delay
        self.registry = Registry()
        self.store = Store(history=history)
        self.schemas = Schemas()
        # (key, namespace, name, manager, subresource) -> configuration last applied.
        self._applied: dict[tuple[str, str, str, str, str], Obj] = {}
        ns_type = self._type("", "v1", "namespaces")
        for name in DEFAULT_NAMESPACES:
            self.create(ns_type, "", {"metadata": {"name": name}}, WriteRequest())

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.registry.lookup(group, version, plural)
        assert rt is not None
        return rt

    # --- reads -----------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.key, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return view(rt, obj)

    def list_objects(
        self, rt: ResourceType, namespace: str | None, predicates: list[Predicate]
    ) -> tuple[list[Obj], int]:
        items = [
            view(rt, o)
            for o in self.store.objects(rt.key, namespace)
            if all(p(o) for p in predicates)
        ]
        return items, self.store.revision

    # --- writes ----------------------------------------------------------------------------

    def _check_namespace(self, rt: ResourceType, namespace: str, creating: bool) -> None:
        if not rt.namespaced:
            return
        ns = self.store.get(NAMESPACE_KEY, "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                f'{rt.plural} "..." is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated"
            )

    def create(self, rt: ResourceType, namespace: str, body: Obj, req: WriteRequest) -> Obj:
        self._check_namespace(rt, namespace, creating=True)
        obj = lifecycle.prepare_create(rt, namespace, body, self.schemas, req.opts())
        name = obj["metadata"]["name"]
        if self.store.get(rt.key, namespace, name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        if rt.key == CRD_KEY:
            obj = self._register_crd(obj, req.dry_run)
        if req.dry_run:
            return obj
        return view(rt, self.store.write("ADDED", rt.key, obj))

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Obj,
        subresource: str,
        req: WriteRequest,
        require_version: bool = True,
    ) -> Obj:
        old = self.store.get(rt.key, namespace, name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        new = lifecycle.prepare_update(
            rt, old, body, subresource, self.schemas, req.opts(), require_version
        )
        return self._commit_update(rt, old, new, req)

    def _commit_update(self, rt: ResourceType, old: Obj, new: Obj, req: WriteRequest) -> Obj:
        if rt.key == CRD_KEY and new.get("spec") != old.get("spec"):
            new = self._register_crd(new, req.dry_run)
        if req.dry_run or not lifecycle.changed(old, new):
            return view(rt, new)
        stored = self.store.write("MODIFIED", rt.key, new)
        if stored["metadata"].get("deletionTimestamp") and not lifecycle.finalizers_pending(stored):
            self._remove(rt, stored)
        return view(rt, stored)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        subresource: str,
        content_type: str,
        raw: bytes,
        req: WriteRequest,
    ) -> Obj:
        kind = PATCH_TYPES.get(content_type.split(";")[0].strip())
        if kind is None:
            raise errors.unsupported_media_type(content_type)
        try:
            body = yaml.safe_load(raw) if kind == "apply" else json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from exc
        old = self.store.get(rt.key, namespace, name)
        if kind == "apply":
            return self._apply(rt, namespace, name, subresource, old, body, req)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        try:
            if kind == "json":
                patched = patch.json_patch(old, body)
            elif kind == "merge":
                patched = patch.merge_patch(old, body)
            else:
                if rt.custom:
                    raise errors.unsupported_media_type(content_type)
                patched = patch.strategic_merge_patch(old, body)
        except patch.PatchFormatError as exc:
            raise errors.bad_request(str(exc)) from exc
        except patch.PatchError as exc:
            raise errors.unprocessable(str(exc)) from exc
        new = lifecycle.prepare_update(
            rt, old, patched, subresource, self.schemas, req.opts(), require_version=False
        )
        return self._commit_update(rt, old, new, req)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        subresource: str,
        old: Obj | None,
        body: Any,
        req: WriteRequest,
    ) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("apply patches must be YAML or JSON objects")
        if not req.field_manager:
            raise errors.bad_request(
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch"
            )
        for field in ("apiVersion", "kind"):
            if not body.get(field):
                raise errors.bad_request(f"invalid object: {field} must be set for apply")
        ident = (rt.key, namespace, name, req.field_manager, subresource)
        previous = self._applied.get(ident)
        merged = patch.server_side_apply(old, body, previous, rt.schema)
        meta = dict(merged.get("metadata") or {})
        meta["name"] = name
        merged["metadata"] = meta
        if old is None:
            if subresource:
                raise errors.not_found(rt.plural, rt.group, name)
            result = self.create(rt, namespace, merged, req)
        else:
            meta.pop("resourceVersion", None)
            if body.get("metadata", {}).get("resourceVersion"):
                meta["resourceVersion"] = body["metadata"]["resourceVersion"]
            new = lifecycle.prepare_update(
                rt, old, merged, subresource, self.schemas, req.opts(), require_version=False
            )
            result = self._commit_update(rt, old, new, req)
        if not req.dry_run:
            self._applied[ident] = copy.deepcopy(body)
        return result

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: Obj, req: WriteRequest
    ) -> tuple[Obj, bool]:
        """Delete or mark for deletion; returns (object, removed now)."""
        old = self.store.get(rt.key, namespace, name)
        if old is None:
            raise errors.not_found(rt.plural, rt.group, name)
        lifecycle.check_preconditions(rt, old, options)
        if why := builtins.deletion_forbidden(rt, old):
            raise errors.forbidden(why)
        if req.dry_run:
            return view(rt, old), not lifecycle.finalizers_pending(old)
        if rt.key == NAMESPACE_KEY:
            return self._delete_namespace(rt, old)
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents"):
            self._orphan_dependents(old["metadata"]["uid"])
        if lifecycle.finalizers_pending(old):
            marked = lifecycle.mark_deleting(rt, old)
            if marked is old:
                return view(rt, old), False
            return view(rt, self.store.write("MODIFIED", rt.key, marked)), False
        return view(rt, self._remove(rt, old)), True

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found: list[tuple[ResourceType, Obj]] = []
        for key in self.store.resource_keys():
            rt = self.registry.by_key(key)
            if rt is None:
                continue
            for obj in self.store.objects(key):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    found.append((rt, obj))
        return found

    def _orphan_dependents(self, uid: str) -> None:
        for rt, obj in self._dependents(uid):
            meta = dict(obj["metadata"])
            meta["ownerReferences"] = [r for r in meta["ownerReferences"] if r.get("uid") != uid]
            if not meta["ownerReferences"]:
                del meta["ownerReferences"]
            self.store.write("MODIFIED", rt.key, {**obj, "metadata": meta})

    def _collect_garbage(self, uid: str) -> None:
        """Background cascading deletion: delete dependents whose owners are all gone."""
        for rt, obj in self._dependents(uid):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(self.store.exists(r.get("uid", "")) for r in refs):
                continue
            meta = obj["metadata"]
            current = self.store.get(rt.key, meta.get("namespace", ""), meta["name"])
            if current is not None:
                self.delete(rt, meta.get("namespace", ""), meta["name"], {}, WriteRequest())

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        removed = self.store.write("DELETED", rt.key, obj)
        for ident in [i for i in self._applied if i[:3] == (rt.key, namespace, name)]:
            del self._applied[ident]
        if rt.key == CRD_KEY:
            self._unregister_crd(obj)
        if rt.namespaced:
            self._maybe_finish_namespace(namespace)
        self._later(self._collect_garbage, meta.get("uid", ""))
        return removed

    def _later(self, action: Callable[[str], None], arg: str) -> None:
        """Run a controller's reaction (garbage collection, namespace cleanup) a moment later.

        In a cluster these are separate controllers that act asynchronously; doing them
        inside the request would let clients rely on an ordering no real server gives.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            action(arg)
            return
        loop.call_later(self.controller_delay, action, arg)

    def _delete_namespace(self, rt: ResourceType, ns: Obj) -> tuple[Obj, bool]:
        marked = lifecycle.mark_deleting(rt, ns)
        if marked is not ns:
            ns = self.store.write("MODIFIED", rt.key, marked)
            self._later(self._empty_namespace, ns["metadata"]["name"])
        return view(rt, ns), False

    def _empty_namespace(self, name: str) -> None:
        """The namespace controller: delete the contents, then the namespace."""
        for key in self.store.resource_keys():
            content_type = self.registry.by_key(key)
            if content_type is None or not content_type.namespaced:
                continue
            for obj in self.store.objects(key, name):
                if lifecycle.finalizers_pending(obj):
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.store.write(
                            "MODIFIED", key, lifecycle.mark_deleting(content_type, obj)
                        )
                else:
                    self._remove(content_type, obj)
        self._maybe_finish_namespace(name)

    def _maybe_finish_namespace(self, namespace: str) -> None:
        ns = self.store.get(NAMESPACE_KEY, "", namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key in self.store.resource_keys():
            content_type = self.registry.by_key(key)
            if (
                content_type is not None
                and content_type.namespaced
                and self.store.count(key, namespace)
            ):
                return
        ns_type = self._type("", "v1", "namespaces")
        self.store.write("DELETED", ns_type.key, ns)

    # --- custom resource definitions -------------------------------------------------------

    def _register_crd(self, crd: Obj, dry_run: bool) -> Obj:
        """Serve the CRD's resources and mark it Established (as the real controllers do)."""
        try:
            if not dry_run:
                self.registry.add_crd(crd)
            else:
                from_crd(crd)
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.bad_request(f"invalid CustomResourceDefinition: {exc}") from exc
        names = crd["spec"]["names"]
        now = lifecycle.now()
        status = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now}
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        return {**crd, "status": status}

    def _unregister_crd(self, crd: Obj) -> None:
        types = self.registry.remove_crd(crd["metadata"]["name"])
        if types:
            rt = types[0]
            for obj in self.store.objects(rt.key):
                self.store.write("DELETED", rt.key, obj)

    def load_crd(self, crd: Obj) -> None:
        """Create a CRD (start-up loading from a directory)."""
        rt = self._type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        try:
            self.create(rt, "", crd, WriteRequest())
        except ApiError as exc:
            if exc.code != 409:
                raise
