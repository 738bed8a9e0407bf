"""The operator's in-memory view of the cluster, kept current by the watch handlers.

Holds exactly what status computation needs: policy bodies, Node labels, IPsecNodes, and the
Secrets that some policy references (other Secrets are never kept). Each ``apply_*`` returns
the policies whose status may have changed, so that only those are recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.manifests import node_pod_cidrs
from controller.models.common import LabelSelector
from controller.models.node import IPsecNode
from controller.models.peers import IPsecPeerSlice, IPsecPeerSliceSpec
from controller.operator.status import policies_listed

SecretKey = tuple[str, str]  # (namespace, name)


def _selector(body: Mapping[str, Any]) -> LabelSelector | None:
    try:
        return LabelSelector.model_validate((body.get("spec") or {}).get("nodeSelector") or {})
    except ValueError:
        return None


def _policy_view(body: Mapping[str, Any]) -> Any:
    meta = body.get("metadata") or {}
    return (meta.get("generation"), meta.get("deletionTimestamp"), meta.get("finalizers"),
            body.get("spec"))


def secret_ref(body: Mapping[str, Any]) -> SecretKey | None:
    """The Secret the operator reads for a policy: the nodes' shared credentials, or (issuer
    mode) the issuing CA."""
    credentials = (body.get("spec") or {}).get("credentials") or {}
    ref = credentials.get("secretRef") or (credentials.get("issuer") or {}).get("secretRef") or {}
    if isinstance(ref, Mapping) and ref.get("name") and ref.get("namespace"):
        return str(ref["namespace"]), str(ref["name"])
    return None


@dataclass
class ClusterState:
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    # Node spec.podCIDRs (Tunnel mode's peers carry them); only nodes that have some.
    pod_cidrs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ipsec_nodes: dict[str, IPsecNode] = field(default_factory=dict)
    # Referenced Secrets only; None = looked up and not found.
    secrets: dict[SecretKey, dict[str, Any] | None] = field(default_factory=dict)
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
        return {ref for body in self.policies.values() if (ref := secret_ref(body))}

    def apply_policy(self, kind: str | None, body: dict[str, Any]) -> set[str]:
        name = body["metadata"]["name"]
        before = self.policies.get(name)
        if kind == "DELETED":
            self.policies.pop(name, None)
        else:
            self.policies[name] = body
            if before is not None and _policy_view(before) == _policy_view(body):
                return set()  # our own status write coming back: nothing to re-evaluate
        for key in set(self.secrets) - self.referenced():
            del self.secrets[key]
        # Every policy: overlaps between policies depend on all of them (policies are few).
        return set(self.policies) | {name}

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
        else:
            try:
                self.ipsec_nodes[name] = IPsecNode.model_validate(body)
            except ValueError:
                self.ipsec_nodes.pop(name, None)
        after = self.ipsec_nodes.get(name)
        affected = set()
        for node in (before, after):
            if node is not None:
                affected |= policies_listed(node)
        labels = self.nodes.get(name)
        if labels is not None:
            for policy, policy_body in self.policies.items():
                selector = _selector(policy_body)
                if selector is None or selector.matches(labels):
                    affected.add(policy)
        return affected & set(self.policies)

    def apply_secret(self, kind: str | None, body: dict[str, Any]) -> set[str]:
        meta = body["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if key not in self.referenced():
            return set()
        self.secrets[key] = None if kind == "DELETED" else body
        return {name for name, policy in self.policies.items() if secret_ref(policy) == key}

    def is_wanted_secret(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.referenced()
