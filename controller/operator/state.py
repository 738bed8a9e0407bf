"""The operator's in-memory view of the cluster, kept current by the watch handlers.

Holds exactly what status computation needs: the policies, Node labels and pod networks,
IPsecNodes, the IPsecPeerSlices the operator published, and the Secrets that some policy
references (other Secrets are never kept). Every object is parsed here, once, as it arrives
(``records`` for policies and Secrets). Each ``apply_*`` returns the policies whose status may
have changed, so that only those are recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.manifests import node_pod_cidrs
from controller.models.node import IPsecNode
from controller.models.peers import IPsecPeerSlice, IPsecPeerSliceSpec
from controller.operator.records import (
    PolicyRecord,
    SecretContents,
    SecretKey,
    newer_or_same,
    only_status_changed,
    parse_policy,
    parse_secret,
    secret_key,
)
from controller.operator.status import policies_listed, status_view


@dataclass
class ClusterState:
    policies: dict[str, PolicyRecord] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    # Node spec.podCIDRs (Tunnel mode's peers carry them); only nodes that have some.
    pod_cidrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ipsec_nodes: dict[str, IPsecNode] = field(default_factory=dict)
    # every IPsecNode's name, readable or not: what the orphan sweep looks at
    ipsec_node_names: set[str] = field(default_factory=set)
    # Referenced Secrets only; None = looked up and not found.
    secrets: dict[SecretKey, SecretContents | None] = field(default_factory=dict)
    # The IPsecPeerSlices the operator published (slice name -> its spec).
    slices: dict[str, IPsecPeerSliceSpec] = field(default_factory=dict)

    def slices_of(self, policy: str) -> dict[str, IPsecPeerSliceSpec]:
        return {name: spec for name, spec in self.slices.items() if spec.policy == policy}

    def apply_slice(self, kind: str | None, body: dict[str, Any]) -> set[str]:
        """A slice changed: only its policy needs a look (its slices may need rewriting)."""
        name = body["metadata"]["name"]
        before = self.slices.get(name)
        if kind == "DELETED":
            self.slices.pop(name, None)
        else:
            try:
                self.slices[name] = IPsecPeerSlice.model_validate(body).spec
            except ValueError:
                self.slices.pop(name, None)  # unreadable: the policy's plan rewrites it
        after = self.slices.get(name)
        if before == after:
            return set()  # our own write coming back
        return {s.policy for s in (before, after) if s is not None} & set(self.policies)

    def referenced(self) -> set[SecretKey]:
        return {record.secret for record in self.policies.values() if record.secret}

    def apply_policy(self, kind: str | None, body: dict[str, Any]) -> set[str]:
        name = body["metadata"]["name"]
        before = self.policies.get(name)
        if kind == "DELETED":
            self.policies.pop(name, None)
        else:
            record = parse_policy(body)
            if before is not None and not newer_or_same(before.meta.resource_version,
                                                        record.meta.resource_version):
                return set()  # overtaken by the response to our own write
            self.policies[name] = record
            if before is not None and only_status_changed(before, record):
                return set()  # our own status write coming back: nothing to re-evaluate
        for key in set(self.secrets) - self.referenced():
            del self.secrets[key]
        # Every policy: overlaps between policies depend on all of them (policies are few).
        return set(self.policies) | {name}

    def apply_own_write(self, body: Mapping[str, Any]) -> None:
        """The API's answer to the operator's own write of a policy (status, finalizer): kept
        unless the policy is gone or a newer version arrived meanwhile. Nothing becomes dirty:
        the operator acted on this version already."""
        record = parse_policy(body)
        kept = self.policies.get(record.name)
        if kept is not None and newer_or_same(kept.meta.resource_version,
                                              record.meta.resource_version):
            self.policies[record.name] = record

    def apply_node(self, kind: str | None, body: Mapping[str, Any]) -> set[str]:
        name = body["metadata"]["name"]
        labels = dict(body["metadata"].get("labels") or {})
        before = self.nodes.get(name), self.pod_cidrs.get(name)
        self.nodes.pop(name, None)
        self.pod_cidrs.pop(name, None)
        if kind != "DELETED":
            self.nodes[name] = labels
            if cidrs := tuple(node_pod_cidrs(body)):
                self.pod_cidrs[name] = cidrs
        if before == (self.nodes.get(name), self.pod_cidrs.get(name)):
            return set()  # a status heartbeat of the kubelet: nothing for us
        return set(self.policies)

    def apply_ipsec_node(self, kind: str | None, body: dict[str, Any]) -> set[str]:
        name = body["metadata"]["name"]
        before = self.ipsec_nodes.get(name)
        if kind == "DELETED":
            self.ipsec_nodes.pop(name, None)
            self.ipsec_node_names.discard(name)
        else:
            self.ipsec_node_names.add(name)
            try:
                self.ipsec_nodes[name] = status_view(IPsecNode.model_validate(body))
            except ValueError:
                self.ipsec_nodes.pop(name, None)
        after = self.ipsec_nodes.get(name)
        affected = set()
        for node in (before, after):
            if node is not None:
                affected |= policies_listed(node)
        labels = self.nodes.get(name)
        if labels is not None:
            for policy, record in self.policies.items():
                if record.selector is None or record.selector.matches(labels):
                    affected.add(policy)
        return affected & set(self.policies)

    def apply_secret(self, kind: str | None, body: dict[str, Any]) -> set[str]:
        key = secret_key(body)
        if key not in self.referenced():
            return set()
        self.secrets[key] = None if kind == "DELETED" else parse_secret(body)
        return {name for name, record in self.policies.items() if record.secret == key}

    def keep_secret(self, key: SecretKey, body: Mapping[str, Any] | None) -> SecretContents | None:
        """A Secret the operator read itself (None: not found), kept until its watch reports."""
        self.secrets[key] = None if body is None else parse_secret(body)
        return self.secrets[key]
