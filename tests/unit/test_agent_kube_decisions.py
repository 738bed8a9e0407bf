"""Cluster-mode agent I/O, the parts that decide: kubeconfig, node facts, policy selection,
and when the reporter writes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from controller.agent.kube import KubeReporter, node_facts, select_policies, significant
from controller.agent.slices import PublishedPolicy
from controller.facts import NodeFacts
from controller.kubeapi import ApiError, ApiUnavailableError, parse_kubeconfig
from controller.models.node import IPsecNodeStatus
from controller.models.peers import Peer
from controller.models.policy import IPsecPolicySpec


def test_kubeconfig_current_context_with_inline_and_file_credentials(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"CA")
    doc = {
        "current-context": "lab",
        "contexts": [
            {"name": "lab", "context": {"cluster": "c", "user": "u"}},
            {"name": "other", "context": {"cluster": "x", "user": "u"}},
        ],
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:6443/", "certificate-authority": "ca.pem"},
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {"token": "t0k", "client-key-data": base64.b64encode(b"K").decode()},
            }
        ],
    }
    config = parse_kubeconfig(doc, tmp_path)
    assert (config.server, config.ca_data, config.token, config.key_data) == (
        "https://127.0.0.1:6443",
        b"CA",
        "t0k",
        b"K",
    )
    assert "t0k" not in repr(config)


def test_kubeconfig_without_the_named_context_is_an_error(tmp_path: Path) -> None:
    doc = {"current-context": "nope", "contexts": [], "clusters": [], "users": []}
    with pytest.raises(ValueError, match="no context"):
        parse_kubeconfig(doc, tmp_path)


def test_node_facts_prefer_internal_addresses_and_keep_labels() -> None:
    node = {
        "metadata": {"name": "n1", "labels": {"pool": "a"}},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "192.0.2.1"},
                {"type": "InternalIP", "address": "10.77.0.1"},
                {"type": "InternalIP", "address": "fd00::1"},
            ]
        },
    }
    facts, labels = node_facts("n1", node)
    assert facts == NodeFacts("n1", ("10.77.0.1", "fd00::1", "192.0.2.1"))
    assert labels == {"pool": "a"}
    assert node_facts("n1", None) == (NodeFacts("n1", ()), {})


def published(
    name: str, generation: int = 1, deleting: bool = False, **labels: str
) -> PublishedPolicy:
    return PublishedPolicy(
        name=name, generation=generation, deleting=deleting,
        spec=IPsecPolicySpec.model_validate({
            "nodeSelector": {"matchLabels": labels},
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": f"{name}-creds", "namespace": "sm"}},
        }),
        peers=(Peer(node="node-9", address="10.77.0.9"),),
    )


def test_selection_filters_by_labels_sorts_and_attaches_secrets_and_peers() -> None:
    policies = {"z": published("z"), "a": published("a", 3, deleting=True),
                "b": published("b", pool="b")}
    secrets = {("sm", "z-creds"): {"tls.crt": "x"}}
    inputs = select_policies(policies, {"pool": "a"}, secrets)
    assert [(p.policy.metadata.name, p.generation, p.deleting, p.secret_data) for p in inputs] == [
        ("a", 3, True, None),
        ("z", 1, False, {"tls.crt": "x"}),
    ]
    assert inputs[0].policy.metadata.generation == 3
    assert [p.node for p in inputs[1].peers] == ["node-9"]


def test_significant_ignores_counters_and_heartbeat() -> None:
    base = {
        "policies": [],
        "sas": [{"peer": "a", "state": "INSTALLED", "bytesIn": 1}],
        "lastHeartbeat": "t1",
    }
    later = {
        "policies": [],
        "sas": [{"peer": "a", "state": "INSTALLED", "bytesIn": 99}],
        "lastHeartbeat": "t2",
    }
    assert significant(base) == significant(later)
    rekeyed = {"policies": [], "sas": [{"peer": "a", "state": "REKEYING", "bytesIn": 99}]}
    assert significant(base) != significant(rekeyed)


class FakeClient:
    """Records writes; answers like an API server holding at most one IPsecNode."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.obj: dict[str, Any] | None = None
        self.down = False

    async def get(self, path: str, **_: str) -> Any:
        self._check()
        if self.obj is None:
            raise ApiError(404, "not found")
        return self.obj

    async def create(self, path: str, body: Any) -> Any:
        self._check()
        self.calls.append("create")
        self.obj = dict(body)
        return body

    async def merge_patch(self, path: str, body: Any) -> Any:
        self._check()
        self.calls.append("patch-status" if path.endswith("/status") else "patch-spec")
        assert self.obj is not None
        self.obj.update(body)
        return self.obj

    def _check(self) -> None:
        if self.down:
            raise ApiUnavailableError("connection refused")


def sa_status(bytes_in: int, state: str = "INSTALLED") -> IPsecNodeStatus:
    return IPsecNodeStatus.model_validate(
        {
            "policies": [{"name": "p", "generation": 1}],
            "sas": [{"policy": "p", "peer": "10.77.0.2", "state": state, "bytesIn": bytes_in}],
        }
    )


