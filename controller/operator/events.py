"""Which Kubernetes Events to post for a policy, and what they say (PURE).

Events are for people watching ``kubectl describe`` / ``kubectl get events``: each problem is
announced when it appears or changes, not on every reconcile (the operator re-evaluates a
policy whenever any node reports). The one deliberate repetition is ``OptionalEnforcement``:
like the PCF add-on's ``optional_warn_interval``, a cluster left in Optional mode is reminded
periodically that it still accepts cleartext.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controller.models.common import API_VERSION
from controller.operator.records import PolicyMeta

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class EventSpec:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Posted:
    """What was last posted under one key, and when (monotonic seconds)."""

    message: str
    at: float


@dataclass(frozen=True)
class EventFacts:
    """What the operator found for one policy in this evaluation."""

    credentials_error: str | None = None  # message naming the problem, None when valid/unknown
    expiry_level: str | None = None  # info | warning | error | critical; None: not near
    expiry_message: str = ""
    optional: bool = False
    overlaps: tuple[str, ...] = ()
    became_ready: bool = False
    ready_message: str = ""
    # (node, level, message) of node certificates at warning level or worse
    node_certificates: tuple[tuple[str, str, str], ...] = ()


def decide_events(
    facts: EventFacts,
    memory: Mapping[str, Posted],
    now: float,
    optional_interval: float,
) -> tuple[list[EventSpec], dict[str, Posted]]:
    """The events to post now and the memory to keep for the next evaluation."""
    out: list[EventSpec] = []
    kept: dict[str, Posted] = {}

    def once(key: str, spec: EventSpec | None, identity: str) -> None:
        """Post when ``identity`` differs from what was last posted under ``key``."""
        if spec is None:
            return
        last = memory.get(key)
        if last is not None and last.message == identity:
            kept[key] = last
            return
        out.append(spec)
        kept[key] = Posted(identity, now)

    if facts.credentials_error is not None:
        once(
            "credentials",
            EventSpec("Warning", "CredentialsInvalid", facts.credentials_error),
            facts.credentials_error,
        )
    if facts.expiry_level is not None:
        once(
            "expiry",
            EventSpec(
                "Warning", "CertificateExpiring",
                f"[{facts.expiry_level}] {facts.expiry_message}".strip(),
            ),
            facts.expiry_level,
        )
    for node, level, message in facts.node_certificates:
        reason = "NodeCertificateExpired" if level == "expired" else "NodeCertificateExpiring"
        once(f"node-expiry:{node}", EventSpec("Warning", reason, f"[{level}] {message}"), level)
    if facts.overlaps:
        text = "; ".join(facts.overlaps)
        once("overlap", EventSpec("Warning", "SubnetOverlap", text), text)
    if facts.optional:
        last = memory.get("optional")
        if last is None or now - last.at >= optional_interval:
            out.append(EventSpec(
                "Warning", "OptionalEnforcement",
                "enforcement is Optional: traffic to peers without IPsec flows in cleartext; "
                "set enforcement: Required once every node is enforcing",
            ))
            kept["optional"] = Posted("", now)
        else:
            kept["optional"] = last
    if facts.became_ready:
        out.append(EventSpec("Normal", "Ready", facts.ready_message or "policy is Ready"))
    return out, kept


def policy_reference(meta: PolicyMeta) -> dict[str, str]:
    """The ``involvedObject`` of an Event about a policy."""
    return {"apiVersion": API_VERSION, "kind": "IPsecPolicy", "name": meta.name,
            "uid": meta.uid, "resourceVersion": meta.resource_version}


def object_reference(obj: Mapping[str, Any]) -> dict[str, str]:
    """The ``involvedObject`` of an Event about any cluster-scoped object (a CSR)."""
    meta = obj.get("metadata") or {}
    return {"apiVersion": str(obj.get("apiVersion", "")), "kind": str(obj.get("kind", "")),
            "name": str(meta.get("name", "")), "uid": str(meta.get("uid", "")),
            "resourceVersion": str(meta.get("resourceVersion", ""))}


def event_body(
    involved: Mapping[str, str], spec: EventSpec, namespace: str, instance: str, stamp: str
) -> dict[str, Any]:
    """A core/v1 Event (cluster-scoped objects' Events live in ``namespace``, as kopf's do)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": dict(involved),
        "type": spec.type,
        "reason": spec.reason,
        "message": spec.message[:1024],
        "source": {"component": "strongmesh-operator"},
        "reportingComponent": "strongmesh.io/operator",
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
