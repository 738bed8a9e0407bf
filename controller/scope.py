"""What a policy covers on a node: the address it protects, and in Tunnel mode the pods. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from controller.facts import NodeFacts
from controller.models.policy import IPsecPolicySpec


def node_address_for(spec: IPsecPolicySpec, node: NodeFacts) -> str | None:
    """The node's first address inside the policy's ipsecSubnets (None: node out of scope)."""
    return address_inside(spec, node.addresses)


def address_inside(spec: IPsecPolicySpec, addresses: Iterable[str]) -> str | None:
    """The first of ``addresses`` inside the policy's ipsecSubnets: the one a node with these
    addresses protects (the operator asks it of an IPsecNode's spec, the agent of its node)."""
    networks = _nets(spec.ipsec_subnets)
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue  # an IPsecNode's spec is the agent's word, not validated here
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
