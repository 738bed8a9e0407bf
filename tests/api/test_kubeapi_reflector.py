"""``controller.kubeapi``'s Reflector (list + watch) against the real kube-apiserver.

On a throwaway cluster-scoped CRD of its own (``widgets.test.strongmesh.io``), so that the
tests can do to it what must not happen to the product's CRDs: delete and re-create it, which
gives it a new watch cache that no longer knows the versions a client saw before (410 Gone).
The client connects with the admin's client certificate, through ``Proxy`` when a test needs
an outage; what it asked the server for is read from the audit log, what the server streamed
back from ``RecordingClient``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.kubeapi import KubeClient, Reflector, abort_leftover_connections, load_config
from hack.labkit.controlplane import kubeconfig, write_kubeconfig
from tests.api.audit import AuditEvent
from tests.api.conftest import THROWAWAY_GROUP
from tests.api.operator_support import Proxy
from tests.api.server import KubeApiServer

pytestmark = pytest.mark.api

VERSION, PLURAL = "v1", "widgets"
CRD_NAME = f"{PLURAL}.{THROWAWAY_GROUP}"
PATH = f"/apis/{THROWAWAY_GROUP}/{VERSION}/{PLURAL}"
ADMIN = "strongmesh-admin"
FAST_RETRY = (0.1, 0.5)


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": THROWAWAY_GROUP,
            "scope": "Cluster",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
                    }},
                }},
            }],
        },
    }


def widget(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{THROWAWAY_GROUP}/{VERSION}", "kind": "Widget",
        "metadata": {"name": name, "labels": labels}, "spec": {"size": 1},
    }


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Widgets:
    """The throwaway CRD and its objects, through the official client (admin)."""

    def __init__(self, apiserver: KubeApiServer) -> None:
        api_client = apiserver.client()
        self.ext: Any = k8s.ApiextensionsV1Api(api_client)
        self.custom: Any = k8s.CustomObjectsApi(api_client)
        self.core: Any = k8s.CoreV1Api(api_client)

    def define(self) -> None:
        self.ext.create_custom_resource_definition(crd())
        self._until(self._served, "the widgets CRD to be served")

    def undefine(self) -> None:
        self.ext.delete_custom_resource_definition(CRD_NAME)
        self._until(self._gone, "the widgets CRD to be gone")

    def _served(self) -> bool:
        try:
            self.custom.list_cluster_custom_object(THROWAWAY_GROUP, VERSION, PLURAL)
        except ApiException as error:  # 404 until established, 429 while storage initializes
            if error.status in (404, 429, 503):
                return False
            raise
        return True

    def _gone(self) -> bool:
        try:
            self.ext.read_custom_resource_definition(CRD_NAME)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    @staticmethod
    def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def create(self, name: str, **labels: str) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_cluster_custom_object(
            THROWAWAY_GROUP, VERSION, PLURAL, widget(name, **labels))
        return created

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(THROWAWAY_GROUP, VERSION, PLURAL, name, body)

    def delete(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(THROWAWAY_GROUP, VERSION, PLURAL, name)


class RecordingClient(KubeClient):
    """A ``KubeClient`` that keeps what it sent as watch parameters and what each watch
    streamed back (event type and resourceVersion, ERROR codes): the server's answers, seen
    from the client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watches: list[dict[str, str]] = []
        self.events: list[tuple[str, str]] = []  # (type, resourceVersion or ERROR code)

    async def watch(
        self, path: str, params: Mapping[str, str]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watches.append(dict(params))
        async for kind, obj in super().watch(path, params):
            mark = str(obj.get("code")) if kind == "ERROR" else str(
                (obj.get("metadata") or {}).get("resourceVersion", ""))
            self.events.append((kind, mark))
            yield kind, obj


@pytest.fixture
def widgets(apiserver: KubeApiServer) -> Widgets:
    """The throwaway CRD, defined (``clean`` deletes it after the test)."""
    handle = Widgets(apiserver)
    handle.define()
    return handle


@pytest.fixture
async def proxy(apiserver: KubeApiServer) -> AsyncIterator[Proxy]:
    running = Proxy(apiserver.url)
    await running.start()
    yield running
    if running.running:
        await running.cut()
    await abort_leftover_connections()


def admin_config(apiserver: KubeApiServer, server: str) -> Any:
    """The admin's credentials (client certificate) with ``server`` as the address."""
    admin = load_config(str(apiserver.kubeconfig))
    assert admin.ca_data is not None
    assert admin.cert_data is not None
    assert admin.key_data is not None
    path = write_kubeconfig(apiserver.directory / "admin-via.kubeconfig", kubeconfig(
        server, admin.ca_data, user="admin", cert_pem=admin.cert_data, key_pem=admin.key_data))
    return load_config(str(path))


class Running:
    """A Reflector on the widgets, running in the test's loop, counting its notifications."""

    def __init__(self, client: RecordingClient, **options: Any) -> None:
        self.client = client
        self.changes = 0
        self.reflector = Reflector(client, PATH, self._changed, backoff=FAST_RETRY, **options)
        self.task = asyncio.create_task(self.reflector.run())

    def _changed(self) -> None:
        self.changes += 1

    def names(self) -> set[str]:
        return set(self.reflector.items)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


@pytest.fixture
async def reflectors() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        await running.stop()
    await abort_leftover_connections()


def requests_of_the_reflector(apiserver: KubeApiServer, mark: int) -> list[AuditEvent]:
    return [
        e for e in apiserver.audit.events(mark, username=ADMIN)
        if e.user_agent == "strongmesh" and e.resource == PLURAL
    ]


async def test_lists_then_follows_creations_changes_and_deletions(
    apiserver: KubeApiServer, widgets: Widgets, reflectors: list[Running]
) -> None:
    widgets.create("a")
    widgets.create("b")
    running = Running(RecordingClient(load_config(str(apiserver.kubeconfig)), timeout=5))
    reflectors.append(running)
    await until(lambda: running.reflector.synced, "the first list")
    assert running.names() == {"a", "b"}
    widgets.create("c")
    widgets.patch("a", {"spec": {"size": 2}})
    widgets.delete("b")
    await until(lambda: running.names() == {"a", "c"}
                and running.reflector.items["a"]["spec"]["size"] == 2, "the changes")
    assert running.reflector.connected


async def test_field_selector_keeps_one_object(
    apiserver: KubeApiServer, widgets: Widgets, reflectors: list[Running]
) -> None:
    widgets.create("a")
    widgets.create("b")
    running = Running(RecordingClient(load_config(str(apiserver.kubeconfig)), timeout=5),
                      field_selector="metadata.name=a")
    reflectors.append(running)
    await until(lambda: running.reflector.synced, "the first list")
    assert running.names() == {"a"}
    seen = running.changes
    widgets.patch("b", {"spec": {"size": 5}})  # filtered out by the server...
    widgets.patch("a", {"spec": {"size": 7}})  # ...which streams this one
    await until(lambda: running.reflector.items["a"]["spec"]["size"] == 7, "a's change")
    assert running.changes == seen + 1
    assert running.names() == {"a"}


async def test_resumes_after_an_outage_from_the_last_version_without_listing_again(
    apiserver: KubeApiServer, widgets: Widgets, proxy: Proxy, reflectors: list[Running]
) -> None:
    widgets.create("a")
    mark = apiserver.audit.mark()
    client = RecordingClient(admin_config(apiserver, proxy.url), timeout=5)
    running = Running(client)
    reflectors.append(running)
    await until(lambda: running.reflector.synced, "the first list")
    seen_version = client.watches[-1]["resourceVersion"]
    await proxy.cut()
    await until(lambda: not running.reflector.connected, "the outage to be noticed")
    widgets.create("b")  # while the reflector cannot see it
    assert running.names() == {"a"}  # kept through the outage
    await proxy.start()
    await until(lambda: running.names() == {"a", "b"}, "the resumed watch to deliver b")
    assert running.reflector.connected
    resumed = client.watches[1:]
    assert resumed
    assert resumed[0]["resourceVersion"] == seen_version
    await running.stop()  # its watch ends, and so reaches the audit log
    requests = apiserver.audit.wait_for(
        mark, lambda events: sum(e.verb == "watch" for e in events) >= 2,
        username=ADMIN, what="both watches of the reflector",
    )
    verbs = [e.verb for e in requests if e.user_agent == "strongmesh" and e.resource == PLURAL]
    assert verbs.count("list") == 1, verbs


async def test_relists_when_the_server_no_longer_has_its_version(
    apiserver: KubeApiServer, widgets: Widgets, proxy: Proxy, reflectors: list[Running]
) -> None:
    """410 Gone: the resource was re-created while the reflector was cut off, so the server's
    watch cache starts after the version the reflector resumes from."""
    widgets.create("old")
    mark = apiserver.audit.mark()
    client = RecordingClient(admin_config(apiserver, proxy.url), timeout=5)
    running = Running(client)
    reflectors.append(running)
    await until(lambda: running.names() == {"old"}, "the first list")
    await proxy.cut()
    await until(lambda: not running.reflector.connected, "the outage to be noticed")
    widgets.undefine()
    widgets.define()
    widgets.create("new")
    await proxy.start()
    await until(lambda: running.names() == {"new"}, "a fresh list after 410 Gone")
    assert ("ERROR", "410") in client.events
    lists = [e for e in requests_of_the_reflector(apiserver, mark) if e.verb == "list"]
    assert len(lists) == 2, [str(e) for e in lists]


async def test_resumes_from_the_version_of_a_bookmark(
    apiserver: KubeApiServer, widgets: Widgets, reflectors: list[Running]
) -> None:
    """kube-apiserver sends a bookmark shortly before a watch's timeoutSeconds when its
    watch cache has moved past what the watcher saw; the reflector's next watch starts
    there (a quiet resource does not fall behind and hit 410 after a restart)."""
    widgets.create("a")
    client = RecordingClient(load_config(str(apiserver.kubeconfig)), timeout=5)
    running = Running(client, timeout_seconds=4)
    reflectors.append(running)
    await until(lambda: running.reflector.synced and bool(client.watches), "the first watch")
    first = client.watches[0]["resourceVersion"]
    # Move the cluster's revision on elsewhere, then make the widgets' watch cache catch up
    # with it (a consistent list asks etcd for progress).
    widgets.core.create_namespaced_config_map("default", {"metadata": {"generateName": "rv-"}})
    widgets.custom.list_cluster_custom_object(THROWAWAY_GROUP, VERSION, PLURAL)
    await until(lambda: len(client.watches) >= 2, "the watch to time out and resume", 15)
    bookmarks = [rv for kind, rv in client.events if kind == "BOOKMARK"]
    assert bookmarks, client.events
    assert int(bookmarks[-1]) > int(first)
    assert client.watches[1]["resourceVersion"] == bookmarks[-1]
    assert running.names() == {"a"}
