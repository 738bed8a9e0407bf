"""Value types and naming rules shared by the strongSwan side, the kernel side and the agent.

strongmesh owns every xfrm policy it needs (charon's children use ``policies = no``), so that
enforcement survives charon restarts. What is ours is recognised by number, never by guess:
xfrm policy priorities in two bands, and reqids in one band.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from controller.models.policy import IPsecPolicySpec

# xfrm policy priorities: lower value = higher precedence. Bypass always beats protect.
BYPASS_BASE = 7000
PROTECT_BASE = 8000
BAND_SIZE = 1000

# reqids of our CHILD_SAs: "SM" in the upper 16 bits.
REQID_BASE = 0x534D0000
REQID_MASK = 0xFFFF


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


def is_owned_priority(priority: int) -> bool:
    return BYPASS_BASE <= priority < PROTECT_BASE + BAND_SIZE


def is_owned_reqid(reqid: int) -> bool:
    return reqid & ~REQID_MASK == REQID_BASE


def reqid_for(policy_name: str, taken: Collection[int]) -> int:
    """A stable reqid for a policy: crc32 of its name, probing past reqids already taken."""
    slot = zlib.crc32(policy_name.encode()) & REQID_MASK
    for step in range(REQID_MASK + 1):
        candidate = REQID_BASE | ((slot + step) & REQID_MASK)
        if candidate not in taken:
            return candidate
    raise RuntimeError("no free reqid in the strongmesh band")


def node_address_for(spec: IPsecPolicySpec, node: NodeFacts) -> str | None:
    """The node's first address inside the policy's ipsecSubnets (None: node out of scope)."""
    networks = [ipaddress.ip_network(s, strict=False) for s in spec.ipsec_subnets]
    for address in node.addresses:
        ip = ipaddress.ip_address(address)
        if any(ip.version == net.version and ip in net for net in networks):
            return address
    return None


def _nets(cidrs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue  # the models validate CIDRs; a bad one here is nobody's pod network
    return out


def pod_space(spec: IPsecPolicySpec, pod_cidrs: Iterable[str],
              node_addresses: Iterable[str]) -> tuple[str, ...]:
    """Tunnel mode: the policy's ipsecSubnets that hold pod networks (any of ``pod_cidrs``:
    the node's and its peers') and no node (``node_addresses``: the node's and its peers').
    Pods live there, no IKE peer does: the node's address is not protected host-to-host
    towards them, and in Required the node's pods reach them only through a peer's tunnel.
    (A subnet holding both nodes and pods stays a node subnet: list pod networks apart.)"""
    if spec.mode != "Tunnel":
        return ()
    pods = _nets(pod_cidrs)
    nodes = [ipaddress.ip_address(a) for a in node_addresses]
    return tuple(
        str(subnet) for subnet in _nets(spec.ipsec_subnets)
        if any(pod.version == subnet.version and pod.subnet_of(subnet)  # type: ignore[arg-type]
               for pod in pods)
        and not any(node.version == subnet.version and node in subnet for node in nodes))


def pods_in_scope(spec: IPsecPolicySpec, pod_cidrs: Iterable[str], version: int) -> tuple[str, ...]:
    """The pod CIDRs of IP ``version`` a Tunnel policy protects: inside an ipsecSubnet and
    not inside a noIpsecSubnet (normalised, sorted)."""
    inside, exempt = _nets(spec.ipsec_subnets), _nets(spec.no_ipsec_subnets)

    def within(net: ipaddress.IPv4Network | ipaddress.IPv6Network,
               nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
        return any(n.version == net.version and net.subnet_of(n) for n in nets)  # type: ignore[arg-type]

    return tuple(sorted({str(net) for net in _nets(pod_cidrs)
                         if net.version == version and within(net, inside)
                         and not within(net, exempt)}))
