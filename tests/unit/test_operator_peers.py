"""A policy's peers and their IPsecPeerSlices (``controller.operator.peers``), as tables."""

from __future__ import annotations

import pytest

from controller.models.common import LabelSelector
from controller.models.node import EnforcedPolicy, IPsecNode, IPsecNodeSpec, IPsecNodeStatus
from controller.models.peers import IPsecPeerSliceSpec, Peer
from controller.models.policy import IPsecPolicySpec
from controller.operator.peers import (
    SlicePlan,
    new_slice,
    plan_publication,
    plan_removal,
    plan_slices,
    policy_members,
    policy_peers,
    replace_slice_spec,
    slice_name,
)
from controller.operator.records import PolicyMeta, PolicyRecord, parse_policy
from controller.pki import fingerprint
from controller.validation import IssuerCA
from tests.certs import make_ca

EVERY = LabelSelector()
SPEC = IPsecPolicySpec.model_validate({
    "ipsecSubnets": ["10.0.0.0/16"],
    "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
})


def ipsec_node(name: str, address: str, policy: str = "mesh") -> IPsecNode:
    return IPsecNode(
        metadata={"name": name},  # type: ignore[arg-type]
        spec=IPsecNodeSpec(addresses=[address], identity=f"CN={name}"),
        status=IPsecNodeStatus(policies=[
            EnforcedPolicy(name=policy, generation=1, address=address),
        ]),
    )


def peer(i: int) -> Peer:
    return Peer(node=f"n{i:04d}", address=f"10.0.{i // 250}.{i % 250 + 1}", identity="")


def spec(peers: list[Peer], generation: int = 1, deleting: bool = False) -> IPsecPeerSliceSpec:
    return IPsecPeerSliceSpec(policy="mesh", policy_generation=generation, policy_spec=SPEC,
                              deleting=deleting, peers=peers)


def test_peers_are_selected_nodes_that_protect_an_address_for_the_policy() -> None:
    nodes = {"a": {"role": "x"}, "b": {"role": "y"}, "c": {"role": "x"}, "d": {"role": "x"}}
    ipsec_nodes = {
        "a": ipsec_node("a", "10.0.0.1"),
        "b": ipsec_node("b", "10.0.0.2"),  # not selected
        "c": ipsec_node("c", "", "mesh"),  # reports the policy but has no connection for it
        "d": ipsec_node("d", "10.0.0.4", "other"),  # enforces another policy only
        "e": ipsec_node("e", "10.0.0.5"),  # its Node is gone
    }
    selector = LabelSelector(match_labels={"role": "x"})
    assert policy_peers("mesh", selector, nodes, ipsec_nodes) == [
        Peer(node="a", address="10.0.0.1", identity="CN=a")
    ]


def test_peers_carry_their_nodes_pod_networks() -> None:
    nodes: dict[str, dict[str, str]] = {"a": {}, "b": {}}
    ipsec_nodes = {"a": ipsec_node("a", "10.0.0.1"), "b": ipsec_node("b", "10.0.0.2")}
    peers = policy_peers("mesh", LabelSelector(), nodes, ipsec_nodes,
                         {"a": ("10.244.1.0/24", "fd44:1::/64")})
    assert [(p.node, p.pod_cidrs) for p in peers] == [
        ("a", ["10.244.1.0/24", "fd44:1::/64"]), ("b", [])]


def started(name: str, *addresses: str) -> IPsecNode:
    """An IPsecNode whose agent runs but enforces no policy yet."""
    return IPsecNode(
        metadata={"name": name},  # type: ignore[arg-type]
        spec=IPsecNodeSpec(addresses=list(addresses)),
    )


def test_selected_nodes_with_an_address_in_scope_are_members_before_they_enforce() -> None:
    nodes = {n: {"role": "x"} for n in "abcdef"} | {"g": {"role": "y"}}
    ipsec_nodes = {
        "a": ipsec_node("a", "10.0.0.1"),  # enforces: a ready peer
        "b": started("b", "192.168.0.2", "10.0.0.2"),  # its first address in scope counts
        "c": started("c", "192.168.0.3"),  # no address in ipsecSubnets: nothing to negotiate
        "d": started("d"),  # no addresses reported yet
        "e": started("e", "not-an-address", "10.0.0.5"),  # the spec is the agent's word
        "f": ipsec_node("f", "10.0.0.6", "other"),  # enforces another policy: a member
        "g": started("g", "10.0.0.7"),  # not selected
        "h": started("h", "10.0.0.8"),  # its Node is gone
    }
    selector = LabelSelector(match_labels={"role": "x"})
    members = policy_members("mesh", SPEC.model_copy(update={"node_selector": selector}),
                             nodes, ipsec_nodes, {"b": ("10.244.2.0/24",)})
    assert [(p.node, p.address, p.ready, p.identity, p.pod_cidrs) for p in members] == [
        ("a", "10.0.0.1", True, "CN=a", []),
        ("b", "10.0.0.2", False, "", ["10.244.2.0/24"]),
        ("e", "10.0.0.5", False, "", []),
        ("f", "10.0.0.6", False, "", []),  # its identity may be another policy's
    ]


