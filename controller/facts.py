"""What the agent knows of its node, and the credentials it authenticates with. Values only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeFacts:
    """What the agent knows about its own node."""

    name: str
    addresses: tuple[str, ...]
    pod_cidrs: tuple[str, ...] = ()  # Tunnel mode: the pod networks the node routes
    mtus: tuple[tuple[str, int], ...] = ()  # (address, MTU of its interface)


@dataclass(frozen=True)
class NodeCredentials:
    """The node's credentials from the policy's Secret, as PEM text."""

    cert_pem: str
    chain_pems: tuple[str, ...]
    key_pem: str
    ca_pems: tuple[str, ...]
    subject: str

    def __repr__(self) -> str:  # never print key material, whoever logs the object
        return f"NodeCredentials(subject={self.subject!r}, cas={len(self.ca_pems)})"
