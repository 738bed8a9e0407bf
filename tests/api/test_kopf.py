"""kopf's whole lifecycle against the real kube-apiserver, with the operator's identity.

The operator uses kopf as a watcher only (``@kopf.on.event``), but kopf's full machinery must
work with the chart's operator RBAC all the same: it adds its finalizer with a JSON patch that
tests ``resourceVersion``, stores progress in annotations by merge patch, writes ``status``
through the subresource, posts events, and on deletion waits for its finalizer to be removed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.kubeapi import abort_leftover_connections, load_config
from controller.operator.handlers import connection_info
from tests.api.audit import AuditEvent
from tests.api.server import OPERATOR_USER, KubeApiServer

pytestmark = pytest.mark.api

GROUP, VERSION, PLURAL = "strongmesh.io", "v1alpha1", "ipsecpolicies"
TEST_FINALIZER = "strongmesh.io/test"


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s: {check.__doc__ or check}")


@pytest.fixture
def kopf_operator(apiserver: KubeApiServer) -> Iterator[list[str]]:
    """A tiny kopf operator (own thread and loop, as kopf needs) recording what it handled,
    logged in exactly as the product's operator logs in (its kubeconfig, its login code)."""
    calls: list[str] = []
    registry = kopf.OperatorRegistry()
    credentials = connection_info(load_config(str(apiserver.operator_kubeconfig())))

    @kopf.on.login(registry=registry)  # type: ignore[untyped-decorator,unused-ignore]
    def login(**_: Any) -> kopf.ConnectionInfo:
        return credentials

    @kopf.on.startup(registry=registry)  # type: ignore[untyped-decorator,unused-ignore]
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = 0
        settings.watching.server_timeout = 5
        settings.persistence.finalizer = TEST_FINALIZER

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[untyped-decorator,unused-ignore]
    def created(name: str, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        calls.append(f"create {name}")
        kopf.info(body, reason="Handled", message="created")
        patch.status["observedGeneration"] = 1

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)  # type: ignore[untyped-decorator,unused-ignore]
    def updated(name: str, **_: Any) -> None:
        calls.append(f"update {name}")

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[untyped-decorator,unused-ignore]
    def deleted(name: str, **_: Any) -> None:
        calls.append(f"delete {name}")

    loop = asyncio.new_event_loop()
    stop: asyncio.Future[Any] = loop.create_future()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        ready_flag: asyncio.Event = asyncio.Event()

        async def main() -> None:
            task = asyncio.create_task(
                kopf.operator(
                    registry=registry,
                    standalone=True,
                    clusterwide=True,
                    stop_flag=stop,
                    ready_flag=ready_flag,
                )
            )
            await ready_flag.wait()
            ready.set()
            await task
            await abort_leftover_connections()

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield calls
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(30)
        loop.close()


def test_kopf_handles_create_update_and_delete_with_its_finalizer(
    apiserver: KubeApiServer, kopf_operator: list[str]
) -> None:
    mark = apiserver.audit.mark()
    crs: Any = k8s.CustomObjectsApi(apiserver.client())
    crs.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IPsecPolicy",
            "metadata": {"name": "mesh"},
            "spec": {
                "ipsecSubnets": ["10.77.0.0/24"],
                "credentials": {"secretRef": {"name": "c", "namespace": "strongmesh-system"}},
            },
        },
    )

    def handled() -> bool:
        obj: Any = crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
        return (
            "create mesh" in kopf_operator
            and obj.get("status", {}).get("observedGeneration") == 1
            and TEST_FINALIZER in obj["metadata"].get("finalizers", [])
        )

    eventually(handled)
    crs.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh", {"spec": {"logLevel": 3}})
    eventually(lambda: "update mesh" in kopf_operator)
    crs.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")

    def gone() -> bool:
        try:
            crs.get_cluster_custom_object(GROUP, VERSION, PLURAL, "mesh")
        except ApiException as exc:
            return bool(exc.status == 404)
        return False

    eventually(gone)
    assert kopf_operator == ["create mesh", "update mesh", "delete mesh"]
    core: Any = k8s.CoreV1Api(apiserver.client())

    def posted() -> bool:
        events = core.list_event_for_all_namespaces(field_selector="involvedObject.name=mesh")
        return any(e.reason == "Handled" for e in events.items)

    eventually(posted)
    # All of it with the chart's operator RBAC: nothing kopf asked for was refused.
    requests: list[AuditEvent] = apiserver.audit.events(mark, username=OPERATOR_USER)
    assert {(r.verb, r.resource, r.subresource) for r in requests} >= {
        ("patch", "ipsecpolicies", ""), ("patch", "ipsecpolicies", "status"),
        ("create", "events", ""),
    }
    assert [str(r) for r in requests if r.code in (401, 403)] == []