async def test_reporter_writes_on_change_and_heartbeat_only() -> None:
    client = FakeClient()
    clock = [0.0]
    reporter = KubeReporter(client, "n1", heartbeat=60, clock=lambda: clock[0])  # type: ignore[arg-type]
    node = NodeFacts("n1", ("10.77.0.1",))
    await reporter.report(node, "CN=n1", sa_status(1))
    assert client.calls == ["create", "patch-status"]
    for counter in range(2, 20):  # traffic only: no writes
        clock[0] += 1
        await reporter.report(node, "CN=n1", sa_status(counter))
    assert reporter.writes == 1
    await reporter.report(node, "CN=n1", sa_status(20, "REKEYING"))
    assert reporter.writes == 2
    clock[0] += 61
    await reporter.report(node, "CN=n1", sa_status(21, "REKEYING"))
    assert reporter.writes == 3
    await reporter.report(NodeFacts("n1", ("10.77.0.9",)), "CN=n1", sa_status(21, "REKEYING"))
    assert client.calls[-2:] == ["patch-spec", "patch-status"]
    assert client.obj is not None
    assert client.obj["spec"] == {"addresses": ["10.77.0.9"], "identity": "CN=n1"}


async def test_reporter_retries_after_an_outage() -> None:
    client = FakeClient()
    reporter = KubeReporter(client, "n1", heartbeat=600, clock=lambda: 0.0,  # type: ignore[arg-type]
                            jitter=lambda: 0.0)
    node = NodeFacts("n1", ("10.77.0.1",))
    client.down = True
    assert await reporter.report(node, "CN=n1", sa_status(1)) == 2.0  # the loop comes back
    assert reporter.writes == 0
    client.down = False
    assert await reporter.report(node, "CN=n1", sa_status(1)) is None
    assert reporter.writes == 1


def test_node_facts_carry_the_pod_networks_of_the_node() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24", "fd44:1::/64"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.77.0.1"}]}}
    facts, _ = node_facts("n1", node)
    assert facts.pod_cidrs == ("10.244.1.0/24", "fd44:1::/64")


async def test_reporter_lists_at_most_the_limit_of_sas_those_not_installed_first() -> None:
    from controller.models.node import SA_LIST_LIMIT

    client = FakeClient()
    reporter = KubeReporter(client, "n1", heartbeat=600, clock=lambda: 0.0)  # type: ignore[arg-type]
    held = [{"policy": "p", "peer": f"10.78.{i // 250}.{i % 250}", "state": "INSTALLED"}
            for i in range(999)] + [{"policy": "p", "peer": "10.79.0.1", "state": "CREATED"}]
    status = IPsecNodeStatus.model_validate({"policies": [{"name": "p", "generation": 1}],
                                             "sas": held, "establishedSAs": 999})
    await reporter.report(NodeFacts("n1", ("10.77.0.1",)), "CN=n1", status)
    assert client.obj is not None
    written = client.obj["status"]
    assert len(written["sas"]) == SA_LIST_LIMIT
    assert written["sas"][0]["state"] == "CREATED"  # a problem is never the one left out
    assert (written["sasOmitted"], written["establishedSAs"]) == (1000 - SA_LIST_LIMIT, 999)


async def test_a_refused_status_is_offered_again_backing_off_to_a_minute() -> None:
    from controller.agent.kube import report_retry_seconds

    client = FakeClient()
    client.down = True
    reporter = KubeReporter(client, "n1", clock=lambda: 0.0, jitter=lambda: 0.0)  # type: ignore[arg-type]
    node = NodeFacts("n1", ("10.77.0.1",))
    waits = [await reporter.report(node, "CN=n1", sa_status(1)) for _ in range(7)]
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert report_retry_seconds(1, 0.999) == pytest.approx(1.001)  # spread: up to half sooner


def meshed_status(generation: int, peers: int, established: int) -> IPsecNodeStatus:
    return IPsecNodeStatus.model_validate({"policies": [{
        "name": "p", "generation": generation, "enforcing": True,
        "expectedPeers": peers, "establishedPeers": established}]})


def clocked_reporter() -> tuple[KubeReporter, list[float], NodeFacts]:
    """A reporter on a FakeClient and a clock the test sets by hand (``clock[0]``)."""
    clock = [0.0]
    reporter = KubeReporter(FakeClient(), "n1", clock=lambda: clock[0])  # type: ignore[arg-type]
    return reporter, clock, NodeFacts("n1", ("10.77.0.1",))


async def test_sa_changes_are_paced_by_mesh_size_and_a_new_generation_is_not() -> None:
    from controller.agent.kube import status_write_interval

    assert [status_write_interval(n) for n in (0, 20, 500, 1000)] == [1.0, 1.0, 20.0, 40.0]
    reporter, clock, node = clocked_reporter()
    assert await reporter.report(node, "CN=n1", meshed_status(1, 500, 0)) is None
    clock[0] = 2.0
    assert await reporter.report(node, "CN=n1", meshed_status(1, 500, 250)) == 18.0  # held
    assert await reporter.report(node, "CN=n1", meshed_status(2, 500, 0)) is None  # news
    clock[0] = 21.0
    assert await reporter.report(node, "CN=n1", meshed_status(2, 500, 499)) == 1.0  # held
    clock[0] = 22.0
    assert await reporter.report(node, "CN=n1", meshed_status(2, 500, 499)) is None
    assert reporter.writes == 3


async def test_a_mesh_becoming_complete_or_incomplete_is_written_at_once() -> None:
    reporter, clock, node = clocked_reporter()
    assert await reporter.report(node, "CN=n1", meshed_status(1, 500, 0)) is None
    clock[0] = 1.0
    assert await reporter.report(node, "CN=n1", meshed_status(1, 500, 500)) is None  # Ready
    assert await reporter.report(node, "CN=n1", meshed_status(1, 500, 499)) is None  # lost one
    assert await reporter.report(node, "CN=n1", meshed_status(1, 500, 498)) == 20.0  # progress
    assert reporter.writes == 3
