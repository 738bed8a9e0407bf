"""IPsecPolicy.status from IPsecNodes: summary, rows, conditions, and stability over time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from controller.models.common import Condition, ConditionStatus, LabelSelector
from controller.models.node import IPsecNode, SecurityAssociation
from controller.models.policy import IPsecPolicyStatus
from controller.operator.status import (
    CredentialsVerdict,
    OverlapReport,
    PolicyFacts,
    became_ready,
    compute_status,
    condition,
    invalid_body_status,
    missing_pairs,
    rfc3339,
    status_news,
    status_patch,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
VALID = CredentialsVerdict(True, "Valid", "Secret s/c: ok")
INVALID = CredentialsVerdict(False, "Invalid", "Secret s/c: ca.crt: not a CA")
NODES = {"node-1": {"role": "worker"}, "node-2": {"role": "worker"}, "node-3": {"role": "db"}}


def policy(generation: int = 2, deleting: bool = False, **selector: str) -> PolicyFacts:
    return PolicyFacts(
        name="mesh",
        generation=generation,
        selector=LabelSelector(match_labels=dict(selector)),
        deleting=deleting,
    )


def ipsec_node(
    name: str,
    generation: int | None = 2,
    enforcing: bool = True,
    message: str = "",
    sas: list[dict[str, Any]] | None = None,
) -> IPsecNode:
    policies = (
        []
        if generation is None
        else [
            {"name": "mesh", "generation": generation, "enforcing": enforcing, "message": message}
        ]
    )
    return IPsecNode.model_validate(
        {
            "metadata": {"name": name},
            "status": {"policies": policies, "sas": sas or []},
        }
    )


def sa(peer: str, state: str = "INSTALLED", policy_name: str = "mesh") -> dict[str, Any]:
    return {"policy": policy_name, "peer": peer, "state": state}


def conditions(status: IPsecPolicyStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_all_selected_nodes_enforcing_is_ready_with_summary_and_rows() -> None:
    nodes = {
        "node-1": ipsec_node(
            "node-1", sas=[sa("10.0.0.2"), sa("10.0.0.2"), sa("10.0.0.9", "CREATED")]
        ),
        "node-2": ipsec_node("node-2", sas=[sa("10.0.0.1"), sa("10.0.0.5", policy_name="x")]),
    }
    status = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    assert conditions(status) == {
        "Ready": ("True", "AllNodesEnforcing"),
        "CredentialsValid": ("True", "Valid"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.summary.model_dump() == {
        "selected_nodes": 2,
        "ready_nodes": 2,
        "ready": "2/2",
        "established_sas": 3,
        "max_inner_packet": None,  # no node reported its interface
    }
    # these agents count nothing per policy (an earlier release): their listed SAs count
    assert [(r.name, r.enforcing, r.established_sas, r.peers) for r in status.nodes] == [
        ("node-1", True, 2, ["10.0.0.2"]),
        ("node-2", True, 1, ["10.0.0.1"]),
    ]
    assert status.observed_generation == 2
    assert all(c.observed_generation == 2 for c in status.conditions)


def test_a_nodes_own_count_of_its_sas_stands_for_the_sas_it_does_not_list() -> None:
    node = ipsec_node("node-1", sas=[sa("10.0.0.2")])
    assert node.status is not None
    node.status.policies[0].established_sas = 998  # 997 of them not listed
    status = compute_status(policy(role="worker"), VALID, NODES, {"node-1": node}, [], None, T0)
    assert [(r.name, r.established_sas) for r in status.nodes] == [("node-1", 998), ("node-2", 0)]


def test_a_row_lists_its_first_peers_by_address_and_counts_them_all() -> None:
    from controller.models.policy import ROW_PEERS_LIMIT

    held = [sa(f"10.0.0.{i}") for i in range(40, 0, -1)]
    node = meshed("node-1", 40, [])
    assert node.status is not None
    node.status.sas = [SecurityAssociation.model_validate(s) for s in held]
    status = compute_status(policy(role="worker"), VALID, NODES, {"node-1": node}, [], None, T0)
    row = status.nodes[0]
    assert row.peers == [f"10.0.0.{i}" for i in range(1, ROW_PEERS_LIMIT + 1)]  # 9 before 10
    assert (row.established_peers, row.established_sas) == (40, 40)


@pytest.mark.parametrize(
    ("ipsec_nodes", "credentials", "expected"),
    [
        pytest.param(
            {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2", generation=1)},
            VALID,
            {
                "Ready": ("False", "NodesNotReady"),
                "Progressing": ("True", "RollingOut"),
                "Degraded": ("False", "AsExpected"),
            },
            id="one node behind is progressing",
        ),
        pytest.param(
            {"node-1": ipsec_node("node-1")},
            VALID,
            {"Ready": ("False", "NodesNotReady"), "Progressing": ("True", "RollingOut")},
            id="node without IPsecNode is progressing",
        ),
        pytest.param(
            {
                "node-1": ipsec_node("node-1"),
                "node-2": ipsec_node("node-2", enforcing=False, message="charon refused"),
            },
            VALID,
            {
                "Ready": ("False", "NodesNotReady"),
                "Progressing": ("False", "RolloutComplete"),
                "Degraded": ("True", "NodeErrors"),
            },
            id="node reporting errors degrades",
        ),
        pytest.param(
            {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2")},
            INVALID,
            {"Ready": ("False", "CredentialsInvalid"), "CredentialsValid": ("False", "Invalid")},
            id="invalid credentials are never ready",
        ),
        pytest.param(
            {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2")},
            None,
            {"Ready": ("False", "CredentialsPending"), "CredentialsValid": ("Unknown", "Pending")},
            id="unchecked credentials are pending",
        ),
    ],
)
def test_conditions_follow_the_nodes_and_credentials(
    ipsec_nodes: dict[str, IPsecNode],
    credentials: CredentialsVerdict | None,
    expected: dict[str, tuple[str, str]],
) -> None:
    status = compute_status(policy(role="worker"), credentials, NODES, ipsec_nodes, [], None, T0)
    got = conditions(status)
    assert {k: got[k] for k in expected} == expected


def test_degraded_message_names_the_failing_node_and_its_error() -> None:
    nodes = {"node-1": ipsec_node("node-1", enforcing=False, message="charon refused cert")}
    status = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    degraded = condition(status, "Degraded")
    assert degraded is not None
    assert "node-1: charon refused cert" in degraded.message
    row = status.nodes[0]
    assert (row.enforcing, row.message) == (False, "charon refused cert")


def test_row_of_a_node_behind_says_which_generation_it_enforces() -> None:
    nodes = {"node-1": ipsec_node("node-1", generation=1)}
    status = compute_status(policy(generation=3, role="worker"), VALID, NODES, nodes, [], None, T0)
    assert status.nodes[0].message == "enforces generation 1, current is 3"
    assert status.nodes[1].message.startswith("no IPsecNode yet")


def test_empty_selector_selects_every_node_and_none_selected_is_not_ready() -> None:
    everything = compute_status(policy(), VALID, NODES, {}, [], None, T0)
    assert everything.summary.ready == "0/3"
    nothing = compute_status(policy(role="gpu"), VALID, NODES, {}, [], None, T0)
    assert conditions(nothing)["Ready"] == ("False", "NoNodesSelected")
    assert nothing.summary.ready == "0/0"


def test_overlap_degrades_and_blocks_ready() -> None:
    nodes = {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2")}
    overlap = OverlapReport("other", "10.0.0.0/16", "10.0.1.0/24", ("node-1",))
    status = compute_status(policy(role="worker"), VALID, NODES, nodes, [overlap], None, T0)
    assert conditions(status)["Degraded"] == ("True", "SubnetOverlap")
    assert conditions(status)["Ready"] == ("False", "SubnetOverlap")
    degraded = condition(status, "Degraded")
    assert degraded is not None
    assert "IPsecPolicy other" in degraded.message
    assert "node-1" in degraded.message


def test_deleting_policy_is_not_ready() -> None:
    status = compute_status(policy(deleting=True), VALID, NODES, {}, [], None, T0)
    assert conditions(status)["Ready"] == ("False", "Deleting")


def test_unchanged_inputs_give_an_identical_status_later() -> None:
    nodes = {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2", generation=1)}
    first = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    second = compute_status(policy(role="worker"), VALID, NODES, nodes, [], first, T1)
    assert second == first


def test_transition_time_moves_only_for_conditions_that_changed_status() -> None:
    behind = {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2", generation=1)}
    caught_up = {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2")}
    first = compute_status(policy(role="worker"), VALID, NODES, behind, [], None, T0)
    second = compute_status(policy(role="worker"), VALID, NODES, caught_up, [], first, T1)
    times = {c.type: c.last_transition_time for c in second.conditions}
    assert times == {"Ready": T1, "CredentialsValid": T0, "Progressing": T1, "Degraded": T0}
    rows = {r.name: r.last_change for r in second.nodes}
    assert rows == {"node-1": T0, "node-2": T1}


def test_reason_change_without_status_change_keeps_transition_time() -> None:
    first = compute_status(policy(role="worker"), None, NODES, {}, [], None, T0)
    second = compute_status(policy(role="worker"), INVALID, NODES, {}, [], first, T1)
    ready = condition(second, "Ready")
    assert ready is not None
    assert (ready.reason, ready.last_transition_time) == ("CredentialsInvalid", T0)


def test_unparsable_body_is_degraded_and_keeps_the_previous_rows() -> None:
    nodes = {"node-1": ipsec_node("node-1"), "node-2": ipsec_node("node-2")}
    good = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    bad = invalid_body_status("mesh", 3, "spec.ipsecSubnets: required", good, T1)
    assert conditions(bad)["Degraded"] == ("True", "InvalidSpec")
    assert conditions(bad)["Ready"] == ("False", "InvalidSpec")
    assert bad.nodes == good.nodes
    assert bad.observed_generation == 3


def meshed(name: str, expected: int, missing: list[str]) -> IPsecNode:
    return IPsecNode.model_validate({
        "metadata": {"name": name},
        "status": {"policies": [{
            "name": "mesh", "generation": 2, "address": "10.0.0.1",
            "expectedPeers": expected, "establishedPeers": expected - len(missing),
            "missingPeers": missing,
        }]},
    })


def test_ready_waits_until_every_node_holds_an_sa_with_every_peer() -> None:
    nodes = {"node-1": meshed("node-1", 1, ["node-2"]), "node-2": meshed("node-2", 1, [])}
    status = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    assert conditions(status)["Ready"] == ("False", "PeersConnecting")
    assert conditions(status)["Degraded"] == ("False", "AsExpected")  # within the grace period
    rows = {r.name: (r.expected_peers, r.established_peers) for r in status.nodes}
    assert rows == {"node-1": (1, 0), "node-2": (1, 1)}
    nodes["node-1"] = meshed("node-1", 1, [])
    status = compute_status(policy(role="worker"), VALID, NODES, nodes, [], status, T1)
    assert conditions(status)["Ready"] == ("True", "AllNodesEnforcing")
    ready = condition(status, "Ready")
    assert ready is not None
    assert ready.message.endswith("with SAs to all their peers (2)")


def test_a_pair_missing_past_the_grace_period_is_degraded_and_named() -> None:
    nodes = {"node-1": meshed("node-1", 1, ["node-2"]), "node-2": meshed("node-2", 1, [])}
    facts = PolicyFacts(name="mesh", generation=2,
                        selector=LabelSelector(match_labels={"role": "worker"}),
                        overdue_pairs=(("node-1", "node-2"),))
    status = compute_status(facts, VALID, NODES, nodes, [], None, T0)
    degraded = condition(status, "Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason) == ("True", "PeersMissing")
    assert "node-1 -> node-2" in degraded.message


def test_missing_pairs_are_read_from_the_selected_nodes_reports() -> None:
    nodes = {"node-1": meshed("node-1", 2, ["node-2", "node-3"]),
             "node-9": meshed("node-9", 1, ["node-1"])}
    assert missing_pairs("mesh", nodes, ["node-1", "node-2"]) == [
        ("node-1", "node-2"), ("node-1", "node-3")]


def test_a_node_that_has_not_read_its_peers_yet_is_not_counted_complete() -> None:
    # Both agents enforce and report no peers (their slices listed none yet); the operator
    # knows them as each other's peers, so Ready waits for the SAs it will take.
    nodes = {"node-1": meshed("node-1", 0, []), "node-2": meshed("node-2", 0, [])}
    facts = PolicyFacts(name="mesh", generation=2,
                        selector=LabelSelector(match_labels={"role": "worker"}),
                        peers=("node-1", "node-2"))
    status = compute_status(facts, VALID, NODES, nodes, [], None, T0)
    assert conditions(status)["Ready"] == ("False", "PeersConnecting")
    assert [(r.expected_peers, r.established_peers) for r in status.nodes] == [(1, 0), (1, 0)]


def test_the_policy_shows_the_smallest_packet_every_node_can_carry() -> None:
    nodes = {name: IPsecNode.model_validate({"metadata": {"name": name}, "status": {
        "policies": [{"name": "mesh", "generation": 2, "maxInnerPacket": size}]}})
        for name, size in (("node-1", 1446), ("node-2", 8946))}
    status = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    assert status.summary.max_inner_packet == 1446
    assert [r.max_inner_packet for r in status.nodes] == [1446, 8946]


def test_the_status_is_patched_only_when_it_differs_from_what_the_api_serves() -> None:
    computed = compute_status(policy(role="worker"), VALID, NODES, {}, [], None, T0)
    assert status_patch(None, computed) == {"status": computed.to_api()}
    assert status_patch(IPsecPolicyStatus(), computed) == {"status": computed.to_api()}
    assert status_patch(computed.model_copy(deep=True), computed) is None


def with_ready(status: ConditionStatus | None) -> IPsecPolicyStatus:
    return IPsecPolicyStatus(conditions=[] if status is None else [Condition(
        type="Ready", status=status, reason="r", message="", last_transition_time=T0)])


@pytest.mark.parametrize(
    ("served", "current", "expected"),
    [(None, "True", True), ("False", "True", True), ("True", "True", False),
     ("True", "False", False), (None, None, False)],
)
def test_ready_is_news_only_when_it_turns_true(
    served: ConditionStatus | None, current: ConditionStatus | None, expected: bool
) -> None:
    assert became_ready(with_ready(served), with_ready(current)) == expected
    if served is None:
        assert became_ready(None, with_ready(current)) == expected


def test_progress_is_not_news_but_a_turning_condition_is() -> None:
    """One node of two enforcing, then both: the counts and rows moved (progress, paced),
    and Ready turned (news, written at once). More of the same progress is not news."""
    nodes: dict[str, dict[str, str]] = {"node-1": {}, "node-2": {}, "node-3": {}}
    half = compute_status(policy(), VALID, nodes, {"node-1": ipsec_node("node-1")}, [], None, T0)
    more = compute_status(policy(), VALID, nodes, {"node-1": ipsec_node("node-1"),
                                                   "node-2": ipsec_node("node-2")}, [], half, T1)
    full = compute_status(policy(), VALID, nodes, {
        n: ipsec_node(n) for n in nodes}, [], more, T1)
    assert more.summary.ready != half.summary.ready
    assert status_news(more) == status_news(half)
    assert conditions(full)["Ready"] == ("True", "AllNodesEnforcing")
    assert status_news(full) != status_news(more)
    assert status_news(None) != status_news(half)
    next_generation = compute_status(policy(generation=3), VALID, nodes, {}, [], full, T1)
    assert status_news(next_generation) != status_news(full)


def test_timestamps_are_utc_seconds() -> None:
    moment = datetime(2026, 1, 1, 1, 0, 0, 999, tzinfo=timezone(timedelta(hours=1)))
    assert rfc3339(moment) == "2026-01-01T00:00:00Z"


def test_a_missing_pair_is_overdue_only_after_the_grace_period() -> None:
    from controller.operator.status import OverduePairs

    tracker = OverduePairs()
    pair = [("node-1", "node-2")]
    assert tracker.update("mesh", pair, now=100.0, grace=60.0) == ((), 60.0)
    assert tracker.update("mesh", pair, now=130.0, grace=60.0) == ((), 30.0)
    assert tracker.update("mesh", pair, now=161.0, grace=60.0) == ((("node-1", "node-2"),), None)
    assert tracker.update("mesh", [], now=170.0, grace=60.0) == ((), None)  # it came up
    assert tracker.update("mesh", pair, now=180.0, grace=60.0) == ((), 60.0)  # counts anew
    tracker.forget("mesh")
    assert tracker.since == {}


def test_published_peers_an_agent_does_not_count_yet_are_a_missing_pair() -> None:
    """The agent may not have read a slice yet (it reports nothing missing among the peers it
    knows): the operator knows how many it published to it."""
    from controller.operator.status import UNREAD_PEERS, missing_pairs

    published = {"node-1": "10.0.0.1", "node-2": "10.0.0.2", "node-3": "10.0.0.3"}
    lagging = {"node-1": meshed("node-1", 1, [])}  # knows one peer of two
    assert missing_pairs("mesh", lagging, ["node-1"], published) == [("node-1", UNREAD_PEERS)]
    caught_up = {"node-1": meshed("node-1", 2, ["node-3"])}
    assert missing_pairs("mesh", caught_up, ["node-1"], published) == [("node-1", "node-3")]


def test_the_operators_view_of_a_node_keeps_what_its_row_shows_and_nothing_more() -> None:
    from controller.operator.status import status_view

    counted = meshed("node-1", 40, [])
    assert counted.status is not None
    counted.status.policies[0].established_sas = 41
    held = [sa(f"10.0.0.{i}") for i in range(40, 0, -1)] + [sa("10.0.0.99", "CREATED")]
    counted.status.sas = [SecurityAssociation.model_validate(s) for s in held]
    earlier = ipsec_node("node-2", sas=[sa(f"10.0.0.{i}") for i in range(30)])  # counts none
    nodes = {"node-1": counted, "node-2": earlier}
    viewed = {name: status_view(node) for name, node in nodes.items()}
    assert [len(n.status.sas) if n.status else None for n in viewed.values()] == [16, 30]
    full = compute_status(policy(role="worker"), VALID, NODES, nodes, [], None, T0)
    assert compute_status(policy(role="worker"), VALID, NODES, viewed, [], None, T0) == full
