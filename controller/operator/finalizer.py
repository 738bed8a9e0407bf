"""The ``strongmesh.io/teardown`` finalizer: when to add it, when to remove it, and the JSON
patches that do (PURE).

The finalizer holds a deleted policy until no existing node still enforces it (an agent drops
the policy from its IPsecNode once it has torn it down), or until ``timeout`` has passed since
the deletion, with a Warning: a node that never answers must not block a deletion forever.
Both patches start with a ``test`` operation, so that a write based on a stale view fails
(409/422) instead of undoing someone else's change; the policy is then looked at again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.models.node import IPsecNode
from controller.operator.events import EventSpec
from controller.operator.records import PolicyMeta
from controller.operator.status import policies_listed

FINALIZER = "strongmesh.io/teardown"

JsonPatch = list[dict[str, Any]]


def finalizer_to_add(meta: PolicyMeta) -> JsonPatch | None:
    """The patch that adds the finalizer; None when the policy has it or is being deleted."""
    if meta.deleting or FINALIZER in meta.finalizers:
        return None
    guard = {"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version}
    if meta.finalizers:
        return [guard, {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]
    return [guard, {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]


def nodes_still_enforcing(
    policy: str, ipsec_nodes: Mapping[str, IPsecNode], nodes: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Existing nodes whose IPsecNode still lists the policy (they have not torn down)."""
    return sorted(name for name, ipsec_node in ipsec_nodes.items()
                  if name in nodes and policy in policies_listed(ipsec_node))


@dataclass(frozen=True)
class Teardown:
    """What to do about a policy's finalizer now."""

    removal: JsonPatch | None = None  # None: keep the finalizer (for now)
    warning: EventSpec | None = None  # removed although some nodes have not confirmed


KEEP = Teardown()


def decide_teardown(
    meta: PolicyMeta, still_enforcing: Sequence[str], now: datetime, timeout: float
) -> Teardown:
    if meta.deletion_timestamp is None or FINALIZER not in meta.finalizers:
        return KEEP
    warning = None
    if still_enforcing:
        if (now - meta.deletion_timestamp).total_seconds() < timeout:
            return KEEP
        warning = EventSpec(
            "Warning", "TeardownTimeout",
            f"nodes {', '.join(still_enforcing)} did not confirm teardown within "
            f"{timeout:.0f}s; removing the finalizer anyway",
        )
    index = meta.finalizers.index(FINALIZER)
    removal: JsonPatch = [
        {"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{index}"},
    ]
    return Teardown(removal, warning)
