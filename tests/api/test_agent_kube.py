"""The agent's cluster-mode inputs and reporter against the real kube-apiserver.

The agent runs with the identity the chart gives node-1's agent pod (ServiceAccount
``strongmesh-agent``, token bound to Node node-1) and talks to the API through ``Proxy``, a
TCP proxy owned by the test that can cut the connection (an API outage) and restore it. The
real operator runs too: agents learn policies only from the IPsecPeerSlices it publishes.
Which requests the agent made is read from the server's audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from controller.agent.interfaces import AgentInputs
from controller.agent.kube import KubeInputSource, KubeReporter
from controller.facts import NodeFacts
from controller.kubeapi import KubeClient, abort_leftover_connections, load_config
from controller.models.node import IPsecNodeStatus
from controller.operator.run import OperatorThread
from tests.api.audit import AuditEvent
from tests.api.operator_support import Proxy
from tests.api.server import AGENT_USER, KubeApiServer
from tests.certs import make_ca, make_cert, secret_data, secret_manifest

pytestmark = pytest.mark.api
G, V = "strongmesh.io", "v1alpha1"
NS = "strongmesh-system"


@pytest.fixture
def core(apiserver: KubeApiServer) -> Any:
    return cast(Any, k8s.CoreV1Api(apiserver.client()))


@pytest.fixture
def custom(apiserver: KubeApiServer) -> Any:
    return k8s.CustomObjectsApi(apiserver.client())


@pytest.fixture
async def proxy(apiserver: KubeApiServer) -> AsyncIterator[Proxy]:
    running = Proxy(apiserver.url)
    await running.start()
    yield running
    if running.running:
        await running.cut()
    await abort_leftover_connections()


@pytest.fixture
async def source(
    apiserver: KubeApiServer, proxy: Proxy, core: Any, operator: OperatorThread
) -> AsyncIterator[KubeInputSource]:
    """node-1's agent inputs. Node node-1 exists first: its agent's token is bound to it."""
    core.create_node(node("node-1", "10.77.0.1", pool="a"))
    kubeconfig = apiserver.agent_kubeconfig("node-1", server=proxy.url)
    client = KubeClient(load_config(str(kubeconfig)), timeout=5)
    inputs = KubeInputSource(client, "node-1")
    yield inputs
    await inputs.close()
    await client.close()


def node(name: str, address: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": address}]},
    }


def policy(name: str, secret: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}", "kind": "IPsecPolicy", "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": labels},
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": secret, "namespace": NS}},
        },
    }


CA = make_ca("agent test CA")


def creds(cn: str) -> dict[str, str]:
    return secret_data(make_cert(CA, cn), [CA])


async def settle(
    source: KubeInputSource, accept: Callable[[AgentInputs], bool], timeout: float = 10.0
) -> AgentInputs:
    """Snapshots until one satisfies ``accept`` (waking on changes, as the agent loop does)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        snapshot = await source.snapshot()
        if accept(snapshot):
            return snapshot
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError(f"inputs never settled: {snapshot}")
        await source.wait_changed(min(left, 0.5))


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``check`` without consuming the source's wake-ups."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def names(inputs: AgentInputs) -> list[str]:
    return [p.policy.metadata.name for p in inputs.policies]


def seed(core: Any, custom: Any) -> dict[str, str]:
    """A second node, two policies (one per pool), their Secrets and an unrelated one."""
    data = creds("a")
    core.create_node(node("node-2", "10.77.0.2", pool="b"))
    core.create_namespaced_secret(NS, secret_manifest(data, "creds-a", NS))
    core.create_namespaced_secret(NS, secret_manifest(creds("b"), "creds-b", NS))
    core.create_namespaced_secret(NS, secret_manifest(creds("x"), "unrelated", NS))
    custom.create_cluster_custom_object(G, V, "ipsecpolicies", policy("pa", "creds-a", pool="a"))
    custom.create_cluster_custom_object(G, V, "ipsecpolicies", policy("pb", "creds-b", pool="b"))
    return data


