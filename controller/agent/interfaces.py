"""Where the agent's inputs come from and where its status goes.

The reconcile loop depends only on these protocols, so standalone mode (files) and cluster mode
(the Kubernetes API) share every line of decision code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.facts import NodeFacts
from controller.models.node import IPsecNodeStatus
from controller.models.peers import Peer
from controller.models.policy import IPsecPolicy


@dataclass(frozen=True)
class PolicyInput:
    """One policy that selects this node, with the Secret it references (decoded, or None)."""

    policy: IPsecPolicy
    generation: int
    secret_data: Mapping[str, str] | None
    # The policy is being deleted (deletionTimestamp set): tear down, then stop reporting it.
    deleting: bool = False
    # Problems found while reading the policy itself (an invalid body keeps the last good one).
    input_errors: tuple[str, ...] = ()
    # The policy's peers (IPsecPeerSlices in cluster mode; the file in standalone mode). Peers
    # are facts about other nodes, not part of the policy: they follow the inputs even while
    # the node keeps enforcing an older generation.
    peers: tuple[Peer, ...] = ()


@dataclass(frozen=True)
class AgentInputs:
    """Everything one reconcile pass reads."""

    node: NodeFacts
    node_labels: Mapping[str, str] = field(default_factory=dict)
    policies: tuple[PolicyInput, ...] = ()
    # Inputs that could not be read at all (unreadable file, API outage): keep the last state.
    errors: tuple[str, ...] = ()


class InputSource(Protocol):
    async def snapshot(self) -> AgentInputs:
        """The current inputs (policies already filtered by nodeSelector)."""
        ...

    async def wait_changed(self, timeout: float) -> bool:
        """Wait until an input may have changed (True) or the timeout passed (False)."""
        ...


class Reporter(Protocol):
    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus
                     ) -> float | None:
        """Publish this node's status; implementations skip writes when nothing changed.
        None: published (or nothing to publish). Seconds: not published yet (the API refused
        or did not answer, or a write now would come too soon after the last): the loop
        offers it again after that long, instead of at the next resync."""
        ...
