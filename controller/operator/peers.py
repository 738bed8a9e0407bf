"""A policy's peers and their layout in IPsecPeerSlices. Pure.

A peer is a node the policy selects whose agent reports a connection for it: the node's entry
for the policy in ``IPsecNode.status.policies`` carries the address it protects. (A node that
cannot enforce the policy at all — no address in ``ipsecSubnets``, no usable credentials —
reports no address and is nobody's peer: nothing could negotiate with it.) The slices list
more than the peers: every selected node with an address in ``ipsecSubnets`` (from its
IPsecNode spec, written when its agent starts) is a member at once, not ready until it reports.
Agents load a connection for every member, so that when both ends are ready and one initiates,
the other's connection is long in place (``controller.agent.peering``); only ready peers count
in the status.

Slices follow the EndpointSlice pattern: a peer stays in the slice it was put in, a new peer
goes to the first slice with room, and only slices whose content changed are written. So one
node joining or leaving rewrites one slice, which is one watch event for each agent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.models.common import API_VERSION, LabelSelector
from controller.models.node import IPsecNode
from controller.models.peers import IPsecPeerSliceSpec, Peer
from controller.models.policy import IPsecPolicySpec
from controller.operator.records import PolicyMeta, PolicyRecord
from controller.pki import fingerprint
from controller.scope import address_inside
from controller.validation import IssuerCA

SLICE_CAPACITY = 100
_MAX_BASE = 240  # slice names are "<base>-<index>"; object names stay within 253 characters


def policy_peers(
    policy: str,
    selector: LabelSelector,
    node_labels: Mapping[str, Mapping[str, str]],
    ipsec_nodes: Mapping[str, IPsecNode],
    pod_cidrs: Mapping[str, Sequence[str]] | None = None,
) -> list[Peer]:
    """The peers of ``policy``: selected, existing Nodes whose agent protects an address for
    it, with their pod networks (``pod_cidrs``: Node spec.podCIDRs). In node name order."""
    return [
        _peer(name, address, ipsec_node.spec.identity, True, pod_cidrs)
        for name, ipsec_node in _selected(selector, node_labels, ipsec_nodes)
        if (address := _reported_address(ipsec_node, policy))
    ]


def policy_members(
    policy: str,
    spec: IPsecPolicySpec,
    node_labels: Mapping[str, Mapping[str, str]],
    ipsec_nodes: Mapping[str, IPsecNode],
    pod_cidrs: Mapping[str, Sequence[str]] | None = None,
) -> list[Peer]:
    """What the slices list: the peers (as ``policy_peers``, ready) and every other selected,
    existing Node whose IPsecNode spec has an address inside the policy's ipsecSubnets (not
    ready, with no identity: its agent has not reported one for this policy). In node name
    order."""
    members = []
    for name, ipsec_node in _selected(spec.node_selector, node_labels, ipsec_nodes):
        if reported := _reported_address(ipsec_node, policy):
            members.append(_peer(name, reported, ipsec_node.spec.identity, True, pod_cidrs))
        elif in_scope := address_inside(spec, ipsec_node.spec.addresses):
            members.append(_peer(name, in_scope, "", False, pod_cidrs))
    return members


def _selected(
    selector: LabelSelector, node_labels: Mapping[str, Mapping[str, str]],
    ipsec_nodes: Mapping[str, IPsecNode],
) -> Iterator[tuple[str, IPsecNode]]:
    """The IPsecNodes of existing Nodes the selector selects, in node name order."""
    for name in sorted(ipsec_nodes):
        labels = node_labels.get(name)
        if labels is not None and selector.matches(dict(labels)):
            yield name, ipsec_nodes[name]


def _reported_address(ipsec_node: IPsecNode, policy: str) -> str:
    """The address the node's agent protects for the policy ("": none reported)."""
    entries = ipsec_node.status.policies if ipsec_node.status else []
    return next((p.address for p in entries if p.name == policy and p.address), "")


def _peer(name: str, address: str, identity: str, ready: bool,
          pod_cidrs: Mapping[str, Sequence[str]] | None) -> Peer:
    return Peer(node=name, address=address, identity=identity, ready=ready,
                pod_cidrs=list((pod_cidrs or {}).get(name, ())))


def slice_base(policy: str) -> str:
    """The policy's slice name prefix (long names shortened with a digest, still unique)."""
    if len(policy) <= _MAX_BASE:
        return policy
    digest = hashlib.sha256(policy.encode()).hexdigest()[:8]
    return f"{policy[:_MAX_BASE - 9]}-{digest}"


def slice_name(policy: str, index: int) -> str:
    return f"{slice_base(policy)}-{index}"


