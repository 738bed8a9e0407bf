"""IPsecPeerSlices -> published policies and peers (``controller.agent.slices``)."""

from __future__ import annotations

from typing import Any

from controller.agent.files import inputs_from_documents
from controller.agent.slices import published_policies
from controller.facts import NodeFacts
from controller.models.peers import Peer

SPEC: dict[str, Any] = {
    "ipsecSubnets": ["10.77.0.0/24"],
    "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
}


def body(name: str, generation: int, peers: list[str], *, policy: str = "mesh",
         deleting: bool = False, spec: dict[str, Any] | None = SPEC) -> dict[str, Any]:
    inner: dict[str, Any] = {
        "policy": policy, "policyGeneration": generation, "deleting": deleting,
        "peers": [{"node": p, "address": f"10.77.0.{p[-1]}"} for p in peers],
    }
    if spec is not None:
        inner["policySpec"] = spec
    return {"apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPeerSlice",
            "metadata": {"name": name}, "spec": inner}


def test_peers_of_every_slice_of_a_policy_are_merged_in_node_order() -> None:
    policies, problems = published_policies(
        [body("mesh-1", 0, ["node-3"], spec=None), body("mesh-0", 4, ["node-2", "node-1"])])
    assert problems == []
    assert [p.node for p in policies["mesh"].peers] == ["node-1", "node-2", "node-3"]
    assert policies["mesh"].generation == 4  # the first slice's: the others carry peers only


def test_the_spec_comes_from_the_newest_generation_while_slices_catch_up() -> None:
    newer = SPEC | {"enforcement": "Optional"}
    policies, _ = published_policies(
        [body("mesh-0", 2, ["node-1"], spec=newer), body("mesh-1", 1, ["node-2"])])
    assert policies["mesh"].generation == 2
    assert policies["mesh"].spec.enforcement == "Optional"
    assert len(policies["mesh"].peers) == 2


def test_one_slice_saying_deleting_is_enough() -> None:
    policies, _ = published_policies(
        [body("mesh-0", 1, [], deleting=True), body("mesh-1", 1, ["node-2"])])
    assert policies["mesh"].deleting


def test_an_unreadable_slice_is_reported_by_name_and_the_others_still_count() -> None:
    broken = body("mesh-9", 1, []) | {"spec": {"policy": "mesh"}}
    policies, problems = published_policies([broken, body("mesh-0", 1, ["node-1"])])
    assert list(policies) == ["mesh"]
    assert len(problems) == 1
    assert problems[0].startswith("IPsecPeerSlice mesh-9 is unreadable: ")
    assert "policyGeneration" in problems[0]


def test_a_policy_whose_slices_carry_no_spec_is_not_published() -> None:
    policies, problems = published_policies([body("mesh-0", 1, ["node-1"], spec=None)])
    assert policies == {}
    assert problems == ["policy mesh: its IPsecPeerSlices carry no spec"]


def test_standalone_files_take_peers_from_their_slices() -> None:
    from tests.certs import make_ca, make_cert, secret_data, secret_manifest

    ca = make_ca()
    docs = [
        {"apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy",
         "metadata": {"name": "mesh"}, "spec": SPEC},
        secret_manifest(secret_data(make_cert(ca, "node"), [ca]), name="creds", namespace="ns"),
        body("mesh-peers", 1, ["node-2", "node-3"], spec=None),
    ]
    inputs = inputs_from_documents(docs, NodeFacts("node-1", ("10.77.0.1",)), {})
    assert inputs.errors == ()
    (item,) = inputs.policies
    assert item.peers == (Peer(node="node-2", address="10.77.0.2"),
                          Peer(node="node-3", address="10.77.0.3"))


def test_the_agent_parses_its_slices_once_per_version() -> None:
    from controller.agent.kube import KubeInputSource
    from controller.kubeapi import KubeClient, KubeConfig

    source = KubeInputSource(KubeClient(KubeConfig(server="https://127.0.0.1:1")), "node-1")
    first = body("mesh-0", 1, ["node-2"]) | {"metadata": {"name": "mesh-0",
                                                          "resourceVersion": "7"}}
    source._slices.items = {"mesh-0": first}
    published = source._published()
    assert source._published() is published  # the same version: not parsed again
    second = body("mesh-0", 2, ["node-2", "node-3"]) | {"metadata": {"name": "mesh-0",
                                                                      "resourceVersion": "8"}}
    other = body("mesh-1", 2, ["node-4"]) | {"metadata": {"name": "mesh-1",
                                                         "resourceVersion": "9"}}
    source._slices.items = {"mesh-0": second, "mesh-1": other}
    assert [p.node for p in source._published()["mesh"].peers] == [
        "node-2", "node-3", "node-4"]
    kept = source._parsed_slices["mesh-0"][1]
    third = other | {"metadata": {"name": "mesh-1", "resourceVersion": "10"}}
    source._slices.items = {"mesh-0": second, "mesh-1": third}  # one slice changed
    source._published()
    assert source._parsed_slices["mesh-0"][1] is kept  # the other was not parsed again