def test_a_member_becoming_ready_rewrites_its_slice_in_place() -> None:
    nodes: dict[str, dict[str, str]] = {"a": {}, "b": {}}
    before = policy_members("mesh", SPEC, nodes,
                            {"a": ipsec_node("a", "10.0.0.1"), "b": started("b", "10.0.0.2")})
    after = policy_members("mesh", SPEC, nodes,
                           {"a": ipsec_node("a", "10.0.0.1"), "b": ipsec_node("b", "10.0.0.2")})
    existing = plan_slices("mesh", 1, SPEC, False, before, {}).upserts
    plan = plan_slices("mesh", 1, SPEC, False, after, existing)
    assert list(plan.upserts) == ["mesh-0"]
    assert not plan.deletes
    assert [(p.node, p.ready) for p in plan.upserts["mesh-0"].peers] == [("a", True), ("b", True)]


def test_a_new_policy_gets_an_empty_first_slice() -> None:
    plan = plan_slices("mesh", 1, SPEC, False, [], {})
    assert plan == SlicePlan(upserts={"mesh-0": spec([])})


def test_nothing_to_write_when_the_slices_already_hold_the_peers() -> None:
    peers = [peer(1), peer(2)]
    assert plan_slices("mesh", 1, SPEC, False, peers, {"mesh-0": spec(peers)}).empty


@pytest.mark.parametrize(
    ("count", "slices"), [(0, 1), (1, 1), (100, 1), (101, 2), (250, 3), (1000, 10)]
)
def test_peers_fill_slices_of_at_most_the_capacity(count: int, slices: int) -> None:
    plan = plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(count)], {})
    assert len(plan.upserts) == slices
    assert all(len(s.peers) <= 100 for s in plan.upserts.values())
    assert sum(len(s.peers) for s in plan.upserts.values()) == count


def test_a_joining_node_rewrites_exactly_one_slice() -> None:
    existing = plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(250)], {}).upserts
    plan = plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(251)], existing)
    assert list(plan.upserts) == ["mesh-2"]  # the first slice with room
    assert plan.deletes == ()


def test_a_leaving_node_rewrites_its_own_slice_and_no_other() -> None:
    existing = plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(250)], {}).upserts
    leaving = next(iter(existing["mesh-1"].peers)).node
    remaining = [peer(i) for i in range(250) if peer(i).node != leaving]
    plan = plan_slices("mesh", 1, SPEC, False, remaining, existing)
    assert list(plan.upserts) == ["mesh-1"]


def test_an_emptied_slice_is_deleted_but_the_first_slice_stays() -> None:
    existing = {"mesh-0": spec([peer(1)]), "mesh-1": spec([peer(2)])}
    plan = plan_slices("mesh", 1, SPEC, False, [], existing)
    assert plan.deletes == ("mesh-1",)
    assert plan.upserts == {"mesh-0": spec([])}


def test_only_the_first_slice_carries_the_spec() -> None:
    plan = plan_slices("mesh", 3, SPEC, False, [peer(i) for i in range(250)], {})
    assert [(n, s.policy_generation, s.policy_spec is not None)
            for n, s in sorted(plan.upserts.items())] == [
        ("mesh-0", 3, True), ("mesh-1", 0, False), ("mesh-2", 0, False)]


def test_a_new_generation_or_deletion_rewrites_the_first_slice_only() -> None:
    # one write, one watch event per agent: not one per hundred peers, each a pass over all
    existing = plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(250)], {}).upserts
    bumped = plan_slices("mesh", 2, SPEC, False, [peer(i) for i in range(250)], existing)
    assert list(bumped.upserts) == ["mesh-0"]
    assert bumped.upserts["mesh-0"].policy_generation == 2
    deleting = plan_slices("mesh", 1, SPEC, True, [peer(i) for i in range(250)], existing)
    assert list(deleting.upserts) == ["mesh-0"]
    assert deleting.upserts["mesh-0"].deleting


def test_slices_of_an_operator_that_put_the_spec_in_every_slice_are_rewritten_once() -> None:
    old = {"mesh-0": spec([peer(i) for i in range(100)]),
           "mesh-1": spec([peer(i) for i in range(100, 150)])}
    plan = plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(150)], old)
    assert list(plan.upserts) == ["mesh-1"]
    assert plan.upserts["mesh-1"].policy_spec is None
    assert plan_slices("mesh", 1, SPEC, False, [peer(i) for i in range(150)],
                       {**old, **plan.upserts}).empty


def peers_only(peers: list[Peer]) -> IPsecPeerSliceSpec:
    return IPsecPeerSliceSpec(policy="mesh", policy_generation=0, peers=peers)


