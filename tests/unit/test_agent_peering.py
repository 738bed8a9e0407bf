"""Who initiates, when to try again, which SAs must go (``controller.agent.peering``)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from controller.agent.peering import (
    Attempts,
    TerminationGate,
    Unwanted,
    initiates,
    plan_initiations,
    still_outdated,
    unwanted_ike_sas,
)
from controller.models.node import SecurityAssociation
from controller.strongswan.render import PeerLink, PodTunnel

ME = "10.77.0.2"


def link(peer: str, address: str) -> PeerLink:
    return PeerLink("mesh", peer, address, ME, f"sm-mesh@{peer}")


LOWER, HIGHER = link("node-1", "10.77.0.1"), link("node-3", "10.77.0.3")


def sa(connection: str, ike_id: str, peer: str = "10.77.0.3", state: str = "INSTALLED",
       ike_state: str = "ESTABLISHED", child_id: str = "") -> SecurityAssociation:
    return SecurityAssociation(policy="mesh", connection=connection, ike_id=ike_id, peer=peer,
                               child_id=child_id or f"c{ike_id}", state=state,
                               ike_state=ike_state)


@pytest.mark.parametrize(
    ("local", "peer", "expected"),
    [
        ("10.0.0.1", "10.0.0.2", True),
        ("10.0.0.2", "10.0.0.1", False),
        ("10.0.0.9", "10.0.0.10", True),  # numeric, not text, order
        ("10.0.0.1", "fd00::1", True),
        ("fd00::2", "fd00::10", True),
    ],
)
def test_the_lower_address_initiates_and_both_ends_agree(
    local: str, peer: str, expected: bool
) -> None:
    assert initiates(local, peer) is expected
    assert initiates(peer, local) is not expected


def test_only_links_to_higher_addresses_are_initiated() -> None:
    plan = plan_initiations([LOWER, HIGHER], [], {}, now=100.0)
    assert plan.initiate == ((HIGHER.connection, HIGHER.connection),)
    assert plan.attempts == {HIGHER.connection: Attempts(count=1, next_at=101.0)}


def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    attempts: dict[str, Attempts] = {}
    times = []
    now = 0.0
    for _ in range(9):
        plan = plan_initiations([HIGHER], [], attempts, now)
        if plan.initiate:
            times.append(now)
        attempts = dict(plan.attempts)
        now = attempts[HIGHER.connection].next_at
    assert [b - a for a, b in itertools.pairwise(times)] == [
        1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_nothing_is_initiated_before_the_back_off_ran_out() -> None:
    attempts = {HIGHER.connection: Attempts(count=1, next_at=10.0)}
    assert plan_initiations([HIGHER], [], attempts, now=9.9).initiate == ()


def test_an_exchange_under_way_is_not_started_again() -> None:
    connecting = [sa(HIGHER.connection, "7", state="", ike_state="CONNECTING")]
    assert plan_initiations([HIGHER], connecting, {}, now=0.0).initiate == ()


def test_an_installed_sa_resets_the_back_off() -> None:
    attempts = {HIGHER.connection: Attempts(count=5, next_at=99.0)}
    plan = plan_initiations([HIGHER], [sa(HIGHER.connection, "1")], attempts, now=1.0)
    assert plan.initiate == ()
    assert plan.attempts == {}


def test_the_older_of_two_established_ike_sas_of_one_connection_goes() -> None:
    sas = [sa(HIGHER.connection, "9"), sa(HIGHER.connection, "12")]
    assert unwanted_ike_sas(sas, [HIGHER], {}) == Unwanted(duplicates=frozenset({"9"}))


def test_ids_compare_as_numbers() -> None:
    sas = [sa(HIGHER.connection, "9"), sa(HIGHER.connection, "10")]
    assert unwanted_ike_sas(sas, [HIGHER], {}).duplicates == {"9"}


def test_an_ike_sa_still_connecting_is_no_duplicate() -> None:
    sas = [sa(HIGHER.connection, "9"), sa(HIGHER.connection, "10", ike_state="CONNECTING")]
    assert unwanted_ike_sas(sas, [HIGHER], {}) == Unwanted()


def test_catch_all_sas_go_only_for_peers_with_a_connection_of_their_own() -> None:
    sas = [sa("sm-mesh", "3", peer="10.77.0.3"), sa("sm-mesh", "4", peer="10.77.0.9")]
    unwanted = unwanted_ike_sas(sas, [HIGHER], {"sm-mesh": "mesh"})
    assert unwanted == Unwanted(superseded=frozenset({"3"}))


def test_duplicates_go_on_the_second_pass_superseded_sas_at_once() -> None:
    gate = TerminationGate()
    first = Unwanted(duplicates=frozenset({"9"}), superseded=frozenset({"3"}))
    assert gate.confirm(first) == {"3"}
    assert gate.confirm(Unwanted(duplicates=frozenset({"9"}))) == {"9"}
    assert gate.confirm(Unwanted(duplicates=frozenset({"11"}))) == set()  # a rekey's overlap


@pytest.mark.parametrize(("peer_ready", "self_ready"), [(False, True), (True, False)])
def test_nothing_is_initiated_until_both_ends_are_listed_ready(
    peer_ready: bool, self_ready: bool
) -> None:
    waiting = replace(HIGHER, peer_ready=peer_ready, self_ready=self_ready)
    assert plan_initiations([waiting], [], {}, now=5.0).initiate == ()
    assert plan_initiations([waiting], [], {}, now=5.0, every_link=True).initiate == ()
    assert plan_initiations([replace(waiting, peer_ready=True, self_ready=True)], [], {},
                            now=5.0).initiate == ((HIGHER.connection, HIGHER.connection),)


def test_after_its_charon_restarted_a_node_initiates_every_link_it_lost() -> None:
    plan = plan_initiations([LOWER, HIGHER], [sa(HIGHER.connection, "1")], {}, now=5.0,
                            every_link=True)
    assert plan.initiate == ((LOWER.connection, LOWER.connection),)  # HIGHER is installed


def test_each_missing_child_of_a_link_is_initiated_on_its_own() -> None:
    tunnel = PeerLink("mesh", "node-3", "10.77.0.3", ME, "sm-mesh@node-3",
                      PodTunnel(("10.244.1.0/24",), ("10.244.3.0/24",)))
    transport_up = [SecurityAssociation(policy="mesh", connection=tunnel.connection, ike_id="1",
                                        child="sm-mesh@node-3", peer="10.77.0.3",
                                        ike_state="ESTABLISHED", state="INSTALLED")]
    plan = plan_initiations([tunnel], transport_up, {}, now=0.0)
    assert plan.initiate == (("sm-mesh@node-3", "sm-mesh@node-3~pods"),)


def test_an_sa_negotiated_under_an_old_config_does_not_count_as_the_links_sa() -> None:
    old = {HIGHER.connection: frozenset({"c4"})}
    plan = plan_initiations([HIGHER], [sa(HIGHER.connection, "4")], {}, now=0.0, outdated=old)
    assert plan.initiate == ((HIGHER.connection, HIGHER.connection),)
    renewed = [sa(HIGHER.connection, "4"), sa(HIGHER.connection, "7")]
    plan = plan_initiations([HIGHER], renewed, {}, now=0.0, outdated=old)
    assert plan.initiate == ()


def test_outdated_sas_are_forgotten_once_gone() -> None:
    old = {"sm-mesh@node-3": frozenset({"c4", "c5"}), "sm-mesh@node-4": frozenset({"c6"})}
    assert still_outdated(old, [sa("sm-mesh@node-3", "5"), sa("sm-mesh@node-3", "9")]) == {
        "sm-mesh@node-3": frozenset({"c5"})}


def test_an_outdated_child_is_replaced_only_by_a_successor_in_its_own_ike_sa() -> None:
    conn = HIGHER.connection
    old = {conn: frozenset({"c1"})}
    same_ike = [sa(conn, "1", child_id="c1"), sa(conn, "1", child_id="c2")]
    assert unwanted_ike_sas(same_ike, [HIGHER], {}, old).replaced == {"c1"}
    new_ike = [sa(conn, "1", child_id="c1"), sa(conn, "2", child_id="c2")]
    unwanted = unwanted_ike_sas(new_ike, [HIGHER], {}, old)
    assert (unwanted.replaced, unwanted.duplicates) == (frozenset(), frozenset({"1"}))  # goes whole
    installing = [sa(conn, "1", child_id="c1"), sa(conn, "1", child_id="c2", state="INSTALLING")]
    assert unwanted_ike_sas(installing, [HIGHER], {}, old).replaced == frozenset()
