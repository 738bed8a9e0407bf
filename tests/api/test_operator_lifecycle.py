"""The operator against the real kube-apiserver: conditions, rows, events, deletion, GC.

The operator runs with the chart's operator identity (ServiceAccount ``strongmesh-operator``
and its RBAC); simulated agents write their IPsecNodes with their own node's agent identity.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from controller.operator.finalizer import FINALIZER
from controller.operator.reconciler import Clocks, OperatorConfig, PolicyReconciler
from controller.operator.run import OperatorThread
from hack.labkit.identities import render_chart
from tests.api.operator_support import (
    FAST,
    NAMESPACE,
    Cluster,
    G,
    ManualClock,
    ProxyThread,
    V,
    running_operator,
    wait_for,
)
from tests.api.server import CHART_VALUES, OPERATOR_USER, KubeApiServer
from tests.certs import NOW, make_cert, secret_data

pytestmark = pytest.mark.api


def two_workers_and_a_db(cluster: Cluster) -> None:
    cluster.node("node-1", "10.77.0.1", role="worker")
    cluster.node("node-2", "10.77.0.2", role="worker")
    cluster.node("node-3", "10.77.0.3", role="db")


def test_policy_becomes_ready_when_every_selected_node_enforces(
    cluster: Cluster, operator: OperatorThread
) -> None:
    two_workers_and_a_db(cluster)
    cluster.secret()
    cluster.policy(nodeSelector={"matchLabels": {"role": "worker"}})
    wait_for(lambda: cluster.condition_is("Progressing", "True"), what="Progressing=True")
    assert cluster.condition_is("Ready", "False")

    cluster.report("node-1", {"mesh": 1}, peers=("10.77.0.2",))
    cluster.report("node-3", {}, peers=())  # not selected: never a row
    wait_for(lambda: cluster.get_policy()["status"]["summary"]["ready"] == "1/2", what="1/2")
    cluster.report("node-2", {"mesh": 1}, peers=("10.77.0.1",))
    ready = wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready=True")

    status = cluster.get_policy()["status"]
    assert ready["reason"] == "AllNodesEnforcing"
    assert status["observedGeneration"] == 1
    assert status["summary"] == {
        "selectedNodes": 2,
        "readyNodes": 2,
        "ready": "2/2",
        "establishedSAs": 2,
    }
    assert [(r["name"], r["enforcing"], r["generation"], r["peers"]) for r in status["nodes"]] == [
        ("node-1", True, 1, ["10.77.0.2"]),
        ("node-2", True, 1, ["10.77.0.1"]),
    ]
    assert cluster.condition_is("Progressing", "False")
    assert cluster.condition_is("Degraded", "False")
    wait_for(lambda: cluster.events(reason="Ready"), what="a Ready event")


def test_operator_writes_nothing_but_status_and_its_finalizer(
    apiserver: KubeApiServer, cluster: Cluster, operator: OperatorThread
) -> None:
    mark = apiserver.audit.mark()
    cluster.node("node-1")
    cluster.secret()
    created = cluster.policy()
    cluster.report("node-1", {"mesh": 1})
    wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready=True")
    served = cluster.get_policy()
    assert served["spec"] == created["spec"]
    assert served["metadata"]["generation"] == 1
    assert served["metadata"].get("annotations") in (None, {})
    assert served["metadata"]["finalizers"] == [FINALIZER]
    # The server's record of the operator's writes: of the policy, only the finalizer (a
    # patch) and the status; the Ready event; never a node's objects or a Secret. The event
    # is posted after the status write that made the policy Ready: wait for it.
    requests = apiserver.audit.wait_for(
        mark, lambda events: any((e.verb, e.resource) == ("create", "events") for e in events),
        username=OPERATOR_USER, what="the operator's Ready event",
    )
    writes = {
        (r.verb, r.resource, r.subresource)
        for r in requests if r.verb not in ("get", "list", "watch")
    }
    assert {w for w in writes if w[1] == "ipsecpolicies"} == {
        ("patch", "ipsecpolicies", ""), ("patch", "ipsecpolicies", "status"),
    }
    assert ("create", "events", "") in writes
    assert {w for w in writes if w[1] in ("ipsecnodes", "nodes", "secrets")} == set()
    assert [str(r) for r in requests if r.code in (401, 403)] == []


def test_malformed_ca_is_credentials_invalid_naming_ca_crt_until_fixed(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    good = cluster.secret()
    cluster.policy()
    cluster.report("node-1", {"mesh": 1})
    wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready=True")
    node_before = cluster.custom.get_cluster_custom_object(G, V, "ipsecnodes", "node-1")

    broken = dict(good, **{"ca.crt": good["ca.crt"].replace("\n", "\n#", 2)})
    cluster.replace_secret(broken)
    invalid = wait_for(
        lambda: cluster.condition_is("CredentialsValid", "False"), what="CredentialsValid=False"
    )
    assert invalid["reason"] == "Invalid"
    assert "ca.crt" in invalid["message"]
    assert cluster.condition_is("Ready", "False")
    event = wait_for(lambda: cluster.events(reason="CredentialsInvalid"), what="an event")[0]
    assert event.type == "Warning"
    assert "ca.crt" in event.message
    # The operator never touches the nodes' state.
    node_after = cluster.custom.get_cluster_custom_object(G, V, "ipsecnodes", "node-1")
    assert node_after["metadata"]["resourceVersion"] == node_before["metadata"]["resourceVersion"]

    cluster.replace_secret(good)  # re-validated when the Secret changes
    wait_for(lambda: cluster.condition_is("CredentialsValid", "True"), what="valid again")
    wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready again")


def test_missing_secret_is_reported_and_its_creation_picked_up(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.policy(secret="later")
    missing = wait_for(lambda: cluster.condition_is("CredentialsValid", "False"), what="False")
    assert missing["reason"] == "SecretNotFound"
    assert "strongmesh-system/later" in missing["message"]
    cluster.secret("later")
    wait_for(lambda: cluster.condition_is("CredentialsValid", "True"), what="valid")


def test_node_errors_degrade_and_a_new_generation_progresses(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.node("node-2", "10.77.0.2")
    cluster.secret()
    cluster.policy()
    cluster.report("node-1", {"mesh": 1})
    cluster.report("node-2", {"mesh": 1}, enforcing=False, message="charon: no trusted CA")
    degraded = wait_for(lambda: cluster.condition_is("Degraded", "True"), what="Degraded")
    assert degraded["reason"] == "NodeErrors"
    assert "node-2: charon: no trusted CA" in degraded["message"]

    cluster.custom.patch_cluster_custom_object(
        G, V, "ipsecpolicies", "mesh", {"spec": {"enforcement": "Optional"}}
    )
    progressing = wait_for(lambda: cluster.condition_is("Progressing", "True"), what="Progressing")
    assert "generation 2" in progressing["message"]
    cluster.report("node-1", {"mesh": 2})
    cluster.report("node-2", {"mesh": 2})
    wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready")
    assert cluster.get_policy()["status"]["observedGeneration"] == 2


def test_deletion_waits_for_the_agents_to_tear_down(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.node("node-2", "10.77.0.2")
    cluster.secret()
    cluster.policy()
    cluster.report("node-1", {"mesh": 1})
    cluster.report("node-2", {"mesh": 1})
    wait_for(
        lambda: FINALIZER in cluster.get_policy()["metadata"].get("finalizers", []),
        what="finalizer",
    )
    cluster.custom.delete_cluster_custom_object(G, V, "ipsecpolicies", "mesh")
    wait_for(lambda: (cluster.condition("Ready") or {}).get("reason") == "Deleting",
             what="Ready=False/Deleting")

    def row(node: str) -> dict[str, Any]:
        rows = cluster.get_policy()["status"]["nodes"]
        return next(r for r in rows if r["name"] == node)

    # The operator handles one pass at a time: once it has written what a later report
    # changed, the pass that saw the deletion with both nodes enforcing is over. (Marking an
    # object deleted is a new generation: the rows say "enforces generation 1, current is 2".)
    cluster.report("node-1", {})  # node-1 tore down
    wait_for(lambda: row("node-1").get("generation") is None, what="node-1 torn down")
    assert cluster.get_policy()["metadata"]["finalizers"] == [FINALIZER]
    cluster.report("node-2", {"mesh": 1}, peers=("10.77.0.1",))  # node-2 still enforces
    wait_for(lambda: row("node-2")["peers"] == ["10.77.0.1"], what="node-2's SA in the status")
    assert cluster.get_policy()["metadata"]["finalizers"] == [FINALIZER]
    cluster.report("node-2", {})
    wait_for(lambda: not cluster.policy_exists(), what="the policy to be gone")


def test_deletion_ignores_nodes_that_no_longer_exist(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.secret()
    cluster.policy()
    cluster.report("node-1", {"mesh": 1})
    wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready")
    cluster.core.delete_node("node-1")
    cluster.custom.delete_cluster_custom_object(G, V, "ipsecpolicies", "mesh")
    wait_for(lambda: not cluster.policy_exists(), what="the policy to be gone")


def test_deletion_times_out_with_a_warning(apiserver: KubeApiServer, cluster: Cluster) -> None:
    config = OperatorConfig(status_interval=1.0, resync_interval=0.5, teardown_timeout=2.0)
    with running_operator(str(apiserver.operator_kubeconfig()), config):
        cluster.node("node-1")
        cluster.secret()
        cluster.policy()
        cluster.report("node-1", {"mesh": 1})
        wait_for(
            lambda: FINALIZER in cluster.get_policy()["metadata"].get("finalizers", []),
            what="finalizer",
        )
        cluster.custom.delete_cluster_custom_object(G, V, "ipsecpolicies", "mesh")
        wait_for(lambda: not cluster.policy_exists(), timeout=10, what="timeout deletion")
        (event,) = cluster.events(reason="TeardownTimeout")
        assert event.type == "Warning"
        assert "node-1" in event.message


def test_ipsec_node_of_a_deleted_node_is_collected(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.node("node-2", "10.77.0.2")
    cluster.report("node-1", {})
    cluster.report("node-2", {})
    # Its Node never existed (so no agent token can name it): the periodic sweep removes it.
    cluster.report("ghost", {}, as_admin=True)
    cluster.core.delete_node("node-2")

    def names() -> set[str]:
        items = cluster.custom.list_cluster_custom_object(G, V, "ipsecnodes")["items"]
        return {item["metadata"]["name"] for item in items}

    wait_for(lambda: names() == {"node-1"}, what="only node-1's IPsecNode left")


def test_overlapping_policies_on_a_shared_node_are_both_reported(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1", role="worker")
    cluster.node("node-2", "10.77.0.2", role="db")
    cluster.secret()
    cluster.policy("wide", ipsecSubnets=["10.77.0.0/16"])
    cluster.policy(
        "narrow", ipsecSubnets=["10.77.0.0/24"], nodeSelector={"matchLabels": {"role": "db"}}
    )
    cluster.policy("elsewhere", ipsecSubnets=["10.99.0.0/24"])
    for name, other in (("wide", "narrow"), ("narrow", "wide")):
        degraded = wait_for(
            partial(cluster.condition_is, "Degraded", "True", name), what=f"{name} degraded"
        )
        assert degraded["reason"] == "SubnetOverlap"
        assert f"IPsecPolicy {other}" in degraded["message"]
        assert "node-2" in degraded["message"]
        assert "node-1" not in degraded["message"]
        wait_for(partial(cluster.events, name, "SubnetOverlap"), what="overlap event")
    wait_for(lambda: cluster.condition("Degraded", "elsewhere"), what="elsewhere evaluated")
    assert cluster.condition_is("Degraded", "False", "elsewhere")


def test_expiring_certificate_and_optional_enforcement_raise_warnings(
    apiserver: KubeApiServer, cluster: Cluster
) -> None:
    config = OperatorConfig(status_interval=1.0, resync_interval=0.5, optional_warn_interval=1.0)
    with running_operator(str(apiserver.operator_kubeconfig()), config):
        cluster.node("node-1")
        soon = make_cert(cluster.ca, "node", not_after=NOW + timedelta(days=5))
        cluster.secret(data=secret_data(soon, [cluster.ca]))
        cluster.policy(enforcement="Optional")
        (expiring,) = wait_for(
            lambda: cluster.events(reason="CertificateExpiring"), what="expiry event"
        )
        assert expiring.type == "Warning"
        assert expiring.message.startswith("[error]")
        assert cluster.condition_is("CredentialsValid", "True")  # an alert, not a failure
        wait_for(
            lambda: len(cluster.events(reason="OptionalEnforcement")) >= 2,
            timeout=10,
            what="a repeated OptionalEnforcement warning",
        )
    assert len(cluster.events(reason="CertificateExpiring")) == 1


def test_burst_of_node_reports_is_at_most_one_status_write_per_second(
    apiserver: KubeApiServer, cluster: Cluster
) -> None:
    """The status throttle runs on the operator's monotonic clock, which here moves only when
    the test says: however many reports arrive, no write while it stands still, then exactly
    one when it moves one interval, computed from the latest reports."""
    clock = ManualClock()
    names = [f"node-{i}" for i in range(1, 21)]
    kubeconfig = str(apiserver.operator_kubeconfig())
    with running_operator(kubeconfig, FAST, Clocks(monotonic=clock)) as operator:
        reconciler = operator.reconciler
        for i, name in enumerate(names, start=1):
            cluster.node(name, f"10.77.0.{i}")
        cluster.secret()
        cluster.policy()
        # a quiet policy's first status is written at once
        wait_for(lambda: reconciler.status_writes == 1, what="the first status write")
        wait_for(lambda: cluster.condition("Ready"), what="the first status")
        for name in names:  # 20 agents report twice each, as fast as the API takes it
            cluster.report(name, {"mesh": 1}, enforcing=False, message="starting")
            cluster.report(name, {"mesh": 1})

        def enforcing(name: str) -> bool:
            node = reconciler.state.ipsec_nodes.get(name)
            return bool(node and node.status and node.status.policies
                        and node.status.policies[0].enforcing)

        wait_for(lambda: all(enforcing(name) for name in names),
                 what="the operator to have seen every report")
        assert reconciler.status_writes == 1  # folded, waiting for the clock
        assert "mesh" in reconciler.pending()
        clock.advance(FAST.status_interval)
        wait_for(lambda: reconciler.status_writes == 2, what="the folded write")
        assert cluster.condition_is("Ready", "True")
        assert reconciler.status_writes == 2


def test_restarted_operator_keeps_conditions_transition_times(
    apiserver: KubeApiServer, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.node("node-1")
    cluster.secret()
    cluster.policy()
    cluster.report("node-1", {"mesh": 1})
    with running_operator(str(apiserver.operator_kubeconfig()), FAST):
        first = wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready")
    # An hour later for the restarted operator: a condition rewritten would say so.
    later = Clocks(wall=lambda: datetime.now(UTC) + timedelta(hours=1))
    # A reconcile that changes nothing writes nothing: see when the restarted operator has
    # been through the policy, rather than waiting a while and hoping it has.
    passes: list[str] = []
    reconcile = PolicyReconciler.reconcile

    async def counted(self: PolicyReconciler, name: str) -> None:
        await reconcile(self, name)
        passes.append(name)

    monkeypatch.setattr(PolicyReconciler, "reconcile", counted)
    with running_operator(str(apiserver.operator_kubeconfig()), FAST, later) as again:
        wait_for(lambda: "mesh" in passes, what="a pass of the restarted operator")
        assert cluster.condition("Ready") == first
        assert again.reconciler.status_writes == 0


def test_policy_status_survives_an_invalid_spec_update(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.secret()
    cluster.policy()
    with pytest.raises(ApiException):  # the CRD schema refuses what it can
        cluster.custom.patch_cluster_custom_object(
            G, V, "ipsecpolicies", "mesh", {"spec": {"enforcement": "Sometimes"}}
        )
    # the schema cannot know strongSwan's algorithm names; the operator's validation does
    cluster.custom.patch_cluster_custom_object(
        G, V, "ipsecpolicies", "mesh", {"spec": {"esp": {"proposals": ["aes128-nosuchhash"]}}}
    )
    degraded = wait_for(lambda: cluster.condition_is("Degraded", "True"), what="Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.esp.proposals" in degraded["message"]


def test_operator_catches_up_after_an_api_outage(
    apiserver: KubeApiServer, cluster: Cluster
) -> None:
    proxy = ProxyThread(apiserver.url).start()
    try:
        kubeconfig = apiserver.operator_kubeconfig(server=proxy.url)
        with running_operator(str(kubeconfig)):
            cluster.node("node-1")
            cluster.node("node-2", "10.77.0.2")
            cluster.secret()
            cluster.policy()
            cluster.report("node-1", {"mesh": 1})
            wait_for(lambda: cluster.get_policy().get("status", {}).get("summary", {})
                     .get("ready") == "1/2", what="1/2")
            proxy.cut()
            cluster.report("node-2", {"mesh": 1})  # while the operator cannot see it
            assert cluster.condition_is("Ready", "False")
            proxy.restore()
            wait_for(lambda: cluster.condition_is("Ready", "True"), timeout=30,
                     what="Ready after the API returned")
    finally:
        proxy.stop()


def test_operator_reads_only_the_referenced_secrets(
    apiserver: KubeApiServer, cluster: Cluster
) -> None:
    mark = apiserver.audit.mark()
    with running_operator(str(apiserver.operator_kubeconfig())):
        cluster.node("node-1")
        cluster.secret("unrelated")
        cluster.policy(secret="creds")
        wait_for(lambda: cluster.condition_is("CredentialsValid", "False"), what="missing")
        cluster.secret("creds")
        wait_for(lambda: cluster.condition_is("CredentialsValid", "True"), what="created")
    # The operator has stopped: its Secret watch has ended and is in the log.
    secret_requests = apiserver.audit.wait_for(
        mark, lambda events: any(e.resource == "secrets" and e.verb == "watch" for e in events),
        username=OPERATOR_USER, what="the operator's Secret watch",
    )
    secret_requests = [e for e in secret_requests if e.resource == "secrets"]
    for request in secret_requests:
        assert request.verb in ("get", "list", "watch"), request
        assert (request.namespace, request.name) == (NAMESPACE, "creds"), request
        if request.verb != "get":
            assert request.field_selector == "metadata.name=creds", request
        assert request.code == 200 or (request.verb == "get" and request.code == 404), request


def test_a_secret_the_operator_may_not_read_is_reported_as_unreadable(
    cluster: Cluster, operator: OperatorThread
) -> None:
    """``unrelated`` is not in the chart's credentials.secretNames: RBAC refuses the
    operator, and the policy says so instead of having no status at all."""
    cluster.node("node-1")
    cluster.secret("unrelated")
    cluster.policy(secret="unrelated")
    unreadable = wait_for(
        lambda: cluster.condition_is("CredentialsValid", "False"), what="CredentialsValid=False"
    )
    assert unreadable["reason"] == "SecretUnreadable"
    assert unreadable["message"].startswith(
        "Secret strongmesh-system/unrelated may not be read by the operator: the chart's "
        "credentials.secretNames"
    )
    assert 'secrets "unrelated" is forbidden' in unreadable["message"]
    ready = cluster.condition_is("Ready", "False")
    assert ready is not None
    assert ready["reason"] == "CredentialsInvalid"
    (event,) = wait_for(lambda: cluster.events(reason="CredentialsInvalid"), what="an event")
    assert "may not be read by the operator" in event.message


def test_the_operator_as_the_chart_runs_it_posts_its_events(
    apiserver: KubeApiServer, cluster: Cluster
) -> None:
    """``strongmesh operator`` with the arguments of the chart's Deployment and the identity
    of its ServiceAccount (only the metrics port is turned off, this machine is shared)."""
    (deployment,) = [
        d for d in render_chart(CHART_VALUES, NAMESPACE)
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["strongmesh", "operator"]
    command = [
        sys.executable, "-m", "controller", "operator", *container["args"],
        "--kubeconfig", str(apiserver.operator_kubeconfig()), "--metrics-port", "0",
    ]
    cluster.node("node-1")
    cluster.policy(secret="later")  # missing: a CredentialsInvalid event
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as operator:
        try:
            wait_for(lambda: cluster.condition_is("CredentialsValid", "False"),
                     what="the operator's status")
            found = wait_for(
                lambda: cluster.core.list_event_for_all_namespaces(
                    field_selector="involvedObject.name=mesh,reason=CredentialsInvalid").items,
                what="the CredentialsInvalid event",
            )
            assert found[0].source.component == "strongmesh-operator"
        finally:
            operator.terminate()
            _, log = operator.communicate(timeout=30)
    assert "could not post event" not in log, log


def _mesh_report(cluster: Cluster, node: str, address: str, peers: dict[str, str]) -> None:
    """The node's IPsecNode as its agent writes it: the policy enforced at ``address``, with
    an installed SA to each of ``peers`` (name -> address) and the others missing."""
    writer = cluster.agent(node)
    with contextlib.suppress(ApiException):
        writer.create_cluster_custom_object(G, V, "ipsecnodes", {
            "apiVersion": f"{G}/{V}", "kind": "IPsecNode", "metadata": {"name": node},
            "spec": {"addresses": [address], "identity": f"CN={node}"}})
    entry = {"name": "mesh", "generation": 1, "enforcing": True, "address": address,
             "expectedPeers": len(peers), "establishedPeers": len(peers)}
    sas = [{"policy": "mesh", "peer": a, "state": "INSTALLED"} for a in peers.values()]
    writer.patch_cluster_custom_object_status(
        G, V, "ipsecnodes", node, {"status": {"policies": [entry], "sas": sas}})


def test_ready_waits_for_the_mesh_and_a_pair_missing_too_long_degrades(
    apiserver: KubeApiServer, cluster: Cluster
) -> None:
    config = OperatorConfig(status_interval=0.2, resync_interval=30.0, teardown_timeout=60.0,
                            peer_grace=1.0)
    with running_operator(str(apiserver.operator_kubeconfig()), config):
        cluster.node("node-1", "10.77.0.1")
        cluster.node("node-2", "10.77.0.2")
        cluster.secret()
        cluster.policy()
        # both enforce, neither has read the slice listing the other yet
        _mesh_report(cluster, "node-1", "10.77.0.1", {})
        _mesh_report(cluster, "node-2", "10.77.0.2", {})
        wait_for(lambda: cluster.get_policy().get("status", {}).get("summary", {})
                 .get("ready") == "2/2", what="both nodes enforcing")
        # the grace period (1 s) passes with the pairs still missing: no timer from the test,
        # the operator comes back by itself when the first pair becomes overdue
        degraded = wait_for(lambda: cluster.condition_is("Degraded", "True"), timeout=20,
                            what="Degraded=PeersMissing")
        assert degraded["reason"] == "PeersMissing"
        assert cluster.condition_is("Ready", "False")
        _mesh_report(cluster, "node-1", "10.77.0.1", {"node-2": "10.77.0.2"})
        _mesh_report(cluster, "node-2", "10.77.0.2", {"node-1": "10.77.0.1"})
        wait_for(lambda: cluster.condition_is("Ready", "True"), what="Ready with the mesh")
        assert cluster.condition_is("Degraded", "False")
