"""IPsecPolicy: which traffic between nodes is protected, and how.

Every property of the PCF IPsec add-on has a home here; the add-on's name is given in
brackets in each description so that operators migrating from it find their settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from controller.models.common import (
    ApiModel,
    Condition,
    Duration,
    LabelSelector,
    ObjectMeta,
)

KIND = "IPsecPolicy"
PLURAL = "ipsecpolicies"
SINGULAR = "ipsecpolicy"
SHORT_NAMES = ["ipp"]
# Peers a status row lists: a thousand rows of a thousand peers would not fit in one object.
ROW_PEERS_LIMIT = 16

DEFAULT_IKE_PROPOSALS = ["aes128-sha256-modp2048!"]
DEFAULT_ESP_PROPOSALS = ["aes128gcm16!"]

Enforcement = Literal["Required", "Optional"]
Mode = Literal["Transport", "Tunnel"]
DpdAction = Literal["clear", "trap", "restart"]


class IkeSpec(ApiModel):
    """IKE (key exchange) settings."""

    version: Literal[1, 2] = Field(default=2, description="IKE version, 1 or 2 [ike_version].")
    proposals: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IKE_PROPOSALS),
        min_length=1,
        description=(
            "IKE proposals in strongSwan syntax, e.g. aes128-sha256-modp2048!; a trailing ! "
            "forbids falling back to strongSwan's defaults [ike_proposals]."
        ),
    )
    rekey_time: Duration = Field(default="4h", description="IKE_SA rekeying interval.")
    dpd_delay: Duration = Field(default="30s", description="Dead peer detection interval.")
    dpd_action: DpdAction = Field(
        default="restart",
        description="What to do when a peer is found dead: clear, trap or restart [dpdaction].",
    )


class EspSpec(ApiModel):
    """ESP (data plane) settings."""

    proposals: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ESP_PROPOSALS),
        min_length=1,
        description="ESP proposals in strongSwan syntax, e.g. aes128gcm16! [esp_proposals].",
    )
    rekey_time: Duration = Field(default="1h", description="CHILD_SA rekeying interval.")


class SecretReference(ApiModel):
    """Where the node credentials live."""

    name: str = Field(min_length=1, description="Secret name.")
    namespace: str = Field(min_length=1, description="Secret namespace.")


class IssuerSpec(ApiModel):
    """Per-node certificates, issued by the operator through the Kubernetes CSR API."""

    secret_ref: SecretReference = Field(
        description=(
            "Secret with the issuing CA: tls.crt (the CA certificate), tls.key (its key; only "
            "the operator may read this Secret) and optionally ca.crt (every CA the nodes "
            "trust, e.g. the old and the new one during a rotation; default: tls.crt)."
        )
    )
    duration: Duration = Field(default="720h", description="Lifetime of a node certificate.")
    renew_before: Duration = Field(
        default="240h", description="A node requests a new certificate this long before expiry."
    )


class Credentials(ApiModel):
    """Node credentials: one Secret shared by every node, or one certificate per node."""

    secret_ref: SecretReference | None = Field(
        default=None,
        description=(
            "Secret with tls.crt (instance certificate, optionally followed by intermediates), "
            "tls.key (its private key) and ca.crt (trusted CA certificates; two during CA "
            "rotation), shared by every node (the PCF add-on's model). cert-manager writes "
            "this layout."
        ),
    )
    issuer: IssuerSpec | None = Field(
        default=None,
        description=(
            "Instead of secretRef: each node generates its own key, never sent anywhere, and "
            "gets a certificate (subject CN=<node name>, O=strongmesh) through a "
            "CertificateSigningRequest with signerName strongmesh.io/ipsec-node, which the "
            "operator approves and signs with this CA."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        if (self.secret_ref is None) == (self.issuer is None):
            raise ValueError("set exactly one of secretRef and issuer")
        return self


class CertificateExpiry(ApiModel):
    """Days before the instance certificate expires at which each alert level starts."""

    info_days: int = Field(default=30, ge=0, description="Info level from this many days.")
    warn_days: int = Field(default=14, ge=0, description="Warning level from this many days.")
    error_days: int = Field(default=7, ge=0, description="Error level from this many days.")
    critical_days: int = Field(default=3, ge=0, description="Critical level from this many days.")


class IPsecPolicySpec(ApiModel):
    """Desired protection of node-to-node traffic."""

    node_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Nodes this policy applies to; empty selects every node.",
    )
    ipsec_subnets: list[str] = Field(
        min_length=1,
        description="CIDRs whose hosts protect traffic between each other [ipsec_subnets].",
        json_schema_extra={"items": {"type": "string", "format": "cidr"}},
    )
    no_ipsec_subnets: list[str] = Field(
        default_factory=list,
        description="CIDRs exempted from IPsec; always win over ipsecSubnets [no_ipsec_subnets].",
        json_schema_extra={"items": {"type": "string", "format": "cidr"}},
    )
    enforcement: Enforcement = Field(
        default="Required",
        description=(
            "Required: in-scope traffic is never sent in the clear. Optional: traffic to a peer "
            "without IPsec flows in the clear, for rollout without downtime [optional]."
        ),
    )
    mode: Mode = Field(
        default="Transport",
        description="Transport (host-to-host, the add-on's model) or Tunnel.",
    )
    ike: IkeSpec = Field(default_factory=IkeSpec, description="IKE settings.")
    esp: EspSpec = Field(default_factory=EspSpec, description="ESP settings.")
    force_udp_encapsulation: bool = Field(
        default=False,
        description="Encapsulate ESP in UDP even without NAT [force_udp_encapsulation].",
    )
    credentials: Credentials = Field(description="Where the node certificates come from.")
    certificate_expiry: CertificateExpiry = Field(
        default_factory=CertificateExpiry,
        description="Expiry alert thresholds for the instance certificate.",
    )
    xfrm_acq_expires_seconds: int = Field(
        default=6,
        ge=1,
        le=3600,
        description=(
            "net.core.xfrm_acq_expires: how long a failed acquire blocks new attempts "
            "(kernel default 165; the add-on lowered it to 6)."
        ),
    )
    log_level: int = Field(default=1, ge=-1, le=4, description="charon log level [log_level].")
    shutdown_timeout_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="How long charon stays up for draining workloads at shutdown [stop_timeout].",
    )


class PolicySummary(ApiModel):
    """Cluster-wide numbers behind the printer columns."""

    selected_nodes: int = Field(default=0, description="Nodes the selector matches.")
    ready_nodes: int = Field(default=0, description="Nodes enforcing the current generation.")
    ready: str = Field(default="0/0", description="ready/selected, for the READY column.")
    established_sas: int = Field(
        default=0, alias="establishedSAs", description="Established CHILD_SAs on all nodes."
    )
    max_inner_packet: int | None = Field(
        default=None,
        description="The smallest maxInnerPacket any node reports: the largest packet every "
        "node can send through ESP without fragmentation (the CNI MTU to set in Tunnel mode).",
    )


class PolicyNodeStatus(ApiModel):
    """One selected node's view of this policy."""

    name: str = Field(description="Node name.")
    enforcing: bool = Field(
        default=False, description="Whether the node enforces the current generation."
    )
    generation: int | None = Field(default=None, description="Generation the node enforces.")
    established_sas: int = Field(
        default=0, alias="establishedSAs", description="CHILD_SAs established on the node."
    )
    peers: list[str] = Field(
        default_factory=list,
        description=f"Peers with an established SA (the first {ROW_PEERS_LIMIT} by address; "
        "establishedPeers counts them all).",
    )
    expected_peers: int = Field(default=0, description="Peers the node should hold an SA with.")
    established_peers: int = Field(
        default=0, description="Of those, peers with an installed CHILD_SA."
    )
    max_inner_packet: int | None = Field(
        default=None, description="Largest inner packet that fits the node's interface MTU."
    )
    certificate_not_after: str | None = Field(
        default=None,
        description="End of validity of the certificate the node authenticates with.",
        json_schema_extra={"format": "date-time"},
    )
    certificate_expiry: Literal["ok", "info", "warning", "error", "critical", "expired"] | None = (
        Field(default=None, description="Its alert level by spec.certificateExpiry; "
              "an expired certificate keeps the policy from Ready.")
    )
    last_change: str | None = Field(
        default=None,
        description="When this row last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    message: str = Field(default="", description="Errors or notes from the node.")


class IPsecPolicyStatus(ApiModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(
        default=None, description="Spec generation the status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, CredentialsValid, Progressing, Degraded."
    )
    summary: PolicySummary = Field(default_factory=PolicySummary, description="Totals.")
    nodes: list[PolicyNodeStatus] = Field(default_factory=list, description="One row per node.")


class IPsecPolicy(ApiModel):
    """The IPsecPolicy resource as a whole."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: Literal["strongmesh.io/v1alpha1"] = Field(
        default="strongmesh.io/v1alpha1", description="strongmesh.io/v1alpha1."
    )
    kind: Literal["IPsecPolicy"] = Field(default="IPsecPolicy", description="IPsecPolicy.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: IPsecPolicySpec = Field(description="Desired state.")
    status: IPsecPolicyStatus | None = Field(default=None, description="Observed state.")

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> IPsecPolicy:
        return cls.model_validate(body)
