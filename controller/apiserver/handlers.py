"""HTTP: routing of Kubernetes API paths to the operations, content negotiation, watch streams.

Paths: ``/api/v1/...`` and ``/apis/{group}/{version}/...`` with
``[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]``; discovery, ``/openapi/v3``,
``/version`` and health endpoints. Authentication is not checked (any token is accepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from multidict import CIMultiDict

from controller.apiserver import discovery, errors, openapi, protobuf
from controller.apiserver.api import Api, WriteRequest, view
from controller.apiserver.errors import ApiError
from controller.apiserver.lifecycle import Options
from controller.apiserver.resources import ResourceType
from controller.apiserver.selectors import Predicate, SelectorError, field_selector, label_selector
from controller.apiserver.store import ExpiredError
from controller.apiserver.table import table
from controller.apiserver.watch import bookmark, event_for

Obj = dict[str, Any]
JSON_TYPE = "application/json"
log = logging.getLogger(__name__)
MAX_WATCH_SECONDS = 1800


@dataclass(frozen=True)
class Target:
    """A resource request: what the URL names."""

    rt: ResourceType
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    subresource: str


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def respond(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for warning in warnings or ():
        escaped = json.dumps(warning)[1:-1]  # Go's strconv.Quote, near enough
        headers.add("Warning", f'299 - "{escaped}"')
    return web.Response(body=_dumps(body), status=status, content_type=JSON_TYPE, headers=headers)


def _flag(value: str | None) -> bool:
    return value in ("true", "1", "True")


class Handlers:
    """aiohttp request handlers bound to one Api."""

    def __init__(self, api: Api, bookmark_interval: float = 10.0) -> None:
        self.api = api
        self.bookmark_interval = bookmark_interval
        self.closing = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as exc:
            return respond(exc.status(), exc.code)
        except SelectorError as exc:
            return respond(errors.bad_request(str(exc)).status(), 400)
        except Exception as exc:
            # Answered like kube-apiserver's InternalError; the traceback goes to the log.
            log.exception("internal error on %s %s", request.method, request.path_qs)
            return respond(
                ApiError(500, "InternalError", f"Internal error occurred: {exc!r}").status(), 500
            )

    # --- routing ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        registry = self.api.registry
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return respond(discovery.VERSION_INFO)
        if path == "/":
            return respond({"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version"]})
        if parts[0] == "openapi":
            return self._openapi(parts)
        if path == "/api":
            return respond(discovery.api_versions(request.host))
        if path == "/apis":
            return respond(discovery.api_group_list(registry))
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[0] == "apis" and len(parts) == 2:
            doc = discovery.api_group(registry, parts[1])
            if doc is None:
                raise errors.page_not_found(path)
            return respond(doc)
        else:
            raise errors.page_not_found(path)
        if not rest:
            listing = discovery.api_resource_list(registry, group, version)
            if listing is None:
                raise errors.page_not_found(path)
            return respond(listing)
        target = self._target(group, version, rest, path)
        return await self._resource(request, target)

    def _openapi(self, parts: list[str]) -> web.Response:
        if parts[:2] != ["openapi", "v3"]:
            raise errors.page_not_found("/" + "/".join(parts))
        if len(parts) == 2:
            return respond(openapi.index(self.api.registry))
        rest = parts[2:]
        if rest[0] == "api" and len(rest) == 2:
            doc = openapi.group_version_document(self.api.registry, "", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            doc = openapi.group_version_document(self.api.registry, rest[1], rest[2])
        else:
            doc = None
        if doc is None:
            raise errors.page_not_found("/" + "/".join(parts))
        return respond(doc)

    def _target(self, group: str, version: str, rest: list[str], path: str) -> Target:
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        rt = self.api.registry.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
            raise errors.page_not_found(path)
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else ""
        if (
            sub
            and not (sub == "status" and rt.status_subresource)
            and not (sub == "finalize" and rt.plural == "namespaces")
        ):
            raise errors.page_not_found(path)
        if rt.namespaced and name is not None and namespace is None:
            raise errors.page_not_found(path)
        if sub == "finalize":
            sub = ""
        return Target(rt, namespace, name, sub)

    # --- resources -------------------------------------------------------------------------

    async def _resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        query = request.query
        ns = t.namespace or ""
        if method == "GET":
            if t.name is None:
                if _flag(query.get("watch")):
                    return await self._watch(request, t)
                return self._list(request, t)
            return self._render(request, t.rt, self.api.get(t.rt, ns, t.name))
        req = WriteRequest(
            dry_run="All" in query.getall("dryRun", []),
            field_manager=query.get("fieldManager", ""),
            force=_flag(query.get("force")),
            options=Options(field_validation=query.get("fieldValidation", "Warn")),
        )
        if method == "POST" and t.name is None:
            body = await self._json(request)
            created = self.api.create(t.rt, ns, body, req)
            return respond(created, 201, req.opts().warnings)
        if method == "PUT" and t.name is not None:
            body = await self._json(request)
            updated = self.api.update(t.rt, ns, t.name, body, t.subresource, req)
            return respond(updated, 200, req.opts().warnings)
        if method == "PATCH" and t.name is not None:
            raw = await request.read()
            existed = self.api.store.get(t.rt.key, ns, t.name) is not None
            patched = self.api.patch(
                t.rt, ns, t.name, t.subresource, request.headers.get("Content-Type", ""), raw, req
            )
            return respond(patched, 200 if existed else 201, req.opts().warnings)
        if method == "DELETE" and t.name is not None:
            if "protobuf" in request.headers.get("Content-Type", ""):
                options: Obj = {}  # DeleteOptions in protobuf: defaults, plus the query below
            else:
                options = await self._json(request, allow_empty=True)
            # DeleteOptions may also come as query parameters.
            for param in ("propagationPolicy", "orphanDependents"):
                if param in query and param not in options:
                    options[param] = (
                        query[param] if param == "propagationPolicy" else _flag(query[param])
                    )
            obj, removed = self.api.delete(t.rt, ns, t.name, options, req)
            if removed and t.rt.plural != "namespaces":
                meta = obj["metadata"]
                return respond(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": meta["name"],
                            "group": t.rt.group,
                            "kind": t.rt.plural,
                            "uid": meta.get("uid"),
                        },
                    }
                )
            return respond(obj)
        if method == "DELETE":
            items, _ = self.api.list_objects(t.rt, t.namespace, self._predicates(request, t.rt))
            deleted = [
                self.api.delete(
                    t.rt, i["metadata"].get("namespace", ""), i["metadata"]["name"], {}, req
                )[0]
                for i in items
            ]
            return respond(
                {
                    "kind": t.rt.list_kind,
                    "apiVersion": t.rt.api_version,
                    "metadata": {"resourceVersion": str(self.api.store.revision)},
                    "items": deleted,
                }
            )
        raise errors.method_not_allowed()

    async def _json(self, request: web.Request, allow_empty: bool = False) -> Obj:
        raw = await request.read()
        if not raw.strip():
            if allow_empty:
                return {}
            raise errors.bad_request("the request body is empty")
        content_type = request.headers.get("Content-Type", "")
        if "protobuf" in content_type:
            try:
                return protobuf.decode(raw)
            except (protobuf.ProtobufError, UnicodeDecodeError) as exc:
                raise errors.unsupported_media_type(f"{content_type} ({exc})") from exc
        try:
            body = yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"error decoding the request body: {exc}") from exc
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be an object")
        return body

    def _predicates(self, request: web.Request, rt: ResourceType) -> list[Predicate]:
        predicates: list[Predicate] = []
        if selector := request.query.get("labelSelector"):
            predicates.append(label_selector(selector))
        if selector := request.query.get("fieldSelector"):
            supported = {
                "metadata.name",
                "metadata.namespace",
                *rt.field_labels,
                *rt.selectable_fields,
            }
            predicates.append(field_selector(selector, supported))
        return predicates

    def _render(self, request: web.Request, rt: ResourceType, obj: Obj) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            include = request.query.get("includeObject", "Metadata")
            return respond(table(rt, [obj], include_object=include))
        if "as=PartialObjectMetadata" in accept:
            return respond(
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            )
        return respond(obj)

    def _list(self, request: web.Request, t: Target) -> web.Response:
        items, revision = self.api.list_objects(t.rt, t.namespace, self._predicates(request, t.rt))
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            include = request.query.get("includeObject", "Metadata")
            return respond(table(t.rt, items, str(revision), include))
        if "as=PartialObjectMetadataList" in accept:
            return respond(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": str(revision)},
                    "items": [
                        {
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": i["metadata"],
                        }
                        for i in items
                    ],
                }
            )
        return respond(
            {
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            }
        )

    # --- watch -----------------------------------------------------------------------------

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        query = request.query
        predicates = self._predicates(request, t.rt)
        timeout = min(float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        deadline = time.monotonic() + timeout
        bookmarks = _flag(query.get("allowWatchBookmarks"))
        send_initial = _flag(query.get("sendInitialEvents"))
        as_table = "as=Table" in request.headers.get("Accept", "")
        version = query.get("resourceVersion", "")
        store = self.api.store
        queue = store.subscribe(t.rt.key)
        try:
            response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
            response.enable_chunked_encoding()
            initial: list[tuple[str, Obj]] = []
            last = store.revision
            expired: ExpiredError | None = None
            if version in ("", "0") or send_initial:
                items, last = self.api.list_objects(t.rt, t.namespace, predicates)
                initial = [("ADDED", o) for o in items]
            else:
                try:
                    start = int(version)
                except ValueError as exc:
                    raise errors.bad_request(f"invalid resource version: {version!r}") from exc
                try:
                    changes = store.changes_since(t.rt.key, start)
                except ExpiredError as exc:
                    expired = exc
                    changes = []
                for change in changes:
                    seen = event_for(change, t.namespace, predicates)
                    if seen:
                        initial.append(seen)
            await response.prepare(request)
            if expired is not None:
                status = errors.gone(str(expired)).status()
                await response.write(_dumps({"type": "ERROR", "object": status}) + b"\n")
                return response
            for kind, obj in initial:
                await self._send(response, t.rt, kind, obj, as_table)
            if send_initial and bookmarks:
                await response.write(
                    _dumps(bookmark(t.rt.kind, t.rt.api_version, last, True)) + b"\n"
                )
            with contextlib.suppress(ConnectionError):  # the client went away
                await self._follow(response, t, queue, predicates, deadline, bookmarks, as_table)
            return response
        finally:
            store.unsubscribe(t.rt.key, queue)

    async def _follow(
        self,
        response: web.StreamResponse,
        t: Target,
        queue: asyncio.Queue[Any],
        predicates: list[Predicate],
        deadline: float,
        bookmarks: bool,
        as_table: bool,
    ) -> None:
        next_bookmark = time.monotonic() + self.bookmark_interval
        while not self.closing:
            now = time.monotonic()
            if now >= deadline:
                return
            wait = deadline - now
            if bookmarks:
                wait = min(wait, max(next_bookmark - now, 0.0))
            try:
                change = await asyncio.wait_for(queue.get(), timeout=wait)
            except TimeoutError:
                if bookmarks and time.monotonic() >= next_bookmark:
                    event = bookmark(t.rt.kind, t.rt.api_version, self.api.store.revision)
                    await response.write(_dumps(event) + b"\n")
                    next_bookmark = time.monotonic() + self.bookmark_interval
                continue
            if change is None:
                return
            seen = event_for(change, t.namespace, predicates)
            if seen:
                await self._send(response, t.rt, seen[0], seen[1], as_table)

    async def _send(
        self, response: web.StreamResponse, rt: ResourceType, kind: str, obj: Obj, as_table: bool
    ) -> None:
        body = table(rt, [view(rt, obj)]) if as_table else view(rt, obj)
        await response.write(_dumps({"type": kind, "object": body}) + b"\n")