def test_a_peer_whose_address_changed_is_rewritten_in_place() -> None:
    existing = {"mesh-0": spec([peer(1)]), "mesh-1": peers_only([peer(2)])}
    moved = Peer(node=peer(2).node, address="10.9.9.9")
    plan = plan_slices("mesh", 1, SPEC, False, [peer(1), moved], existing)
    assert plan.upserts == {"mesh-1": peers_only([moved])}


def test_slices_with_names_the_operator_would_not_give_are_deleted() -> None:
    plan = plan_slices("mesh", 1, SPEC, False, [], {"mesh-0": spec([]), "stray": spec([])})
    assert plan.deletes == ("stray",)


def test_long_policy_names_give_valid_distinct_slice_names() -> None:
    first, second = "p" * 253, "p" * 252 + "q"
    assert len(slice_name(first, 999)) <= 253
    assert slice_name(first, 0) != slice_name(second, 0)


def test_removal_deletes_every_slice_the_one_with_the_spec_last() -> None:
    existing = {"mesh-1": peers_only([peer(1)]), "mesh-0": spec([]), "mesh-2": peers_only([])}
    assert plan_removal(existing).deletes == ("mesh-1", "mesh-2", "mesh-0")


def policy(spec: dict[str, object] | None = None, generation: int = 1) -> PolicyRecord:
    return parse_policy({
        "apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy",
        "metadata": {"name": "mesh", "generation": generation},
        "spec": {"ipsecSubnets": ["10.0.0.0/16"],
                 "credentials": {"secretRef": {"name": "c", "namespace": "n"}}} | (spec or {}),
    })


BAD_ESP: dict[str, object] = {"esp": {"proposals": ["aes128"]}}  # no integrity: invalid
ISSUER_SPEC: dict[str, object] = {
    "credentials": {"issuer": {"secretRef": {"name": "ca", "namespace": "n"}}}}
NODE_A: dict[str, dict[str, str]] = {"a": {}}
ENFORCING_A = {"a": ipsec_node("a", "10.0.0.1")}


def publish(record: PolicyRecord, existing: dict[str, IPsecPeerSliceSpec],
            issuer: IssuerCA | None = None) -> SlicePlan:
    return plan_publication(record, issuer, existing, NODE_A, ENFORCING_A, {})


def test_a_valid_policy_is_published_with_its_peers() -> None:
    plan = publish(policy(), {})
    (content,) = plan.upserts.values()
    assert (content.policy_generation, [p.node for p in content.peers]) == (1, ["a"])
    assert content.policy_spec == policy().valid_spec


def test_a_policy_lists_the_nodes_that_do_not_enforce_it_yet_as_not_ready() -> None:
    plan = plan_publication(policy(), None, {}, {"a": {}, "b": {}},
                            {"a": ipsec_node("a", "10.0.0.1"), "b": started("b", "10.0.0.2")}, {})
    (content,) = plan.upserts.values()
    assert [(p.node, p.ready) for p in content.peers] == [("a", True), ("b", False)]


def test_an_invalid_edit_keeps_the_published_spec_and_generation() -> None:
    published = publish(policy(), {}).upserts
    invalid = policy(BAD_ESP, generation=2)
    assert publish(invalid, dict(published)).empty  # the nodes keep the last good spec
    # the peers still follow, with the spec as published
    stale = {"mesh-0": published["mesh-0"].model_copy(update={"peers": []})}
    (rewritten,) = publish(invalid, stale).upserts.values()
    assert (rewritten.policy_generation, rewritten.policy_spec) == (1, policy().valid_spec)
    assert [p.node for p in rewritten.peers] == ["a"]


def test_a_policy_never_valid_publishes_nothing() -> None:
    assert publish(policy(BAD_ESP), {}).empty


def test_issuer_mode_publishes_the_trusted_cas_and_the_signer_and_keeps_them_while_bad() -> None:
    ca = make_ca("Issuer CA")
    issuer = IssuerCA(ca.cert_pem, ca.key_pem(), (ca.cert_pem,), "CN=Issuer CA")
    published = publish(policy(ISSUER_SPEC), {}, issuer).upserts
    assert (published["mesh-0"].trust_bundle, published["mesh-0"].signer) == (
        ca.cert_pem, fingerprint(ca.cert_pem))
    assert publish(policy(ISSUER_SPEC), dict(published), None).empty


def test_a_new_slice_is_owned_by_its_policy_and_a_patch_replaces_the_content() -> None:
    content = spec([peer(1)])
    created = new_slice("mesh-0", content, PolicyMeta("mesh", uid="u-1"))
    assert created["metadata"]["ownerReferences"] == [
        {"apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy", "name": "mesh",
         "uid": "u-1"}]
    assert (created["kind"], created["spec"]) == ("IPsecPeerSlice", content.to_api())
    assert "ownerReferences" not in new_slice("mesh-0", content, None)["metadata"]
    assert replace_slice_spec(content) == [
        {"op": "replace", "path": "/spec", "value": content.to_api()}]