def _index(policy: str, name: str) -> int | None:
    match = re.fullmatch(re.escape(slice_base(policy)) + r"-(\d+)", name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class SlicePlan:
    """Slices to create or replace (name -> spec) and slices to delete."""

    upserts: Mapping[str, IPsecPeerSliceSpec] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deletes


def plan_slices(
    policy: str,
    generation: int,
    spec: IPsecPolicySpec,
    deleting: bool,
    peers: Sequence[Peer],
    existing: Mapping[str, IPsecPeerSliceSpec],
    capacity: int = SLICE_CAPACITY,
    *,
    trust_bundle: str = "",
    signer: str = "",
) -> SlicePlan:
    """The writes that make ``existing`` (this policy's slices by name) carry ``spec`` at
    ``generation`` (the last one that validated) and hold ``peers``.

    Slice 0 always exists, even without peers: it is how agents learn of the policy before any
    node enforces it. It alone carries the spec, the deletion flag and the issuer's CAs; the
    others carry peers only (generation 0), so that a policy change is one write and one watch
    event per agent, not one per hundred peers (each a pass over every peer, on every node).
    """
    wanted = {p.node: p for p in peers}
    members: dict[int, dict[str, Peer]] = {}
    foreign = [name for name in existing if _index(policy, name) is None]
    for name, current in existing.items():
        index = _index(policy, name)
        if index is not None:
            members[index] = {p.node: wanted[p.node] for p in current.peers if p.node in wanted}
    placed = {node for slice_members in members.values() for node in slice_members}
    members.setdefault(0, {})
    for node in sorted(set(wanted) - placed):
        index = next((i for i in sorted(members) if len(members[i]) < capacity), None)
        if index is None:
            index = next(i for i in range(len(members) + 1) if i not in members)
            members[index] = {}
        members[index][node] = wanted[node]
    upserts: dict[str, IPsecPeerSliceSpec] = {}
    deletes = list(foreign)
    for index in sorted(members):
        name = slice_name(policy, index)
        if index != 0 and not members[index]:
            if name in existing:
                deletes.append(name)
            continue
        listed = [members[index][node] for node in sorted(members[index])]
        content = IPsecPeerSliceSpec(
            policy=policy, policy_generation=generation, policy_spec=spec, deleting=deleting,
            trust_bundle=trust_bundle, signer=signer, peers=listed,
        ) if index == 0 else IPsecPeerSliceSpec(policy=policy, policy_generation=0, peers=listed)
        if existing.get(name) != content:
            upserts[name] = content
    return SlicePlan(upserts=upserts, deletes=tuple(sorted(deletes)))


def plan_removal(existing: Mapping[str, IPsecPeerSliceSpec]) -> SlicePlan:
    """Every slice of a policy that is gone; the one with the spec last, so that no agent
    ever reads peers without their policy."""
    return SlicePlan(deletes=tuple(sorted(existing, key=lambda n: (
        existing[n].policy_spec is not None, n))))


def plan_publication(
    record: PolicyRecord,
    issuer: IssuerCA | None,
    existing: Mapping[str, IPsecPeerSliceSpec],
    node_labels: Mapping[str, Mapping[str, str]],
    ipsec_nodes: Mapping[str, IPsecNode],
    pod_cidrs: Mapping[str, Sequence[str]],
) -> SlicePlan:
    """The writes that bring the policy's slices (``existing``) in line: the spec (the current
    one if valid, else the one already published: an invalid edit never reaches a node), the
    deletion flag, the peers, and in issuer mode the CAs to trust and the one that signs
    (``issuer``: the issuing CA if its Secret is valid now; else kept as published)."""
    published = max(existing.values(), key=lambda s: s.policy_generation, default=None)
    spec, generation = record.valid_spec, record.meta.generation
    if spec is None:
        if published is None or published.policy_spec is None:
            return SlicePlan()  # never valid: nothing reaches the agents
        spec, generation = published.policy_spec, published.policy_generation
    trust, signer = "", ""
    if spec.credentials.issuer is not None:
        if issuer is not None:
            trust, signer = "".join(issuer.bundle_pems), fingerprint(issuer.cert_pem)
        elif published is not None:
            trust, signer = published.trust_bundle, published.signer
    members = policy_members(record.name, spec, node_labels, ipsec_nodes, pod_cidrs)
    return plan_slices(record.name, generation, spec, record.meta.deleting, members, existing,
                       trust_bundle=trust, signer=signer)


def new_slice(name: str, spec: IPsecPeerSliceSpec, owner: PolicyMeta | None) -> dict[str, Any]:
    """The IPsecPeerSlice to create; owned by its policy (if it still exists), so that a real
    cluster's garbage collector removes it with the policy too."""
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "strongmesh"}}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": "IPsecPolicy",
                                    "name": owner.name, "uid": owner.uid}]
    return {"apiVersion": API_VERSION, "kind": "IPsecPeerSlice", "metadata": meta,
            "spec": spec.to_api()}


def replace_slice_spec(spec: IPsecPeerSliceSpec) -> list[dict[str, Any]]:
    """The JSON patch that rewrites an existing slice's content."""
    return [{"op": "replace", "path": "/spec", "value": spec.to_api()}]
