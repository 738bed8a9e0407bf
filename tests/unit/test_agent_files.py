"""Standalone mode: the policy file as input source, the status file as reporter."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.agent.files import FileInputSource, FileReporter, LogReporter
from controller.facts import NodeFacts
from controller.models.node import EnforcedPolicy, IPsecNodeStatus
from tests.certs import make_ca, make_cert, secret_data, secret_manifest

NODE = NodeFacts(name="node-1", addresses=("10.77.0.1",))
CA = make_ca()
SECRET = secret_manifest(secret_data(make_cert(CA), cas=[CA]), name="creds", namespace="ns")


def policy_doc(name: str = "mesh", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": name, **({"generation": spec.pop("generation")}
                                      if "generation" in spec else {})},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
            **spec,
        },
    }


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def source(path: Path, labels: dict[str, str] | None = None) -> FileInputSource:
    return FileInputSource(path, lambda: NODE, labels)


async def test_policy_with_its_secret_is_an_input(tmp_path: Path) -> None:
    inputs = await source(write(tmp_path / "p.yaml", policy_doc(), SECRET)).snapshot()
    assert inputs.errors == ()
    (item,) = inputs.policies
    assert item.policy.metadata.name == "mesh"
    assert item.generation == 1
    assert item.secret_data is not None
    assert set(item.secret_data) == {"tls.crt", "tls.key", "ca.crt"}


async def test_generation_comes_from_metadata_when_the_file_sets_it(tmp_path: Path) -> None:
    inputs = await source(write(tmp_path / "p.yaml", policy_doc(generation=7), SECRET)).snapshot()
    assert inputs.policies[0].generation == 7


async def test_missing_secret_is_passed_on_as_none(tmp_path: Path) -> None:
    inputs = await source(write(tmp_path / "p.yaml", policy_doc())).snapshot()
    assert inputs.policies[0].secret_data is None


@pytest.mark.parametrize(
    ("labels", "selected"),
    [({"role": "db"}, ["mesh"]), ({"role": "web"}, []), ({}, [])],
)
async def test_node_selector_filters_policies(
    tmp_path: Path, labels: dict[str, str], selected: list[str]
) -> None:
    doc = policy_doc(nodeSelector={"matchLabels": {"role": "db"}})
    inputs = await source(write(tmp_path / "p.yaml", doc, SECRET), labels).snapshot()
    assert [p.policy.metadata.name for p in inputs.policies] == selected


async def test_invalid_policy_makes_the_inputs_unusable(tmp_path: Path) -> None:
    doc = policy_doc(ipsecSubnets=["10.77.0.0/33"])
    inputs = await source(write(tmp_path / "p.yaml", doc, SECRET)).snapshot()
    assert len(inputs.errors) == 1
    assert inputs.errors[0].startswith("policy mesh: invalid:")


@pytest.mark.parametrize("content", [None, "key: [unclosed\n"])
async def test_unreadable_or_broken_file_is_an_input_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    inputs = await source(path).snapshot()
    assert inputs.policies == ()
    assert len(inputs.errors) == 1


async def test_wait_changed_sees_an_atomic_replace(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", policy_doc(), SECRET)
    src = source(path)
    await src.snapshot()
    assert await src.wait_changed(0) is False  # the time is up and nothing changed
    # Written beside the old file, so the new one cannot reuse its inode number.
    write(tmp_path / "new.yaml", policy_doc(generation=2), SECRET)
    os.replace(tmp_path / "new.yaml", path)
    # Seen at the first look, before any polling; the guard only stops a hang.
    assert await asyncio.wait_for(src.wait_changed(60), 5) is True


async def test_reporter_writes_camelcase_status_atomically(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = IPsecNodeStatus(policies=[EnforcedPolicy(name="mesh", generation=2)],
                             errors=["x"], last_heartbeat="2026-01-01T00:00:00Z")
    await FileReporter(path).report(NODE, "CN=node", status)
    data = json.loads(path.read_text())
    assert data["node"] == "node-1"
    assert data["identity"] == "CN=node"
    assert data["status"]["lastHeartbeat"] == "2026-01-01T00:00:00Z"
    assert data["status"]["policies"] == [
        {"name": "mesh", "generation": 2, "enforcing": True, "message": "", "address": "",
         "expectedPeers": 0, "establishedPeers": 0, "missingPeers": []}
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


async def test_log_reporter_logs_only_changes() -> None:
    lines: list[str] = []
    reporter = LogReporter(lines.append)
    status = IPsecNodeStatus(errors=["x"])
    await reporter.report(NODE, "", status)
    await reporter.report(NODE, "", status)
    await reporter.report(NODE, "", IPsecNodeStatus())
    assert len(lines) == 2


def slice_doc(*peers: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPeerSlice",
            "metadata": {"name": "mesh-0"},
            "spec": {"policy": "mesh", "policyGeneration": 1, "peers": list(peers)}}


async def test_the_file_gives_the_nodes_own_pod_networks(tmp_path: Path) -> None:
    peers = slice_doc({"node": "node-1", "address": "10.77.0.1", "podCIDRs": ["10.244.1.0/24"]},
                      {"node": "node-2", "address": "10.77.0.2", "podCIDRs": ["10.244.2.0/24"]})
    path = write(tmp_path / "p.yaml", policy_doc(mode="Tunnel"), SECRET, peers)
    inputs = await source(path).snapshot()
    assert inputs.errors == ()
    assert inputs.node.pod_cidrs == ("10.244.1.0/24",)
    # --pod-cidr wins over the file
    flagged = NodeFacts(name="node-1", addresses=("10.77.0.1",), pod_cidrs=("10.244.9.0/24",))
    inputs = await FileInputSource(path, lambda: flagged).snapshot()
    assert inputs.node.pod_cidrs == ("10.244.9.0/24",)
