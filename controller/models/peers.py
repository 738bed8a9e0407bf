"""IPsecPeerSlice: who an agent negotiates with, written only by the operator.

Agents need two things from the cluster: a policy's spec and its peers (the selected nodes
that enforce it, with their addresses and identities). Neither may cost O(N) watch events per
agent when one node's SA count changes, which a watch on IPsecPolicy would (its status changes
with every aggregation). So the operator publishes, per policy, slices of at most a few hundred
peers (the EndpointSlice pattern), rewritten only when the peer set, the policy's generation or
its deletion changes. An agent watches slices; when a slice names a policy generation it has
not read yet, it GETs that policy once. One node joining rewrites one slice: O(1) events per
agent, whatever the cluster's size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.models.common import ApiModel, ObjectMeta

KIND = "IPsecPeerSlice"
PLURAL = "ipsecpeerslices"
SINGULAR = "ipsecpeerslice"
SHORT_NAMES = ["ipps"]
POLICY_LABEL = "strongmesh.io/policy"


class Peer(ApiModel):
    """A node that enforces the policy, as the other nodes need to know it."""

    node: str = Field(description="Node name.")
    address: str = Field(description="The node's address inside the policy's ipsecSubnets.")
    identity: str = Field(default="", description="The node's IKE identity (certificate subject).")


class IPsecPeerSliceSpec(ApiModel):
    """One slice of a policy's peers."""

    policy: str = Field(description="IPsecPolicy the slice belongs to.")
    policy_generation: int = Field(
        description="The policy generation the operator published last; an agent reads the "
        "policy again when this moves."
    )
    deleting: bool = Field(
        default=False, description="The policy is being deleted: agents tear down its state."
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
