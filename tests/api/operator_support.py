"""Helpers for the operator's API tests: a small cluster driver over the official client.

Agents are simulated by writing IPsecNode objects the way ``controller.agent.kube`` does
(create, then patch the status subresource) with that node's agent identity, so that the
writes pass the chart's RBAC and admission policy like a real agent's, and the operator is
exercised exactly through the API contract and nothing else.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlparse

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.kubeapi import load_config
from controller.operator.reconciler import Clocks, OperatorConfig
from controller.operator.run import OperatorThread
from tests.certs import Issued, make_ca, make_cert, secret_data, secret_manifest

if TYPE_CHECKING:
    from tests.api.server import KubeApiServer

G, V = "strongmesh.io", "v1alpha1"
NAMESPACE = "strongmesh-system"
T = TypeVar("T")

FAST = OperatorConfig(status_interval=1.0, resync_interval=1.0, teardown_timeout=60.0)


def wait_for(probe: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    """Poll until ``probe`` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiException as error:
            last = error
        if last:
            return last  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or probe}: last {last!r}")


@contextmanager
def running_operator(
    kubeconfig: str, config: OperatorConfig = FAST, clocks: Clocks | None = None
) -> Iterator[OperatorThread]:
    with OperatorThread(load_config(kubeconfig), config, clocks) as operator:
        yield operator


class ManualClock:
    """A monotonic clock that moves only when the test says (read from the operator's
    thread: a float attribute is read and written whole)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Cluster:
    """Create Nodes, Secrets, policies (admin) and agents' IPsecNodes (each node's agent);
    read status and events."""

    def __init__(self, apiserver: KubeApiServer) -> None:
        # Any: the official client's stubs want its model classes; plain dicts are what the
        # API carries and what these tests mean.
        self.apiserver = apiserver
        admin = apiserver.client()
        self.core: Any = cast(Any, k8s.CoreV1Api(admin))
        self.custom: Any = cast(Any, k8s.CustomObjectsApi(admin))
        self.ca: Issued = make_ca("strongmesh Test CA")
        self._agents: dict[str, Any] = {}

    def agent(self, node: str) -> Any:
        """``CustomObjectsApi`` with the identity of ``node``'s agent (its Node must exist)."""
        if node not in self._agents:
            kubeconfig = self.apiserver.agent_kubeconfig(node)
            self._agents[node] = k8s.CustomObjectsApi(self.apiserver.client(kubeconfig))
        return self._agents[node]

    # ---- cluster objects
    def node(self, name: str, address: str = "10.77.0.1", **labels: str) -> None:
        self.core.create_node(
            {
                "metadata": {"name": name, "labels": labels},
                "status": {"addresses": [{"type": "InternalIP", "address": address}]},
            }
        )

    def secret(self, name: str = "creds", data: dict[str, str] | None = None) -> dict[str, str]:
        data = data or secret_data(make_cert(self.ca, "node"), [self.ca])
        self.core.create_namespaced_secret(
            NAMESPACE, secret_manifest(data, name=name, namespace=NAMESPACE)
        )
        return data

    def replace_secret(self, data: dict[str, str], name: str = "creds") -> None:
        self.core.replace_namespaced_secret(
            name, NAMESPACE, secret_manifest(data, name=name, namespace=NAMESPACE)
        )

    def policy(self, name: str = "mesh", secret: str = "creds", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{G}/{V}",
            "kind": "IPsecPolicy",
            "metadata": {"name": name},
            "spec": {
                "ipsecSubnets": ["10.77.0.0/24"],
                "credentials": {"secretRef": {"name": secret, "namespace": NAMESPACE}},
                **spec,
            },
        }
        result: dict[str, Any] = self.custom.create_cluster_custom_object(
            G, V, "ipsecpolicies", body
        )
        return result

    def get_policy(self, name: str = "mesh") -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_cluster_custom_object(G, V, "ipsecpolicies", name)
        return result

    def policy_exists(self, name: str = "mesh") -> bool:
        try:
            self.get_policy(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    # ---- a simulated agent
    def report(
        self,
        node: str,
        policies: dict[str, int],
        enforcing: bool = True,
        message: str = "",
        peers: tuple[str, ...] = (),
        as_admin: bool = False,
    ) -> None:
        """Write the node's IPsecNode as its agent would: policies at generations, SAs.

        ``as_admin`` writes as the cluster admin instead: for an IPsecNode whose Node does not
        exist, there is no agent token to bind to it."""
        writer = self.custom if as_admin else self.agent(node)
        try:
            writer.create_cluster_custom_object(
                G,
                V,
                "ipsecnodes",
                {
                    "apiVersion": f"{G}/{V}",
                    "kind": "IPsecNode",
                    "metadata": {"name": node},
                    "spec": {"addresses": [], "identity": f"CN={node}"},
                },
            )
        except ApiException as error:
            if error.status != 409:
                raise
        status = {
            "policies": [
                {"name": p, "generation": g, "enforcing": enforcing, "message": message}
                for p, g in policies.items()
            ],
            "sas": [
                {"policy": p, "peer": peer, "state": "INSTALLED"}
                for p in policies
                for peer in peers
            ],
        }
        writer.patch_cluster_custom_object_status(G, V, "ipsecnodes", node, {"status": status})

    # ---- reading what the operator wrote
    def condition(self, type_: str, name: str = "mesh") -> dict[str, Any] | None:
        status = self.get_policy(name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def condition_is(self, type_: str, value: str, name: str = "mesh") -> dict[str, Any] | None:
        found = self.condition(type_, name)
        return found if found and found["status"] == value else None

    def events(self, name: str = "mesh", reason: str | None = None) -> list[Any]:
        events = self.core.list_namespaced_event("default").items
        return [
            e
            for e in events
            if e.involved_object.name == name and (reason is None or e.reason == reason)
        ]


class Proxy:
    """A localhost TCP proxy to the API server that can simulate an outage.

    It forwards bytes and reads none of them (the API speaks TLS; the serving certificate
    names 127.0.0.1, so a kubeconfig pointing at the proxy verifies). Which requests went
    through is the audit log's business (``tests.api.audit``)."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 443)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def running(self) -> bool:
        return self._server is not None

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}


class ProxyThread:
    """``Proxy`` on a loop of its own, for synchronous tests (the operator has its own loop)."""

    def __init__(self, upstream: str) -> None:
        self.proxy = Proxy(upstream)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.proxy.url

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> ProxyThread:
        self._thread.start()
        self._call(self.proxy.start())
        return self

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def restore(self) -> None:
        self._call(self.proxy.start())

    def stop(self) -> None:
        if self.proxy.running:
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
