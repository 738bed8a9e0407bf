"""The xfrm policies a node must have, derived from the IPsecPolicies that select it. Pure.

Per policy P (reqid R, node address A), for every ipsecSubnet S of A's family:
  protect  out  src A/32 dst S   tmpl esp transport reqid R level L
  protect  in   src S dst A/32   (same template)
with L = required (Required: no SA, no traffic; the kernel drops and sends an ACQUIRE) or
use (Optional: cleartext while no SA exists, ESP as soon as charon made one after the ACQUIRE).
For every known peer Q of P (its own charon connection, reqid R' shared by P's peers):
  protect  out  src A/32 dst Q/32   tmpl esp transport reqid R' level L
  protect  in   src Q/32 dst A/32
which outrank the subnet-wide pair (more specific, see below), so the peer's traffic uses the
per-peer SA and its ACQUIREs point at R', which no trap answers: no peer's first packet makes
this node initiate (the lower address of the pair does that, proactively).
In Tunnel mode, for every pod CIDR P of the node and C of a peer Q (reqid R''), the pods'
traffic is forwarded through tunnel-mode SAs between the node addresses:
  protect  out  src P dst C        tmpl esp tunnel src A dst Q reqid R'' level L
  protect  fwd  src C dst P        tmpl esp tunnel src Q dst A (decrypted, forwarded to the pod)
(pods are routed through the node, never its local addresses: no ``in`` policy). The "pod
space" (ipsecSubnets that hold pod CIDRs and no node, ``controller.scope.pod_space``) gets
no host-to-host pair: no IKE peer lives there. In Required the node's pods never reach it in
the clear, a peer not known yet included: P<->pod space is blocked (out and fwd) below every
tunnel, and P<->P' (the node's own pods) bypassed: that traffic never leaves the node.
For every noIpsecSubnet N: bypass (action allow, no template) out A->N and in N->A (Tunnel
mode: out P->N and fwd N->P as well); plus A<->A
(and the node's other local addresses) so that the node's own traffic never needs an SA, and for
IPv6 neighbour discovery, which must work before any SA can exist.

Bypass policies live in the band [BYPASS_BASE, BYPASS_BASE+999], protect policies in
[PROTECT_BASE, PROTECT_BASE+999]; lower value = higher precedence, so every bypass beats every
protect policy, and within a band the more specific remote network wins.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from controller.models.policy import IPsecPolicySpec
from controller.ownership import BYPASS_BASE, PROTECT_BASE
from controller.xfrm.model import (
    IPPROTO_ICMPV6,
    Action,
    Level,
    PolicyKey,
    PortMatch,
    XfrmPolicy,
    XfrmTemplate,
)

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# ICMPv6 neighbour solicitation / advertisement (in a selector, the ICMP type is the "sport").
ND_TYPES = (135, 136)


@dataclass(frozen=True)
class ProtectEntry:
    """One policy selecting the node: its spec, the catch-all reqid and its known peers."""

    spec: IPsecPolicySpec
    reqid: int
    peer_reqid: int = 0
    peers: tuple[str, ...] = ()  # peer addresses with a connection of their own
    # Tunnel mode: the tunnels' reqid, the node's pod CIDRs, per peer address its pod CIDRs
    # (those in scope, as the peer's charon connection carries them), and the pod space
    tunnel_reqid: int = 0
    local_pods: tuple[str, ...] = ()
    peer_pods: tuple[tuple[str, tuple[str, ...]], ...] = ()
    pod_space: tuple[str, ...] = ()


def priority_in_band(base: int, remote: Network) -> int:
    """base + (max prefix length - prefix length): a /32 (or /128) gets the base itself."""
    return base + remote.max_prefixlen - remote.prefixlen


def _pair(
    local: Network, remote: Network, base: int, templates: tuple[XfrmTemplate, ...] = ()
) -> tuple[XfrmPolicy, XfrmPolicy]:
    priority = priority_in_band(base, remote)
    return (
        XfrmPolicy(str(local), str(remote), "out", priority, templates=templates),
        XfrmPolicy(str(remote), str(local), "in", priority, templates=templates),
    )


@functools.lru_cache(maxsize=16384)
def _peer_pair(
    host: str, peer: str, subnets: tuple[str, ...], templates: tuple[XfrmTemplate, ...]
) -> tuple[XfrmPolicy, ...]:
    """The protect pair for one peer address inside ``subnets`` (none for the node itself,
    another family or an address outside them). Cached: an agent with a thousand peers
    derives the same pairs on every pass."""
    try:
        network = ipaddress.ip_network(peer)
    except ValueError:
        return ()
    local = ipaddress.ip_network(host)
    if network == local or network.version != local.version:
        return ()
    if not any(network.network_address in ipaddress.ip_network(s) for s in subnets):
        return ()
    return _pair(local, network, PROTECT_BASE, templates)


def _networks(cidrs: Sequence[str], version: int) -> list[Network]:
    networks = (ipaddress.ip_network(c, strict=False) for c in cidrs)
    return [n for n in networks if n.version == version]


def _neighbour_discovery() -> list[XfrmPolicy]:
    anywhere = ipaddress.ip_network("::/0")
    priority = priority_in_band(BYPASS_BASE, anywhere)
    return [
        XfrmPolicy(
            str(anywhere),
            str(anywhere),
            direction,
            priority,
            proto=IPPROTO_ICMPV6,
            sport=PortMatch(icmp_type),
        )
        for icmp_type in ND_TYPES
        for direction in ("out", "in")
    ]


def _rank(policy: XfrmPolicy, order: int) -> tuple[int, int, int]:
    """Who wins when two policies would claim the same kernel key (lower wins).

    Bypass beats protect (noIpsecSubnets always take precedence); among protect policies
    Required beats Optional (fail closed); then the first policy in the agent's (name) order.
    """
    if policy.is_bypass:
        return (0, 0, order)
    required = all(t.level == "required" for t in policy.templates)
    return (1, 0 if required else 1, order)


def desired_policies(
    entries: Sequence[ProtectEntry],
    node_address: str,
    *,
    local_addresses: Collection[str] = (),
) -> frozenset[XfrmPolicy]:
    """Every xfrm policy the node needs for the policies selecting it.

    ``entries``: one per policy selecting the node, in the agent's name order (it decides who
    wins a clash, see :func:`_rank`). ``local_addresses``: the node's other addresses, bypassed
    like the node address itself (traffic between them stays local).
    """
    address = ipaddress.ip_address(node_address)
    host = ipaddress.ip_network(address)
    chosen: dict[PolicyKey, tuple[tuple[int, int, int], XfrmPolicy]] = {}

    def offer(policy: XfrmPolicy, order: int) -> None:
        rank = _rank(policy, order)
        current = chosen.get(policy.key)
        if current is None or rank < current[0]:
            chosen[policy.key] = (rank, policy)

    if entries:
        for local in {address, *map(ipaddress.ip_address, local_addresses)}:
            if local.version == address.version:
                for policy in _pair(host, ipaddress.ip_network(local), BYPASS_BASE):
                    offer(policy, -1)
        if address.version == 6:
            for policy in _neighbour_discovery():
                offer(policy, -1)

    for order, entry in enumerate(entries):
        spec = entry.spec
        level: Level = "required" if spec.enforcement == "Required" else "use"
        template = (XfrmTemplate(reqid=entry.reqid, level=level),)
        # pods live in the pod space, no IKE peer does: no host-to-host protection there
        subnets = [s for s in _networks(spec.ipsec_subnets, address.version)
                   if str(s) not in entry.pod_space]
        for subnet in subnets:
            for policy in _pair(host, subnet, PROTECT_BASE, template):
                offer(policy, order)
        if entry.peer_reqid:
            peer_template = (XfrmTemplate(reqid=entry.peer_reqid, level=level),)
            inside = tuple(str(s) for s in subnets)
            host_text = str(host)
            for peer in entry.peers:
                for policy in _peer_pair(host_text, peer, inside, peer_template):
                    offer(policy, order)
        local_pods = _networks(entry.local_pods, address.version)
        if spec.mode == "Tunnel" and entry.tunnel_reqid:
            for policy in _pod_policies(entry, node_address, local_pods, level):
                offer(policy, order)
        for subnet in _networks(spec.no_ipsec_subnets, address.version):
            for policy in _pair(host, subnet, BYPASS_BASE):
                offer(policy, order)
            for pods in local_pods:  # routed pods: out of them, and forwarded into them
                for policy in _forwarded_pair(pods, subnet, BYPASS_BASE):
                    offer(policy, order)

    return frozenset(policy for _, policy in chosen.values())


def _forwarded_pair(pods: Network, remote: Network, base: int,
                    templates: tuple[XfrmTemplate, ...] = (), action: Action = "allow",
                    ) -> list[XfrmPolicy]:
    """Routed pods' traffic: leaving them (forwarded packets meet ``out`` policies) and
    forwarded into them (``fwd``; pods are no local address of the node, so no ``in``)."""
    priority = priority_in_band(base, remote)
    return [
        XfrmPolicy(str(pods), str(remote), "out", priority, templates=templates, action=action),
        XfrmPolicy(str(remote), str(pods), "fwd", priority, templates=templates, action=action),
    ]


def _pod_policies(
    entry: ProtectEntry, node: str, local_pods: Sequence[Network], level: Level
) -> list[XfrmPolicy]:
    """Tunnel mode: the pods' tunnels per peer; in Required, the rest of the pod space
    blocked out of and into the node's pods (a peer not known yet gets no cleartext), and
    the node's own pods bypassed between themselves (that traffic never leaves the node)."""
    out: list[XfrmPolicy] = []
    for peer, cidrs in entry.peer_pods:
        outbound = (XfrmTemplate(entry.tunnel_reqid, level, mode="tunnel", src=node, dst=peer),)
        inbound = (XfrmTemplate(entry.tunnel_reqid, level, mode="tunnel", src=peer, dst=node),)
        for local in local_pods:
            for remote in _networks(cidrs, local.version):
                priority = priority_in_band(PROTECT_BASE, remote)
                out += [
                    XfrmPolicy(str(local), str(remote), "out", priority, templates=outbound),
                    XfrmPolicy(str(remote), str(local), "fwd", priority, templates=inbound),
                ]
    if level == "required":
        for local in local_pods:
            for space in _networks(entry.pod_space, local.version):
                out += _forwarded_pair(local, space, PROTECT_BASE, action="block")
            for other in local_pods:
                out += _forwarded_pair(local, other, BYPASS_BASE)
    return out


def acq_expires_for(specs: Sequence[IPsecPolicySpec]) -> int | None:
    """The node's ``net.core.xfrm_acq_expires``: the smallest any selecting policy asks for.

    One value per network namespace; the smallest lets a failed negotiation be retried
    soonest, which is what the setting is for. None: no policy, leave the kernel alone.
    """
    return min((s.xfrm_acq_expires_seconds for s in specs), default=None)
