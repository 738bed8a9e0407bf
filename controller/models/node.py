"""IPsecNode: one per node, written only by that node's agent (the CiliumNode pattern).

Agents never write the shared IPsecPolicy; the operator aggregates these objects into
IPsecPolicy.status, so status traffic grows with the number of nodes, not its square.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from controller.models.common import ApiModel, ObjectMeta

KIND = "IPsecNode"
PLURAL = "ipsecnodes"
SINGULAR = "ipsecnode"
SHORT_NAMES = ["ipn"]
# SAs an IPsecNode lists; the counts (establishedSAs, per policy) cover the rest.
SA_LIST_LIMIT = 16  # as many as a policy row shows peers (ROW_PEERS_LIMIT)
# CHILD_SA states that carry traffic (a rekeying one still does).
ESTABLISHED_CHILD_STATES = frozenset({"INSTALLED", "REKEYING", "REKEYED"})


def address_order(address: str) -> tuple[int, int, str]:
    """IP addresses in numeric order (10.0.0.9 before 10.0.0.10, IPv4 first), anything else
    after."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (2, 0, address)
    return (ip.version // 6, int(ip), "")


class IPsecNodeSpec(ApiModel):
    """Facts about the node, as its agent sees them."""

    addresses: list[str] = Field(default_factory=list, description="Node IP addresses.")
    identity: str = Field(
        default="", description="Subject of the node's instance certificate (its IKE identity)."
    )


class CertificateInfo(ApiModel):
    """The certificate the node authenticates with for a policy."""

    subject: str = Field(description="Subject (the node's IKE identity).")
    issuer: str = Field(description="Issuer.")
    not_after: str = Field(
        description="End of validity (RFC 3339).", json_schema_extra={"format": "date-time"}
    )


class EnforcedPolicy(ApiModel):
    """A policy the node enforces (or tried to)."""

    name: str = Field(description="IPsecPolicy name.")
    generation: int = Field(description="Generation of the policy the node enforces.")
    enforcing: bool = Field(
        default=True, description="False when the latest generation could not be applied."
    )
    message: str = Field(default="", description="Why the latest generation is not enforced.")
    address: str = Field(
        default="",
        description="The node address this policy protects; empty when the node has no "
        "connection for it (then it is nobody's peer).",
    )
    expected_peers: int = Field(
        default=0, description="Peers the node should hold an SA with (from IPsecPeerSlices)."
    )
    established_peers: int = Field(
        default=0, description="Expected peers with an installed CHILD_SA."
    )
    missing_peers: list[str] = Field(
        default_factory=list, description="Expected peers without an installed CHILD_SA."
    )
    established_sas: int | None = Field(
        default=None,
        alias="establishedSAs",
        description="The policy's CHILD_SAs installed or being rekeyed, listed or not.",
    )
    certificate: CertificateInfo | None = Field(
        default=None, description="The certificate the node uses for this policy."
    )
    interface_mtu: int | None = Field(
        default=None, alias="interfaceMTU",
        description="MTU of the interface of the protected address.",
    )
    esp_overhead: int | None = Field(
        default=None,
        description="Bytes ESP adds to a full-size packet, for the worst of the policy's ESP "
        "proposals in its mode (tunnel mode: the outer IP header included).",
    )
    max_inner_packet: int | None = Field(
        default=None,
        description="The largest inner packet whose ESP packet fits the interface MTU: the "
        "MTU to give pod interfaces (the CNI MTU) in Tunnel mode.",
    )


class SecurityAssociation(ApiModel):
    """One CHILD_SA (with its IKE_SA's facts) as charon reports it."""

    policy: str = Field(description="IPsecPolicy the SA belongs to.")
    connection: str = Field(
        default="", description="charon connection: one per peer, or the policy's catch-all."
    )
    ike_id: str = Field(default="", description="charon's unique id of the IKE_SA.")
    child: str = Field(
        default="", description="charon child: the peer's transport one, or its pods' tunnel."
    )
    child_id: str = Field(default="", description="charon's unique id of the CHILD_SA.")
    peer: str = Field(description="Peer address.")
    peer_identity: str = Field(default="", description="Peer's IKE identity.")
    ike_state: str = Field(default="", description="IKE_SA state, e.g. ESTABLISHED.")
    state: str = Field(description="CHILD_SA state, e.g. INSTALLED.")
    protocol: Literal["ESP", "AH"] = Field(default="ESP", description="IPsec protocol.")
    mode: str = Field(default="TRANSPORT", description="TRANSPORT or TUNNEL.")
    encapsulated: bool = Field(default=False, description="ESP in UDP.")
    encryption: str = Field(default="", description="Encryption algorithm (with key size).")
    integrity: str = Field(default="", description="Integrity algorithm, empty for AEAD.")
    dh_group: str = Field(default="", description="Key exchange group of the IKE_SA.")
    ike_algorithms: str = Field(default="", description="IKE_SA proposal, e.g. AES_CBC-128/...")
    bytes_in: int = Field(default=0, description="Bytes received.")
    bytes_out: int = Field(default=0, description="Bytes sent.")
    packets_in: int = Field(default=0, description="Packets received.")
    packets_out: int = Field(default=0, description="Packets sent.")
    established_seconds: int = Field(default=0, description="Seconds since the SA was installed.")
    rekey_seconds: int | None = Field(default=None, description="Seconds until rekeying.")
    spi_in: str = Field(default="", description="Inbound SPI (hex).")
    spi_out: str = Field(default="", description="Outbound SPI (hex).")


class IPsecNodeStatus(ApiModel):
    """What the node enforces and the SAs it holds."""

    policies: list[EnforcedPolicy] = Field(default_factory=list, description="Policies enforced.")
    sas: list[SecurityAssociation] = Field(
        default_factory=list,
        description=f"Current CHILD_SAs: at most {SA_LIST_LIMIT}, those not installed first "
        "(a mesh of N nodes holds N-1 per node; the counts cover them all).",
    )
    sas_omitted: int = Field(
        default=0, alias="sasOmitted", description="CHILD_SAs held but not listed in sas."
    )
    errors: list[str] = Field(default_factory=list, description="Problems the agent met.")
    established_sas: int = Field(
        default=0,
        alias="establishedSAs",
        description="CHILD_SAs in state INSTALLED, for the SAS column.",
    )
    last_heartbeat: str | None = Field(
        default=None,
        description="When the agent last confirmed this status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


    def listed(self, limit: int = SA_LIST_LIMIT) -> IPsecNodeStatus:
        """This status with at most ``limit`` SAs listed, those not installed first: an
        object per node that grows with the mesh would grow the API's traffic with N²."""
        if len(self.sas) <= limit:
            return self
        ordered = sorted(self.sas, key=lambda sa: (sa.state == "INSTALLED", sa.policy,
                                                   address_order(sa.peer), sa.child))
        return self.model_copy(update={"sas": ordered[:limit],
                                       "sas_omitted": len(self.sas) - limit})


class IPsecNode(ApiModel):
    """The IPsecNode resource as a whole."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["strongmesh.io/v1alpha1"] = Field(
        default="strongmesh.io/v1alpha1", description="strongmesh.io/v1alpha1."
    )
    kind: Literal["IPsecNode"] = Field(default="IPsecNode", description="IPsecNode.")
    metadata: ObjectMeta = Field(description="Standard object metadata; name = node name.")
    spec: IPsecNodeSpec = Field(default_factory=IPsecNodeSpec, description="Node facts.")
    status: IPsecNodeStatus | None = Field(default=None, description="Enforcement and SAs.")
