"""IPsecPeerSlice: what agents enforce and with whom, written only by the operator.

Agents need two things from the cluster: a policy's spec and its peers (the selected nodes
that enforce it, with their addresses and identities). Neither may cost O(N) watch events per
agent when one node's SA count changes, which a watch on IPsecPolicy would (its status changes
with every aggregation). So the operator publishes, per policy, slices of at most a hundred
peers (the EndpointSlice pattern). The first slice also carries the last policy spec that
passed validation (and the deletion state, and in issuer mode the CAs); the others carry peers
only. A slice is rewritten only when what it carries changes, so a policy change is one write.
Agents watch slices and never IPsecPolicies: one node joining rewrites one slice (one watch
event per agent, whatever the cluster's size), and an invalid edit of a policy never reaches a
node, which keeps enforcing the last good spec, also across agent restarts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.models.common import ApiModel, ObjectMeta
from controller.models.policy import IPsecPolicySpec

KIND = "IPsecPeerSlice"
PLURAL = "ipsecpeerslices"
SINGULAR = "ipsecpeerslice"
SHORT_NAMES = ["ipps"]
POLICY_LABEL = "strongmesh.io/policy"


class Peer(ApiModel):
    """A node of the policy, as the other nodes need to know it.

    The operator lists a selected node as soon as its IPsecNode has an address inside the
    policy's ipsecSubnets (``ready: false``), and marks it ready once its agent reports that it
    enforces the policy. Every agent loads a connection for every listed node at once, so a
    node's side is in place well before anyone initiates to it: initiators wait for ``ready``
    on both ends (``controller.agent.peering``)."""

    node: str = Field(description="Node name.")
    address: str = Field(description="The node's address inside the policy's ipsecSubnets.")
    identity: str = Field(default="", description="The node's IKE identity (certificate subject).")
    ready: bool = Field(
        default=True,
        description="The node's agent reports that it enforces the policy (false: listed so that "
        "its peers load its connection ahead; nobody initiates to it yet, nor counts it as "
        "expected).",
    )
    pod_cidrs: list[str] = Field(
        default_factory=list,
        alias="podCIDRs",
        description="Tunnel mode: the node's pod CIDRs (Node spec.podCIDRs), protected between "
        "nodes by tunnel-mode SAs.",
    )


class IPsecPeerSliceSpec(ApiModel):
    """One slice of a policy's peers."""

    policy: str = Field(description="IPsecPolicy the slice belongs to.")
    policy_generation: int = Field(
        description="Generation of the policy whose spec this slice carries; 0 in a slice "
        "that carries peers only."
    )
    policy_spec: IPsecPolicySpec | None = Field(
        default=None,
        description="The last spec of the policy that passed validation: set in the policy's "
        "first slice (NAME-0) only; the others carry peers only (a standalone policy file may "
        "leave it out next to its IPsecPolicy).",
    )
    deleting: bool = Field(
        default=False,
        description="The policy is being deleted (first slice): agents tear down its state."
    )
    trust_bundle: str = Field(
        default="",
        description="Issuer mode (first slice): the CA certificates (PEM) the nodes trust, from "
        "the issuer Secret's ca.crt (or its tls.crt); never its key.",
    )
    signer: str = Field(
        default="",
        description="Issuer mode (first slice): SHA-256 fingerprint of the CA that signs node "
        "certificates now; a node whose certificate another CA signed requests a new one "
        "(CA rotation).",
    )
    peers: list[Peer] = Field(default_factory=list, description="Peers in this slice.")


class IPsecPeerSlice(ApiModel):
    """The IPsecPeerSlice resource as a whole."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["strongmesh.io/v1alpha1"] = Field(
        default="strongmesh.io/v1alpha1", description="strongmesh.io/v1alpha1."
    )
    kind: Literal["IPsecPeerSlice"] = Field(default="IPsecPeerSlice", description="IPsecPeerSlice.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: IPsecPeerSliceSpec = Field(description="The policy, its generation and peers.")
