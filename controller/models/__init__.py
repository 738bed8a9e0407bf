"""Typed models of the strongmesh API (group strongmesh.io, version v1alpha1).

The CRDs in ``crds/`` are generated from these models by ``hack/gen-crds``.
"""

from controller.models.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    LabelSelector,
    duration_seconds,
)
from controller.models.node import (
    EnforcedPolicy,
    IPsecNode,
    IPsecNodeSpec,
    IPsecNodeStatus,
    SecurityAssociation,
)
from controller.models.policy import (
    CertificateExpiry,
    IPsecPolicy,
    IPsecPolicySpec,
    IPsecPolicyStatus,
    PolicyNodeStatus,
    PolicySummary,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "CertificateExpiry",
    "Condition",
    "EnforcedPolicy",
    "IPsecNode",
    "IPsecNodeSpec",
    "IPsecNodeStatus",
    "IPsecPolicy",
    "IPsecPolicySpec",
    "IPsecPolicyStatus",
    "LabelSelector",
    "PolicyNodeStatus",
    "PolicySummary",
    "SecurityAssociation",
    "duration_seconds",
]
