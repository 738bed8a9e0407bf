"""IPsecPolicy.status from what the agents report (PURE: no I/O, no clock).

The operator is the only writer of a policy's status; every agent writes its own IPsecNode.
This module turns those IPsecNodes (plus the Nodes the policy selects and the operator's own
checks) into the summary, the per-node rows and the conditions. ``lastTransitionTime`` of a
condition and ``lastChange`` of a row are carried over while nothing changed, like
``meta.SetStatusCondition``, so that an unchanged cluster produces an identical status and the
operator can skip the write altogether.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.models.common import Condition, ConditionStatus, LabelSelector
from controller.models.node import (
    ESTABLISHED_CHILD_STATES,
    EnforcedPolicy,
    IPsecNode,
    address_order,
)
from controller.models.policy import (
    ROW_PEERS_LIMIT,
    CertificateExpiry,
    IPsecPolicyStatus,
    PolicyNodeStatus,
    PolicySummary,
)
from controller.validation import expiry_level

READY = "Ready"
CREDENTIALS_VALID = "CredentialsValid"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_ORDER = (READY, CREDENTIALS_VALID, PROGRESSING, DEGRADED)

# The peer of a missing pair when a node's agent has not read all its published peers yet.
UNREAD_PEERS = "peers its agent has not read yet"


@dataclass(frozen=True)
class CredentialsVerdict:
    """The operator's judgement of a policy's Secret (see ``verdicts``)."""

    valid: bool
    reason: str  # Valid | SecretNotFound | Invalid | SecretUnreadable
    message: str


@dataclass(frozen=True)
class OverlapReport:
    """This policy's ipsecSubnets overlap another policy's on nodes both select."""

    other: str
    ours: str
    theirs: str
    nodes: tuple[str, ...]

    def describe(self) -> str:
        nodes = ", ".join(self.nodes[:5]) + (" ..." if len(self.nodes) > 5 else "")
        return (
            f"ipsecSubnets {self.ours} overlaps {self.theirs} of IPsecPolicy {self.other} "
            f"on node(s) {nodes}"
        )


@dataclass(frozen=True)
class PolicyFacts:
    """What status computation needs from the policy object itself."""

    name: str
    generation: int
    selector: LabelSelector
    deleting: bool = False
    # Problems in the policy body found by the shared validation library (errors only).
    spec_errors: tuple[str, ...] = ()
    # (node, peer) pairs without an installed CHILD_SA for longer than the grace period.
    overdue_pairs: tuple[tuple[str, str], ...] = ()
    # The policy's peers as the operator publishes them (node names): a node expects an SA with
    # each of the others even before its agent has read the slice that lists them.
    peers: tuple[str, ...] = ()
    # For the nodes' certificates: the alert thresholds, and the time of this evaluation.
    expiry: CertificateExpiry | None = None
    checked_at: datetime | None = None


def rfc3339(moment: datetime) -> str:
    """A timestamp as status and Events carry it (seconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def selected_nodes(selector: LabelSelector, nodes: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Names of the Nodes (name -> labels) that the policy selects, sorted."""
    return sorted(name for name, labels in nodes.items() if selector.matches(dict(labels)))


def _entry(node: IPsecNode | None, policy: str) -> EnforcedPolicy | None:
    if node is None or node.status is None:
        return None
    for entry in node.status.policies:
        if entry.name == policy:
            return entry
    return None


def node_row(
    policy: PolicyFacts, name: str, node: IPsecNode | None, previous: PolicyNodeStatus | None,
    now: str,
) -> PolicyNodeStatus:
    """One selected node's row. ``enforcing`` means: at the current generation, and applied."""
    entry = _entry(node, policy.name)
    sas = [] if node is None or node.status is None else [
        sa for sa in node.status.sas
        if sa.policy == policy.name and sa.state.upper() in ESTABLISHED_CHILD_STATES
    ]
    # the node lists a bounded number of SAs; its own count covers them all (an agent of an
    # earlier release lists every SA and counts none per policy)
    established_sas = len(sas) if entry is None or entry.established_sas is None else (
        entry.established_sas)
    peers = sorted({sa.peer for sa in sas}, key=address_order)[:ROW_PEERS_LIMIT]
    if node is None:
        message = "no IPsecNode yet: is the strongmesh agent running on this node?"
    elif entry is None:
        message = "the agent does not enforce this policy yet"
    elif entry.generation != policy.generation:
        message = f"enforces generation {entry.generation}, current is {policy.generation}"
        if entry.message:
            message += f": {entry.message}"
    else:
        message = entry.message
    row = PolicyNodeStatus(
        name=name,
        enforcing=bool(entry and entry.generation == policy.generation and entry.enforcing),
        generation=entry.generation if entry else None,
        established_sas=established_sas,
        peers=peers,
        expected_peers=max(entry.expected_peers if entry else 0,
                           len(set(policy.peers) - {name}) if name in policy.peers else 0),
        established_peers=entry.established_peers if entry else 0,
        max_inner_packet=entry.max_inner_packet if entry else None,
        **_certificate_fields(policy, entry),
        last_change=None,
        message=message,
    )
    if previous is not None and previous.model_copy(update={"last_change": None}) == row:
        return row.model_copy(update={"last_change": previous.last_change})
    return row.model_copy(update={"last_change": now})


def status_view(node: IPsecNode) -> IPsecNode:
    """What ``compute_status`` reads of an IPsecNode, and no more: the operator holds one per
    node, and a node lists up to SA_LIST_LIMIT SAs. A policy the node counts its SAs for keeps
    the established SAs of its first ``ROW_PEERS_LIMIT`` peers (the row's ``peers``); one it
    does not (an agent of an earlier release) keeps all it lists (they are its count)."""
    if node.status is None or not node.status.sas:
        return node
    counted = {e.name for e in node.status.policies if e.established_sas is not None}
    kept = [sa for sa in node.status.sas if sa.policy not in counted]
    for policy in sorted(counted):
        sas = [sa for sa in node.status.sas
               if sa.policy == policy and sa.state.upper() in ESTABLISHED_CHILD_STATES]
        first = set(sorted({sa.peer for sa in sas}, key=address_order)[:ROW_PEERS_LIMIT])
        kept.extend(sa for sa in sas if sa.peer in first)
    return node.model_copy(update={"status": node.status.model_copy(update={"sas": kept})})


def _certificate_fields(policy: PolicyFacts, entry: EnforcedPolicy | None) -> dict[str, Any]:
    """The node's certificate end and alert level (none before the node reports one)."""
    if entry is None or entry.certificate is None or policy.expiry is None:
        return {}
    not_after = datetime.fromisoformat(entry.certificate.not_after.replace("Z", "+00:00"))
    return {"certificate_not_after": entry.certificate.not_after,
            "certificate_expiry": expiry_level(not_after, policy.expiry, policy.checked_at)}


def node_certificate_alerts(rows: Sequence[PolicyNodeStatus]) -> tuple[tuple[str, str, str], ...]:
    """(node, level, message) for every node certificate at warning level or worse: what the
    operator announces in Events (once per node and level)."""
    return tuple(
        (row.name, row.certificate_expiry,
         f"node {row.name}: its certificate "
         + ("expired" if row.certificate_expiry == "expired" else "expires")
         + f" at {row.certificate_not_after}")
        for row in rows
        if row.certificate_expiry in ("warning", "error", "critical", "expired")
    )


def set_condition(
    previous: Sequence[Condition], type_: str, status: ConditionStatus, reason: str,
    message: str, generation: int, now: str,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status changes."""
    since = now
    for old in previous:
        if old.type == type_ and old.status == status:
            since = old.last_transition_time
    return Condition(
        type=type_, status=status, reason=reason, message=message,
        last_transition_time=since, observed_generation=generation,
    )


def missing_pairs(policy: str, ipsec_nodes: Mapping[str, IPsecNode],
                  selected: Sequence[str], peers: Mapping[str, str] | None = None,
                  ) -> list[tuple[str, str]]:
    """(node, peer) pairs of selected nodes without an installed CHILD_SA: those the node
    reports missing, and (``peers``: the published peers, name -> address) when its agent
    counts fewer expected peers than were published to it, ``(node, UNREAD_PEERS)``: it has
    not read a slice yet, and which peers it lacks its counts cannot say (the node's status
    does not list every SA: that would grow with N²)."""
    pairs: set[tuple[str, str]] = set()
    for name in selected:
        entry = _entry(ipsec_nodes.get(name), policy)
        if entry is None:
            continue
        pairs.update((name, peer) for peer in entry.missing_peers)
        if peers and name in peers and entry.expected_peers < len(peers) - 1:
            pairs.add((name, UNREAD_PEERS))
    return sorted(pairs)


@dataclass
class OverduePairs:
    """When each (node, peer) pair of a policy was first seen without an SA; a pair is
    overdue once it has been missing for longer than the grace period (a pair being set up
    is not a problem yet). Pure: the caller passes monotonic seconds."""

    since: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def update(self, policy: str, pairs: Sequence[tuple[str, str]], now: float, grace: float
               ) -> tuple[tuple[tuple[str, str], ...], float | None]:
        """The overdue pairs, and in how many seconds the next missing pair becomes overdue
        (None: none is waiting)."""
        current = {(policy, node, peer) for node, peer in pairs}
        self.since = {k: t for k, t in self.since.items() if k[0] != policy or k in current}
        for key in current:
            self.since.setdefault(key, now)
        overdue = tuple(sorted((key[1], key[2]) for key in current
                               if now - self.since[key] > grace))
        waiting = [self.since[k] + grace - now for k in current if now - self.since[k] <= grace]
        return overdue, (max(0.0, min(waiting)) if waiting else None)

    def forget(self, policy: str) -> None:
        self.since = {k: t for k, t in self.since.items() if k[0] != policy}


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def compute_status(
    policy: PolicyFacts,
    credentials: CredentialsVerdict | None,
    nodes: Mapping[str, Mapping[str, str]],
    ipsec_nodes: Mapping[str, IPsecNode],
    overlaps: Sequence[OverlapReport],
    previous: IPsecPolicyStatus | None,
    now: str,
) -> IPsecPolicyStatus:
    """The whole status of one policy.

    ``nodes`` maps every Node name to its labels; ``ipsec_nodes`` maps node names to their
    IPsecNode. ``credentials`` None means the Secret has not been looked at yet. ``now`` is an
    RFC 3339 timestamp used only for what changed.
    """
    old_rows = {row.name: row for row in previous.nodes} if previous else {}
    old_conditions = previous.conditions if previous else []
    selected = selected_nodes(policy.selector, nodes)
    rows = [
        node_row(policy, name, ipsec_nodes.get(name), old_rows.get(name), now)
        for name in selected
    ]
    ready_rows = [row for row in rows if row.enforcing]
    sizes = [row.max_inner_packet for row in rows if row.max_inner_packet is not None]
    summary = PolicySummary(
        selected_nodes=len(rows),
        ready_nodes=len(ready_rows),
        ready=f"{len(ready_rows)}/{len(rows)}",
        established_sas=sum(row.established_sas for row in rows),
        max_inner_packet=min(sizes, default=None),
    )

    def cond(type_: str, status: ConditionStatus, reason: str, message: str) -> Condition:
        return set_condition(
            old_conditions, type_, status, reason, message, policy.generation, now
        )

    # CredentialsValid
    if credentials is None:
        creds = cond(CREDENTIALS_VALID, "Unknown", "Pending", "the Secret was not checked yet")
    elif credentials.valid:
        creds = cond(CREDENTIALS_VALID, "True", credentials.reason, credentials.message)
    else:
        creds = cond(CREDENTIALS_VALID, "False", credentials.reason, credentials.message)

    # Progressing: some selected node is not at the current generation yet.
    behind = [
        row.name for row in rows
        if row.generation != policy.generation
    ]
    if behind:
        progressing = cond(
            PROGRESSING, "True", "RollingOut",
            f"{len(rows) - len(behind)}/{len(rows)} nodes at generation {policy.generation}; "
            f"waiting for {_names(behind)}",
        )
    else:
        progressing = cond(
            PROGRESSING, "False", "RolloutComplete",
            f"all selected nodes at generation {policy.generation}",
        )

    # Degraded: nodes report errors for this policy, the spec is invalid, or subnets overlap.
    failing = [
        row for row in rows
        if row.generation == policy.generation and not row.enforcing
    ]
    if policy.spec_errors:
        degraded = cond(DEGRADED, "True", "InvalidSpec", "; ".join(policy.spec_errors))
    elif policy.overdue_pairs:
        pairs = [f"{a} -> {b}" for a, b in policy.overdue_pairs]
        degraded = cond(
            DEGRADED, "True", "PeersMissing",
            f"no SA between {_names(pairs)} for longer than the grace period",
        )
    elif overlaps:
        degraded = cond(
            DEGRADED, "True", "SubnetOverlap", "; ".join(o.describe() for o in overlaps)
        )
    elif failing:
        degraded = cond(
            DEGRADED, "True", "NodeErrors",
            "; ".join(f"{row.name}: {row.message or 'not enforcing'}" for row in failing[:5]),
        )
    else:
        degraded = cond(DEGRADED, "False", "AsExpected", "no node reports errors")

    # Ready: credentials valid, every selected node enforces the current generation, and each
    # holds an SA with every peer it expects (the mesh is up before traffic needs it).
    not_ready = [row.name for row in rows if not row.enforcing]
    incomplete = [row for row in rows if row.established_peers < row.expected_peers]
    if policy.deleting:
        ready = cond(READY, "False", "Deleting", "waiting for the agents to tear down")
    elif policy.spec_errors:
        ready = cond(READY, "False", "InvalidSpec", "the policy has errors, see Degraded")
    elif credentials is None or not credentials.valid:
        ready = cond(
            READY, "False", "CredentialsInvalid" if credentials else "CredentialsPending",
            "the credentials are not valid, see CredentialsValid" if credentials
            else "waiting for the credentials check",
        )
    elif overlaps:
        ready = cond(READY, "False", "SubnetOverlap", "see Degraded")
    elif expired := [row.name for row in rows if row.certificate_expiry == "expired"]:
        ready = cond(
            READY, "False", "CertificateExpired",
            f"the certificate of {_names(expired)} has expired: its peers refuse it",
        )
    elif not rows:
        ready = cond(READY, "False", "NoNodesSelected", "the nodeSelector matches no Node")
    elif not_ready:
        ready = cond(
            READY, "False", "NodesNotReady",
            f"{summary.ready} nodes enforce generation {policy.generation}; "
            f"not yet: {_names(not_ready)}",
        )
    elif incomplete:
        missing = sum(row.expected_peers - row.established_peers for row in incomplete)
        ready = cond(
            READY, "False", "PeersConnecting",
            f"all {len(rows)} selected nodes enforce generation {policy.generation}; "
            f"{missing} node-to-peer SA(s) not up yet on {_names([r.name for r in incomplete])}",
        )
    else:
        ready = cond(
            READY, "True", "AllNodesEnforcing",
            f"all {len(rows)} selected nodes enforce generation {policy.generation}"
            + (f" with SAs to all their peers ({sum(r.expected_peers for r in rows)})"
               if any(r.expected_peers for r in rows) else ""),
        )

    return IPsecPolicyStatus(
        observed_generation=policy.generation,
        conditions=[ready, creds, progressing, degraded],
        summary=summary,
        nodes=rows,
    )


def invalid_body_status(
    name: str, generation: int, message: str, previous: IPsecPolicyStatus | None, now: str
) -> IPsecPolicyStatus:
    """Status of a policy whose body cannot even be parsed (the CRD schema let it through)."""
    old = previous.conditions if previous else []
    return IPsecPolicyStatus(
        observed_generation=generation,
        conditions=[
            set_condition(old, READY, "False", "InvalidSpec", "see Degraded", generation, now),
            set_condition(
                old, CREDENTIALS_VALID, "Unknown", "InvalidSpec",
                "not checked: the policy is invalid", generation, now,
            ),
            set_condition(old, PROGRESSING, "False", "InvalidSpec", "", generation, now),
            set_condition(old, DEGRADED, "True", "InvalidSpec", message, generation, now),
        ],
        summary=previous.summary if previous else PolicySummary(),
        nodes=previous.nodes if previous else [],
    )


def condition(status: IPsecPolicyStatus | None, type_: str) -> Condition | None:
    """The condition of that type, if any."""
    if status is None:
        return None
    return next((c for c in status.conditions if c.type == type_), None)


def policies_listed(node: IPsecNode) -> set[str]:
    """Policies an IPsecNode still reports (the deletion flow waits for these to go)."""
    if node.status is None:
        return set()
    return {entry.name for entry in node.status.policies}


def status_patch(
    served: IPsecPolicyStatus | None, computed: IPsecPolicyStatus
) -> dict[str, Any] | None:
    """The merge patch of the status subresource; None when the API serves that status
    already (an unchanged cluster costs no write)."""
    return None if computed == served else {"status": computed.to_api()}


def became_ready(previous: IPsecPolicyStatus | None, current: IPsecPolicyStatus) -> bool:
    """Ready is True now and was not in the status the API served."""
    was, now = condition(previous, READY), condition(current, READY)
    return bool(now and now.status == "True" and (was is None or was.status != "True"))


def status_news(status: IPsecPolicyStatus | None) -> tuple[Any, ...]:
    """What someone waits for in a status, never held back by the pacing of progress: the
    observed generation and each condition's status and reason (Ready turning True, a rollout
    finishing, a node failing). Rows, counts and messages are progress."""
    if status is None:
        return ()
    return (status.observed_generation,
            tuple((c.type, c.status, c.reason) for c in status.conditions))