async def test_inputs_are_the_selecting_policies_with_secrets_and_node_facts(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    data = seed(core, custom)
    inputs = await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    assert inputs.node == NodeFacts("node-1", ("10.77.0.1",))
    assert inputs.node_labels == {"pool": "a"}
    (only,) = inputs.policies
    assert (only.generation, only.deleting) == (1, False)
    assert only.secret_data == data


async def test_label_and_secret_changes_wake_the_agent(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    seed(core, custom)
    first = await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    core.patch_node("node-1", {"metadata": {"labels": {"pool": "b"}}})
    assert await source.wait_changed(5)
    second = await settle(source, lambda i: names(i) == ["pb"] and not i.errors)
    assert second.policies[0].secret_data is not None
    renewed = creds("b-renewed")
    core.replace_namespaced_secret("creds-b", NS, secret_manifest(renewed, "creds-b", NS))
    third = await settle(
        source, lambda i: bool(i.policies) and i.policies[0].secret_data == renewed
    )
    assert names(third) == ["pb"]
    assert first.policies[0].secret_data != third.policies[0].secret_data


def _allowed_for_node_1(request: AuditEvent) -> bool:
    """What node-1's agent may ask for (DESIGN.md: its Node, the referenced Secret by name,
    the published policies and peers, its own IPsecNode; never IPsecPolicies, never a watch
    of IPsecNodes)."""
    if request.resource == "nodes":
        return (request.verb == "get" and request.name == "node-1") or (
            request.verb in ("list", "watch") and request.field_selector == "metadata.name=node-1"
        )
    if request.resource == "secrets":
        return (
            request.namespace == NS
            and request.verb in ("list", "watch")
            and request.field_selector == "metadata.name=creds-a"
        )
    if request.resource == "ipsecpeerslices":
        return request.verb in ("list", "watch") and not request.subresource
    if request.resource == "ipsecnodes":
        return request.verb in ("get", "create", "patch") and request.name == "node-1"
    return False


async def test_agent_watches_slices_its_node_and_secrets_never_policies_or_ipsecnodes(
    apiserver: KubeApiServer, source: KubeInputSource, core: Any, custom: Any
) -> None:
    mark = apiserver.audit.mark()
    seed(core, custom)
    await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    reporter = KubeReporter(source.client, "node-1")
    await reporter.report(NodeFacts("node-1", ("10.77.0.1",)), "CN=a", IPsecNodeStatus())
    await source.close()
    await source.client.close()  # every watch ends now, and so reaches the audit log

    def watched(requests: list[AuditEvent]) -> set[str]:
        return {r.resource for r in requests if r.verb == "watch"}

    requests = apiserver.audit.wait_for(
        mark, lambda r: watched(r) >= {"ipsecpeerslices", "nodes", "secrets"},
        username=AGENT_USER, node="node-1", what="node-1's agent's watches",
    )
    assert requests
    for request in requests:
        assert _allowed_for_node_1(request), str(request)
        assert request.code not in (401, 403), str(request)  # nothing it asked for was refused
    assert watched(requests) == {"ipsecpeerslices", "nodes", "secrets"}
    assert {r.verb for r in requests if r.resource == "ipsecnodes"} <= {"get", "create", "patch"}


async def test_reporter_writes_its_own_ipsecnode_only_when_something_changed(
    source: KubeInputSource, custom: Any
) -> None:
    reporter = KubeReporter(source.client, "node-1", heartbeat=3600)
    facts = NodeFacts("node-1", ("10.77.0.1",))
    status = IPsecNodeStatus.model_validate({
        "policies": [{"name": "pa", "generation": 1}],
        "sas": [{"policy": "pa", "peer": "10.77.0.2", "state": "INSTALLED", "bytesIn": 10}],
    })
    await reporter.report(facts, "CN=node-1", status)
    written = custom.get_cluster_custom_object(G, V, "ipsecnodes", "node-1")
    assert written["spec"] == {"addresses": ["10.77.0.1"], "identity": "CN=node-1"}
    assert written["status"]["policies"][0]["name"] == "pa"
    assert written["status"]["lastHeartbeat"]
    version = written["metadata"]["resourceVersion"]

    more_traffic = status.model_copy(deep=True)
    more_traffic.sas[0].bytes_in = 9999
    await reporter.report(facts, "CN=node-1", more_traffic)
    assert custom.get_cluster_custom_object(G, V, "ipsecnodes", "node-1")["metadata"][
        "resourceVersion"] == version

    await reporter.report(facts, "CN=node-1", IPsecNodeStatus())  # the policy was dropped
    after = custom.get_cluster_custom_object(G, V, "ipsecnodes", "node-1")
    assert after["status"]["policies"] == []
    assert after["status"]["sas"] == []

    custom.delete_cluster_custom_object(G, V, "ipsecnodes", "node-1")  # e.g. garbage-collected
    await reporter.report(facts, "CN=node-1", status)  # 404: noted
    await reporter.report(facts, "CN=node-1", status)  # created again
    assert custom.get_cluster_custom_object(G, V, "ipsecnodes", "node-1")["spec"]["identity"]


async def test_reporter_of_another_node_is_refused_by_the_admission_policy(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    """With node-1's identity, a reporter that believes it is node-2 writes nothing."""
    core.create_node(node("node-2", "10.77.0.2"))
    impostor = KubeReporter(source.client, "node-2")
    await impostor.report(NodeFacts("node-2", ("10.77.0.2",)), "CN=node-2", IPsecNodeStatus())
    assert impostor.writes == 0
    assert custom.list_cluster_custom_object(G, V, "ipsecnodes")["items"] == []


async def test_inputs_survive_an_api_outage_and_resync_when_it_returns(
    source: KubeInputSource, proxy: Proxy, core: Any, custom: Any
) -> None:
    seed(core, custom)
    before = await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    await proxy.cut()
    await until(lambda: not source.connected(), "the agent to notice the outage")
    during = await source.snapshot()
    assert during.policies == before.policies  # still enforcing what it knew
    core.patch_node("node-1", {"metadata": {"labels": {"pool": "b"}}})  # missed while cut
    await proxy.start()
    after = await settle(source, lambda i: names(i) == ["pb"] and not i.errors, timeout=20)
    assert after.node_labels == {"pool": "b"}
    # each watch comes back after its own jittered retry delay: the inputs above can be
    # whole before the last of them has reconnected
    await until(source.connected, "every watch to reconnect")


async def test_deleting_policy_is_flagged_for_teardown(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    seed(core, custom)
    await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    reporter = KubeReporter(source.client, "node-1")
    facts = NodeFacts("node-1", ("10.77.0.1",))
    enforcing = IPsecNodeStatus.model_validate({"policies": [{"name": "pa", "generation": 1}]})
    await reporter.report(facts, "CN=a", enforcing)  # so the operator waits for the teardown
    custom.delete_cluster_custom_object(G, V, "ipsecpolicies", "pa")
    flagged = await settle(source, lambda i: bool(i.policies) and i.policies[0].deleting)
    assert names(flagged) == ["pa"]
    await reporter.report(facts, "CN=a", IPsecNodeStatus())  # torn down
    await settle(source, lambda i: names(i) == [])  # the operator removed policy and slices


async def test_policy_status_writes_and_node_heartbeats_do_not_wake_the_agent(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    seed(core, custom)
    await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    while await source.wait_changed(0.3):  # drain the wake-ups of the initial sync
        pass
    custom.patch_cluster_custom_object_status(
        G, V, "ipsecpolicies", "pa", {"status": {"observedGeneration": 1}}
    )
    core.patch_node_status("node-1", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
    ]}})
    # Once the Node heartbeat reached the agent's cache, no wake-up may be pending: the
    # heartbeat was seen and judged irrelevant, and the policy's status never reaches an
    # agent (it watches the operator's slices, not policies).
    nodes = source._node
    await until(
        lambda: bool((nodes.items["node-1"].get("status") or {}).get("conditions")),
        "the Node heartbeat to reach the agent's cache",
    )
    assert not await source.wait_changed(0.01)
    custom.patch_cluster_custom_object(
        G, V, "ipsecpolicies", "pa", {"spec": {"enforcement": "Optional"}}
    )
    assert await source.wait_changed(5.0)
    changed = await settle(source, lambda i: bool(i.policies) and i.policies[0].generation == 2)
    assert changed.policies[0].policy.spec.enforcement == "Optional"


async def test_an_invalid_edit_never_reaches_the_agent(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    """The operator publishes only specs that validate: a bad edit leaves the node on the last
    good one (here an IKE proposal without a key exchange, which the CRD schema lets through)."""
    seed(core, custom)
    await settle(source, lambda i: names(i) == ["pa"] and not i.errors)
    custom.patch_cluster_custom_object(
        G, V, "ipsecpolicies", "pa", {"spec": {"ike": {"proposals": ["aes128-sha256!"]}}}
    )
    await until(
        lambda: (custom.get_cluster_custom_object(G, V, "ipsecpolicies", "pa").get("status")
                 or {}).get("observedGeneration") == 2,
        "the operator to judge generation 2",
    )
    inputs = await source.snapshot()
    (only,) = inputs.policies
    assert only.generation == 1
    assert only.policy.spec.ike.proposals == ["aes128-sha256-modp2048!"]


async def test_a_secret_the_agent_may_not_read_fails_only_its_policy(
    source: KubeInputSource, core: Any, custom: Any
) -> None:
    """``unrelated`` is not in the chart's credentials.secretNames: RBAC refuses it. The
    policy referencing it gets that error; the other policy of the node is not held up."""
    seed(core, custom)
    custom.create_cluster_custom_object(
        G, V, "ipsecpolicies", policy("pu", "unrelated", pool="a")
    )
    inputs = await settle(source, lambda i: names(i) == ["pa", "pu"] and not i.errors)
    good, refused = inputs.policies
    assert good.secret_data is not None
    assert good.input_errors == ()
    assert refused.secret_data is None
    (error,) = refused.input_errors
    assert error.startswith(
        "Secret strongmesh-system/unrelated may not be read by this agent: the chart's "
        "credentials.secretNames"
    )
    assert 'secrets "unrelated" is forbidden' in error
