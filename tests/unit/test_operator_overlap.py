"""Two policies claiming the same traffic on a node they both select are reported, both ways."""

from __future__ import annotations

import pytest

from controller.models.common import LabelSelector
from controller.operator.overlap import PolicyScope, find_overlaps, overlaps_of
from controller.operator.records import PolicyRecord, parse_policy

NODES = {"node-1": {"pool": "a"}, "node-2": {"pool": "b"}}


def scope(name: str, subnets: list[str], **labels: str) -> PolicyScope:
    return PolicyScope(name, LabelSelector(match_labels=labels), tuple(subnets))


@pytest.mark.parametrize(
    ("first", "second", "conflict"),
    [
        (scope("a", ["10.0.0.0/16"]), scope("b", ["10.0.1.0/24"]), True),
        (scope("a", ["10.0.0.0/24"]), scope("b", ["10.0.1.0/24"]), False),
        (scope("a", ["10.0.0.0/16"], pool="a"), scope("b", ["10.0.0.0/16"], pool="b"), False),
        (scope("a", ["10.0.0.0/16"], pool="a"), scope("b", ["10.0.0.0/16"]), True),
        (scope("a", ["fd00::/64"]), scope("b", ["10.0.0.0/8", "fd00::1/128"]), True),
        (scope("a", ["fd00::/64"]), scope("b", ["10.0.0.0/8"]), False),
    ],
    ids=["nested", "disjoint", "disjoint-node-pools", "shared-node", "ipv6", "families-differ"],
)
def test_overlap_needs_shared_node_and_shared_addresses(
    first: PolicyScope, second: PolicyScope, conflict: bool
) -> None:
    reports = find_overlaps([first, second], NODES)
    assert bool(reports["a"]) == conflict
    assert bool(reports["b"]) == conflict


def test_both_policies_name_each_other_and_the_shared_nodes() -> None:
    reports = find_overlaps(
        [scope("b", ["10.0.1.0/24"]), scope("a", ["10.0.0.0/16"], pool="a")], NODES
    )
    (on_a,) = reports["a"]
    (on_b,) = reports["b"]
    assert (on_a.other, on_a.ours, on_a.theirs, on_a.nodes) == (
        "b",
        "10.0.0.0/16",
        "10.0.1.0/24",
        ("node-1",),
    )
    assert (on_b.other, on_b.ours, on_b.theirs) == ("a", "10.0.1.0/24", "10.0.0.0/16")
    assert "IPsecPolicy b" in on_a.describe()


def test_a_single_policy_never_overlaps_itself() -> None:
    assert find_overlaps([scope("a", ["10.0.0.0/16", "10.0.0.0/24"])], NODES) == {"a": []}


def policy(name: str, subnets: list[str], **meta: str) -> tuple[str, PolicyRecord]:
    return name, parse_policy({
        "apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy",
        "metadata": {"name": name, **meta},
        "spec": {"ipsecSubnets": subnets,
                 "credentials": {"secretRef": {"name": "c", "namespace": "n"}}},
    })


def test_policies_being_deleted_or_unparsable_claim_nothing() -> None:
    records = dict([
        policy("a", ["10.0.0.0/16"]),
        policy("b", ["10.0.1.0/24"]),
        policy("going", ["10.0.0.0/8"], deletionTimestamp="2026-01-01T00:00:00Z"),
        policy("broken", []),
    ])
    assert [r.other for r in overlaps_of("a", records, NODES)] == ["b"]
    assert overlaps_of("going", records, NODES) == []
