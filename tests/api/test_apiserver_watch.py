"""Watch semantics: resume from a resourceVersion, timeouts, bookmarks, 410 Gone, selectors.

Watches are read as raw JSON lines over HTTP (what kopf and client-go parse) and through the
official client's ``watch.Watch``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.api.conftest import ApiServer, start_apiserver

pytestmark = pytest.mark.api
WATCH: Any = watch  # the client's watch module is untyped

GROUP, VERSION, PLURAL = "strongmesh.io", "v1alpha1", "ipsecpolicies"
BASE = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def policy(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPsecPolicy",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": "c", "namespace": "strongmesh-system"}},
        },
    }


def stream(url: str, timeout: float = 10) -> Iterator[dict[str, Any]]:
    """Events of a raw watch request, one JSON document per line."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"] == "application/json"
        for line in response:
            if line.strip():
                yield json.loads(line)


@pytest.fixture
def crs(apiserver: ApiServer) -> Any:
    return k8s.CustomObjectsApi(apiserver.client())


def test_watch_resumes_after_the_given_resource_version(apiserver: ApiServer, crs: Any) -> None:
    first = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("a"))
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("b"))
    crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "a", {"spec": {"logLevel": 2}})
    crs.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "b")
    version = first["metadata"]["resourceVersion"]
    url = f"{apiserver.url}{BASE}?watch=true&resourceVersion={version}&timeoutSeconds=1"
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in stream(url)]
    assert events == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_watch_without_version_starts_with_current_objects(apiserver: ApiServer, crs: Any) -> None:
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("a"))
    url = f"{apiserver.url}{BASE}?watch=true&timeoutSeconds=1"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in stream(url)] == [("ADDED", "a")]


def test_watch_ends_after_timeout_seconds(apiserver: ApiServer) -> None:
    started = time.monotonic()
    events = list(stream(f"{apiserver.url}{BASE}?watch=true&timeoutSeconds=1"))
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 3


def test_watch_sends_bookmarks_when_allowed(tmp_path: Path) -> None:
    server = start_apiserver(tmp_path, bookmark_interval=0.2)
    try:
        url = (
            f"{server.url}{BASE}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"
            "&resourceVersion=0"
        )
        events = list(stream(url))
        bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
        assert len(bookmarks) >= 2
        assert bookmarks[0]["object"]["kind"] == "IPsecPolicy"
        assert int(bookmarks[0]["object"]["metadata"]["resourceVersion"]) > 0
        quiet = list(stream(url.replace("allowWatchBookmarks=true", "allowWatchBookmarks=false")))
        assert quiet == []
    finally:
        server.close()


def test_watch_from_a_compacted_version_is_410_gone(tmp_path: Path) -> None:
    server = start_apiserver(tmp_path, history=5)
    try:
        crs: Any = k8s.CustomObjectsApi(server.client())
        first = crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("a"))
        for level in range(10):
            crs.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL, "a", {"spec": {"logLevel": level % 4}}
            )
        url = (
            f"{server.url}{BASE}?watch=true&timeoutSeconds=1"
            f"&resourceVersion={first['metadata']['resourceVersion']}"
        )
        events = list(stream(url))
        assert len(events) == 1
        assert events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"
        watcher: Any = WATCH.Watch()
        events_after = watcher.stream(
            crs.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            resource_version=first["metadata"]["resourceVersion"],
            timeout_seconds=1,
        )
        with pytest.raises(ApiException) as caught:
            list(events_after)
        assert caught.value.status == 410
    finally:
        server.close()


def test_watch_with_label_selector_sees_objects_enter_and_leave(
    apiserver: ApiServer, crs: Any
) -> None:
    start = crs.list_cluster_custom_object(GROUP, VERSION, PLURAL)["metadata"]["resourceVersion"]
    crs.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("a"))
    crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "a", {"metadata": {"labels": {"on": "yes"}}}
    )
    crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "a", {"spec": {"logLevel": 2}})
    crs.patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, "a", {"metadata": {"labels": {"on": None}}}
    )
    url = (
        f"{apiserver.url}{BASE}?watch=true&timeoutSeconds=1&resourceVersion={start}"
        "&labelSelector=on%3Dyes"
    )
    assert [e["type"] for e in stream(url)] == ["ADDED", "MODIFIED", "DELETED"]


def test_official_client_watch_sees_live_changes(apiserver: ApiServer, crs: Any) -> None:
    import threading

    def later() -> None:
        time.sleep(0.3)
        writer: Any = k8s.CustomObjectsApi(apiserver.client())
        writer.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy("live"))

    thread = threading.Thread(target=later)
    thread.start()
    seen = []
    watcher: Any = WATCH.Watch()
    for event in watcher.stream(
        crs.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=2
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        break
    thread.join()
    assert seen == [("ADDED", "live")]


def test_watch_of_one_namespace_ignores_others(apiserver: ApiServer) -> None:
    core: Any = k8s.CoreV1Api(apiserver.client())
    start = core.list_namespaced_config_map("default").metadata.resource_version
    for ns in ("default", "kube-system"):
        core.create_namespaced_config_map(
            ns, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=f"cm-{ns}"))
        )
    url = (
        f"{apiserver.url}/api/v1/namespaces/default/configmaps?watch=true"
        f"&timeoutSeconds=1&resourceVersion={start}"
    )
    assert [e["object"]["metadata"]["name"] for e in stream(url)] == ["cm-default"]
