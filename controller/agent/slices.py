"""IPsecPeerSlices -> the policies an agent enforces and their peers. Pure.

In cluster mode an agent reads policies only from the slices the operator publishes (see
``controller.models.peers``): a policy's first slice carries the last spec that passed the
operator's validation, so an invalid edit never reaches a node, and the others only peers. The
spec comes from the slice with the newest generation (while an older operator's slices, each
with a spec, catch up), deletion from any slice that says so, and the peers are the union of
all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.models.peers import IPsecPeerSlice, Peer
from controller.models.policy import IPsecPolicySpec


@dataclass(frozen=True)
class PublishedPolicy:
    """One policy as its slices publish it."""

    name: str
    generation: int
    spec: IPsecPolicySpec
    deleting: bool
    peers: tuple[Peer, ...]
    trust_bundle: str = ""  # issuer mode: the CAs to trust (PEM)
    signer: str = ""  # issuer mode: fingerprint of the CA that signs now


def published_policies(
    bodies: Iterable[Mapping[str, Any]],
    parse: Callable[[Mapping[str, Any]], IPsecPeerSlice] = IPsecPeerSlice.model_validate,
) -> tuple[dict[str, PublishedPolicy], list[str]]:
    """Group slice bodies by policy; problems name the slices that could not be read.
    ``parse`` (ValueError for an unreadable body) lets a caller reuse what it parsed before."""
    problems: list[str] = []
    grouped: dict[str, list[IPsecPeerSlice]] = {}
    for body in bodies:
        name = str((body.get("metadata") or {}).get("name", "?"))
        try:
            item = parse(body)
        except ValueError as error:
            problems.append(f"IPsecPeerSlice {name} is unreadable: {_first_line(error)}")
            continue
        grouped.setdefault(item.spec.policy, []).append(item)
    policies: dict[str, PublishedPolicy] = {}
    for policy, items in sorted(grouped.items()):
        with_spec = [i for i in items if i.spec.policy_spec is not None]
        if not with_spec:
            problems.append(f"policy {policy}: its IPsecPeerSlices carry no spec")
            continue
        newest = max(with_spec, key=lambda i: i.spec.policy_generation)
        assert newest.spec.policy_spec is not None
        peers: dict[str, Peer] = {}
        for item in sorted(items, key=lambda i: i.spec.policy_generation):
            peers.update((p.node, p) for p in item.spec.peers)
        policies[policy] = PublishedPolicy(
            name=policy,
            generation=newest.spec.policy_generation,
            spec=newest.spec.policy_spec,
            deleting=any(i.spec.deleting for i in items),
            peers=tuple(peers[n] for n in sorted(peers)),
            trust_bundle=newest.spec.trust_bundle,
            signer=newest.spec.signer,
        )
    return policies, problems


def peers_in_documents(docs: Iterable[Mapping[str, Any]]) -> tuple[dict[str, tuple[Peer, ...]],
                                                                   list[str]]:
    """Standalone files: the peers their IPsecPeerSlice documents list, per policy (the
    policy's spec comes from its IPsecPolicy document there)."""
    problems: list[str] = []
    peers: dict[str, dict[str, Peer]] = {}
    for doc in docs:
        if doc.get("kind") != "IPsecPeerSlice":
            continue
        name = str((doc.get("metadata") or {}).get("name", "?"))
        try:
            item = IPsecPeerSlice.model_validate(doc)
        except ValueError as error:
            problems.append(f"IPsecPeerSlice {name} is invalid: {_first_line(error)}")
            continue
        peers.setdefault(item.spec.policy, {}).update((p.node, p) for p in item.spec.peers)
    return {k: tuple(v[n] for n in sorted(v)) for k, v in peers.items()}, problems


def _first_line(error: ValueError) -> str:
    """pydantic's message on one line (its first line only counts the errors)."""
    return " ".join(str(error).split())[:300] or type(error).__name__
