"""One policy evaluated: its status, the status patch if the API serves another one, and what
its Events should say (PURE: the reconciler passes in what it read, and the time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.models.node import IPsecNode
from controller.models.policy import IPsecPolicyStatus
from controller.operator.events import EventFacts
from controller.operator.peers import policy_peers
from controller.operator.records import PolicyRecord
from controller.operator.status import (
    READY,
    OverlapReport,
    PolicyFacts,
    became_ready,
    compute_status,
    condition,
    invalid_body_status,
    node_certificate_alerts,
    rfc3339,
    status_patch,
)
from controller.operator.verdicts import SecretAssessment


@dataclass(frozen=True)
class PolicyEvaluation:
    status: IPsecPolicyStatus
    status_patch: dict[str, Any] | None  # None: the API already serves ``status``
    events: EventFacts


def evaluate_policy(
    record: PolicyRecord,
    secret: SecretAssessment | None,
    overlaps: Sequence[OverlapReport],
    nodes: Mapping[str, Mapping[str, str]],
    ipsec_nodes: Mapping[str, IPsecNode],
    now: datetime,
    overdue_pairs: Sequence[tuple[str, str]] = (),
) -> PolicyEvaluation:
    """``secret`` None: not assessed (the body does not parse); ``nodes`` maps Node names to
    labels, ``ipsec_nodes`` node names to their IPsecNode; ``overdue_pairs``: (node, peer)
    pairs without an SA for longer than the grace period (``status.OverduePairs``).

    A node expects an SA with every peer the operator publishes, even before its agent read
    the slice that lists them: Ready waits for the whole mesh."""
    meta, spec, served = record.meta, record.checked.spec, record.served_status
    if spec is None:
        status = invalid_body_status(
            meta.name, meta.generation, "; ".join(record.spec_errors), served, rfc3339(now)
        )
    else:
        peers = policy_peers(meta.name, spec.node_selector, nodes, ipsec_nodes)
        facts = PolicyFacts(
            name=meta.name, generation=meta.generation, selector=spec.node_selector,
            deleting=meta.deleting, spec_errors=record.spec_errors,
            overdue_pairs=tuple(overdue_pairs), peers=tuple(p.node for p in peers),
            expiry=spec.certificate_expiry, checked_at=now,
        )
        status = compute_status(
            facts, secret.verdict if secret else None, nodes, ipsec_nodes, overlaps, served,
            rfc3339(now),
        )
    verdict = secret.verdict if secret else None
    ready = condition(status, READY)
    events = EventFacts(
        credentials_error=verdict.message if verdict and not verdict.valid else None,
        expiry_level=secret.expiry_level if secret else None,
        expiry_message=secret.expiry_message if secret else "",
        optional=spec is not None and spec.enforcement == "Optional",
        overlaps=tuple(o.describe() for o in overlaps),
        became_ready=became_ready(served, status),
        ready_message=ready.message if ready else "",
        node_certificates=node_certificate_alerts(status.nodes),
    )
    return PolicyEvaluation(status, status_patch(served, status), events)
