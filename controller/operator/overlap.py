"""Policies that claim the same traffic on the same node (PURE).

Each policy is one charon connection and its own set of xfrm policies; two policies whose
ipsecSubnets overlap on a node they both select would fight over the same packets (which
template, which CA bundle?). strongmesh never merges them silently: the operator reports the
conflict on both policies (Degraded=True, reason SubnetOverlap, plus an Event).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.models.common import LabelSelector
from controller.operator.records import PolicyRecord
from controller.operator.status import OverlapReport, selected_nodes


@dataclass(frozen=True)
class PolicyScope:
    """The parts of a policy that decide where and on what traffic it acts."""

    name: str
    selector: LabelSelector
    ipsec_subnets: tuple[str, ...]


def _first_overlap(ours: Sequence[str], theirs: Sequence[str]) -> tuple[str, str] | None:
    for a in ours:
        net_a = ipaddress.ip_network(a, strict=False)
        for b in theirs:
            net_b = ipaddress.ip_network(b, strict=False)
            if net_a.version == net_b.version and net_a.overlaps(net_b):
                return a, b
    return None


def find_overlaps(
    scopes: Sequence[PolicyScope], nodes: Mapping[str, Mapping[str, str]]
) -> dict[str, list[OverlapReport]]:
    """For every policy name, the other policies it conflicts with (both sides are reported).

    Only overlaps on nodes that both policies select count: two policies for disjoint node
    pools may well use the same CIDRs.
    """
    selected = {scope.name: set(selected_nodes(scope.selector, nodes)) for scope in scopes}
    reports: dict[str, list[OverlapReport]] = {scope.name: [] for scope in scopes}
    ordered = sorted(scopes, key=lambda s: s.name)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            shared = sorted(selected[first.name] & selected[second.name])
            if not shared:
                continue
            pair = _first_overlap(first.ipsec_subnets, second.ipsec_subnets)
            if pair is None:
                continue
            reports[first.name].append(
                OverlapReport(other=second.name, ours=pair[0], theirs=pair[1], nodes=tuple(shared))
            )
            reports[second.name].append(
                OverlapReport(other=first.name, ours=pair[1], theirs=pair[0], nodes=tuple(shared))
            )
    return reports


def overlaps_of(
    name: str, policies: Mapping[str, PolicyRecord], nodes: Mapping[str, Mapping[str, str]]
) -> list[OverlapReport]:
    """The conflicts of one policy with the others. A policy being deleted claims nothing any
    more; one whose body does not parse claims nothing yet."""
    scopes = [
        PolicyScope(other, spec.node_selector, tuple(spec.ipsec_subnets))
        for other, record in policies.items()
        if (spec := record.checked.spec) is not None and not record.meta.deleting
    ]
    return find_overlaps(scopes, nodes).get(name, [])
