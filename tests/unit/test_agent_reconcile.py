"""One reconcile pass against in-memory charon and kernel fakes (real renderers and planners)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from controller.agent import reconcile
from controller.agent.interfaces import AgentInputs, PolicyInput
from controller.agent.reconcile import NodeReconciler, assign_reqids
from controller.agent.state import GoodPolicy
from controller.facts import NodeCredentials, NodeFacts
from controller.models.node import SecurityAssociation
from controller.models.peers import Peer
from controller.models.policy import IPsecPolicy
from controller.ownership import REQID_BASE
from controller.strongswan.diff import CharonPlan
from controller.xfrm import XfrmState
from tests.certs import make_ca, make_cert, secret_data
from tests.fakes import FakeCharon, FakeXfrm

NODE = NodeFacts(name="node-1", addresses=("10.77.0.1",))
CA = make_ca()
DATA = secret_data(make_cert(CA, "strongmesh-node"), cas=[CA])


def policy(name: str = "mesh", **spec: object) -> IPsecPolicy:
    body: dict[str, object] = {
        "ipsecSubnets": ["10.77.0.0/24"],
        "noIpsecSubnets": ["10.77.0.200/32"],
        "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
        **spec,
    }
    return IPsecPolicy.model_validate({"metadata": {"name": name}, "spec": body})


def inputs(*policies: IPsecPolicy, data: dict[str, str] | None = DATA,
           generation: int = 1) -> AgentInputs:
    return AgentInputs(
        node=NODE,
        policies=tuple(PolicyInput(p, generation, data) for p in policies),
    )


World = tuple[FakeCharon, FakeXfrm, NodeReconciler]


@pytest.fixture
def world() -> World:
    charon, xfrm = FakeCharon(), FakeXfrm()
    return charon, xfrm, NodeReconciler(lambda: charon, xfrm)


def test_first_pass_installs_everything_and_reports_enforcing(world: World) -> None:
    charon, xfrm, rec = world
    result = rec.run_pass(inputs(policy()))
    assert result.charon_ok
    assert result.status.errors == []
    assert list(charon.conns) == ["sm-mesh"]
    protect = [p for p in xfrm.policies.values() if p.templates]
    assert {p.templates[0].level for p in protect} == {"required"}
    assert xfrm.acq == 6
    assert [(p.name, p.enforcing) for p in result.status.policies] == [("mesh", True)]
    assert result.identity == "C=US, O=strongmesh, CN=strongmesh-node"


def test_second_pass_with_same_inputs_changes_nothing(world: World) -> None:
    charon, xfrm, rec = world
    rec.run_pass(inputs(policy()))
    plans, applied = len(charon.plans), xfrm.applied
    result = rec.run_pass(inputs(policy()))
    assert (result.xfrm_changes, result.charon_changed) == (0, False)
    assert (len(charon.plans), xfrm.applied) == (plans, applied)


def test_the_desired_state_is_derived_again_only_when_its_inputs_change(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Equal inputs reuse the last desired state (even as new objects, as an API pass reads
    them); a change of peers, spec or node derives it again, and the change takes effect."""
    charon, _, rec = world
    derived: list[NodeFacts] = []
    real = reconcile.desired_state

    def counted(enforce: Sequence[GoodPolicy], node: NodeFacts) -> reconcile.DesiredNode:
        derived.append(node)
        return real(enforce, node)

    monkeypatch.setattr(reconcile, "desired_state", counted)
    rec.run_pass(with_peers(policy()))
    rec.run_pass(with_peers(policy()))
    assert len(derived) == 1
    rec.run_pass(with_peers(policy(), peers=PEERS[:1]))
    assert len(derived) == 2
    assert sorted(charon.conns) == ["sm-mesh", "sm-mesh@node-2"]
    rec.run_pass(AgentInputs(node=NodeFacts(name="node-1", addresses=("10.77.0.1", "10.9.0.1")),
                             policies=with_peers(policy(), peers=PEERS[:1]).policies))
    assert len(derived) == 3


def test_charons_configuration_is_read_back_only_when_it_may_have_changed() -> None:
    charon, now = FakeCharon(), [100.0]
    rec = NodeReconciler(lambda: charon, FakeXfrm(), clock=lambda: now[0], verify_seconds=30)
    members = (Peer(node="node-2", address="10.77.0.2", ready=False),)
    rec.run_pass(with_peers(policy(), peers=members))
    assert (charon.reads, sorted(charon.conns)) == (1, ["sm-mesh", "sm-mesh@node-2"])
    rec.run_pass(with_peers(policy(), peers=members))  # an SA event, a resync too early
    rec.run_pass(with_peers(policy(), peers=(members[0].model_copy(update={"ready": True}),)))
    assert charon.reads == 1  # a peer became ready: nothing changed for charon
    assert charon.initiated == ["sm-mesh@node-2"]  # the pass did its work all the same

    del charon.conns["sm-mesh@node-2"]  # someone unloaded it behind the agent's back
    now[0] += 30
    rec.run_pass(with_peers(policy()))  # the drift-repair interval passed
    assert charon.reads == 2
    assert "sm-mesh@node-2" in charon.conns

    rec.run_pass(with_peers(policy(esp={"proposals": ["aes256gcm16"]})))  # another config
    charon.restart()
    rec.run_pass(with_peers(policy(esp={"proposals": ["aes256gcm16"]})))  # another charon
    assert charon.reads == 4
    assert "sm-mesh@node-2" in charon.conns


def test_flushed_xfrm_policies_are_restored(world: World) -> None:
    _, xfrm, rec = world
    rec.run_pass(inputs(policy()))
    wanted = dict(xfrm.policies)
    xfrm.policies.clear()
    result = rec.run_pass(inputs(policy()))
    assert result.xfrm_changes == len(wanted)
    assert xfrm.policies == wanted


def test_restarted_charon_gets_its_configuration_again(world: World) -> None:
    charon, _, rec = world
    rec.run_pass(inputs(policy()))
    charon.restart()
    result = rec.run_pass(inputs(policy()))
    assert result.charon_changed
    assert list(charon.conns) == ["sm-mesh"]
    assert rec.charon_id == "charon-2"


def test_unreachable_charon_still_gets_kernel_policies_and_is_reported(world: World) -> None:
    charon, xfrm, rec = world
    charon.down = True
    result = rec.run_pass(inputs(policy()))
    assert not result.charon_ok
    assert any(p.templates for p in xfrm.policies.values()), "Required must fail closed"
    assert any(e.startswith("charon:") for e in result.status.errors)
    charon.down = False
    assert rec.run_pass(inputs(policy())).charon_ok
    assert list(charon.conns) == ["sm-mesh"]


def test_bad_update_keeps_kernel_and_charon_as_they_were(world: World) -> None:
    charon, xfrm, rec = world
    rec.run_pass(inputs(policy()))
    before, plans = dict(xfrm.policies), len(charon.plans)
    bad = dict(DATA, **{"ca.crt": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})
    result = rec.run_pass(inputs(policy(enforcement="Optional"), data=bad, generation=2))
    assert xfrm.policies == before
    assert len(charon.plans) == plans
    (status,) = result.status.policies
    assert (status.generation, status.enforcing) == (1, False)
    assert any("generation 2" in e for e in result.status.errors)


def test_policy_no_longer_selecting_the_node_is_torn_down(world: World) -> None:
    charon, xfrm, rec = world
    rec.run_pass(inputs(policy()))
    result = rec.run_pass(inputs())
    assert charon.conns == {}
    assert xfrm.policies == {}
    assert result.status.policies == []


def test_optional_enforcement_installs_use_templates(world: World) -> None:
    _, xfrm, rec = world
    rec.run_pass(inputs(policy(enforcement="Optional")))
    levels = {p.templates[0].level for p in xfrm.policies.values() if p.templates}
    assert levels == {"use"}


def test_stale_states_are_removed_only_when_stale_on_two_passes(world: World) -> None:
    charon, xfrm, rec = world
    rec.run_pass(inputs(policy()))
    reqid, _, _ = assign_reqids(["mesh"])["mesh"]
    live = XfrmState("10.77.0.1", "10.77.0.2", 0x1111, reqid)
    stale = XfrmState("10.77.0.1", "10.77.0.3", 0x2222, reqid)
    foreign = XfrmState("10.77.0.1", "10.77.0.4", 0x3333, 7)
    xfrm.states = [live, stale, foreign]
    charon.sas = [SecurityAssociation(policy="mesh", peer="10.77.0.2", state="INSTALLED",
                                      spi_in="00001111", spi_out="c0000001")]
    assert rec.run_pass(inputs(policy())).stale_deleted == 0
    assert rec.run_pass(inputs(policy())).stale_deleted == 1
    assert xfrm.deleted == [stale]
    assert xfrm.states == [live, foreign]


def test_status_lists_the_sas_charon_reports(world: World) -> None:
    charon, _, rec = world
    sa = SecurityAssociation(policy="mesh", peer="10.77.0.2", state="INSTALLED",
                             encryption="AES_GCM_16-128")
    charon.sas = [sa, sa.model_copy(update={"peer": "10.77.0.3"})]
    result = rec.run_pass(inputs(policy()))
    assert [s.peer for s in result.status.sas] == ["10.77.0.2", "10.77.0.3"]


@pytest.mark.parametrize(
    ("names", "distinct"),
    [(["a"], 1), (["b", "a", "c"], 3), ([f"p{i}" for i in range(50)], 50)],
)
def test_reqids_are_distinct_in_band_and_independent_of_order(
    names: list[str], distinct: int
) -> None:
    forward, backward = assign_reqids(names), assign_reqids(list(reversed(names)))
    assert forward == backward
    reqids = [r for three in forward.values() for r in three]  # catch-all, peers, tunnels
    assert len(set(reqids)) == 3 * distinct
    assert all(r & ~0xFFFF == REQID_BASE for r in reqids)


def test_restart_with_unreadable_inputs_changes_nothing(world: World) -> None:
    charon, xfrm, rec = world
    rec.run_pass(inputs(policy()))
    held, plans = dict(xfrm.policies), len(charon.plans)
    restarted = NodeReconciler(lambda: charon, xfrm)  # a new agent process: no last good state
    result = restarted.run_pass(AgentInputs(node=NODE, errors=("API not synced yet",)))
    assert xfrm.policies == held
    assert len(charon.plans) == plans
    assert list(charon.conns) == ["sm-mesh"]
    assert result.status.errors == ["API not synced yet"]


PEERS = (Peer(node="node-2", address="10.77.0.2"), Peer(node="node-0", address="10.77.0.0"))


def with_peers(*policies: IPsecPolicy, peers: tuple[Peer, ...] = PEERS) -> AgentInputs:
    return AgentInputs(
        node=NODE,
        policies=tuple(PolicyInput(p, 1, DATA, peers=peers) for p in policies),
    )


def installed(connection: str, peer: str, ike_id: str, child_id: str = "") -> SecurityAssociation:
    return SecurityAssociation(policy="mesh", connection=connection, ike_id=ike_id, peer=peer,
                               child=connection, child_id=child_id or f"c{ike_id}",
                               ike_state="ESTABLISHED", state="INSTALLED")


def test_known_peers_get_connections_and_only_higher_ones_are_initiated(world: World) -> None:
    charon, xfrm, rec = world
    result = rec.run_pass(with_peers(policy()))
    assert sorted(charon.conns) == ["sm-mesh", "sm-mesh@node-0", "sm-mesh@node-2"]
    assert charon.initiated == ["sm-mesh@node-2"]  # 10.77.0.1 < .2; node-0 initiates to us
    peer_pairs = {(p.src, p.dst) for p in xfrm.policies.values() if p.src.endswith("/32")
                  and p.dst.endswith("/32") and p.templates}
    assert peer_pairs == {("10.77.0.1/32", "10.77.0.2/32"), ("10.77.0.2/32", "10.77.0.1/32"),
                          ("10.77.0.1/32", "10.77.0.0/32"), ("10.77.0.0/32", "10.77.0.1/32")}
    (row,) = result.status.policies
    assert (row.address, row.expected_peers, row.established_peers) == ("10.77.0.1", 2, 0)
    assert row.missing_peers == ["node-0", "node-2"]


def test_members_not_ready_get_their_connection_ahead_but_nobody_initiates_or_counts_them(
    world: World,
) -> None:
    charon, xfrm, rec = world
    members = (Peer(node="node-1", address="10.77.0.1"),
               Peer(node="node-2", address="10.77.0.2", ready=False),
               Peer(node="node-3", address="10.77.0.3"))
    result = rec.run_pass(with_peers(policy(), peers=members))
    assert sorted(charon.conns) == ["sm-mesh", "sm-mesh@node-2", "sm-mesh@node-3"]
    assert charon.initiated == ["sm-mesh@node-3"]  # node-2 does not enforce the policy yet
    assert {p.dst for p in xfrm.policies.values() if p.direction == "out" and p.templates
            and p.dst.endswith("/32")} == {"10.77.0.2/32", "10.77.0.3/32"}
    (row,) = result.status.policies
    assert (row.expected_peers, row.missing_peers) == (1, ["node-3"])

    charon.initiated.clear()
    loads = len(charon.plans)
    ready = tuple(m.model_copy(update={"ready": True}) for m in members)
    result = rec.run_pass(with_peers(policy(), peers=ready))
    assert charon.initiated == ["sm-mesh@node-2"]
    assert len(charon.plans) == loads  # its connection was in place: nothing loaded again
    (row,) = result.status.policies
    assert (row.expected_peers, row.missing_peers) == (2, ["node-2", "node-3"])


def test_a_node_initiates_only_once_it_is_listed_ready_itself(world: World) -> None:
    charon, _, rec = world
    members = (Peer(node="node-1", address="10.77.0.1", ready=False),
               Peer(node="node-2", address="10.77.0.2"))
    rec.run_pass(with_peers(policy(), peers=members))
    assert charon.initiated == []  # node-2 may not have loaded node-1's connection yet
    listed = (members[0].model_copy(update={"ready": True}), members[1])
    rec.run_pass(with_peers(policy(), peers=listed))
    assert charon.initiated == ["sm-mesh@node-2"]


def test_a_member_is_loaded_with_the_identity_it_will_report(world: World) -> None:
    charon, _, rec = world
    rec.run_pass(with_peers(policy(), peers=(Peer(node="node-2", address="10.77.0.2",
                                                  ready=False),)))
    subject = rec.last_good["mesh"].credentials.subject  # the shared certificate's
    (plan,) = charon.plans
    assert plan.load_conns["sm-mesh@node-2"]["remote"]["id"] == subject
    loads = len(charon.plans)
    rec.run_pass(with_peers(policy(), peers=(Peer(node="node-2", address="10.77.0.2",
                                                  identity=subject),)))
    assert len(charon.plans) == loads


def test_in_issuer_mode_a_member_must_prove_the_subject_the_signer_gives_it() -> None:
    """(``test_pki``: the signed certificate's subject, as the agent reports it, is
    ``node_identity``.)"""
    good = GoodPolicy(
        policy(credentials={"issuer": {"secretRef": {"name": "ca", "namespace": "ns"}}}), 1,
        NodeCredentials("", (), "", (), "O=strongmesh, CN=node-1"),
        (Peer(node="node-2", address="10.77.0.2", ready=False),
         Peer(node="node-3", address="10.77.0.3", identity="O=strongmesh, CN=node-3")))
    assert [p.identity for p in reconcile.with_identities(good)] == [
        "O=strongmesh, CN=node-2", "O=strongmesh, CN=node-3"]


def test_an_installed_sa_counts_as_an_established_peer_and_stops_initiation(
    world: World,
) -> None:
    charon, _, rec = world
    rec.run_pass(with_peers(policy()))
    charon.sas = [installed("sm-mesh@node-2", "10.77.0.2", "1"),
                  installed("sm-mesh@node-0", "10.77.0.0", "2")]
    charon.initiated.clear()
    result = rec.run_pass(with_peers(policy()))
    assert charon.initiated == []
    (row,) = result.status.policies
    assert (row.established_peers, row.missing_peers) == (2, [])


def test_a_duplicate_ike_sa_is_closed_when_it_persists_and_a_superseded_one_at_once(
    world: World,
) -> None:
    charon, _, rec = world
    rec.run_pass(with_peers(policy()))
    charon.sas = [installed("sm-mesh@node-2", "10.77.0.2", "5"),
                  installed("sm-mesh@node-2", "10.77.0.2", "8"),
                  installed("sm-mesh", "10.77.0.0", "6")]  # catch-all, before node-0 was known
    rec.run_pass(with_peers(policy()))
    assert charon.terminated == ["6"]
    rec.run_pass(with_peers(policy()))
    assert charon.terminated == ["6", "5"]
    assert [sa.ike_id for sa in charon.sas] == ["8"]


def test_a_changed_config_makes_a_new_sa_before_the_old_one_goes(world: World) -> None:
    """New certificates or trusted CAs (charon then makes a new IKE_SA): the old SA keeps
    carrying traffic while the initiator negotiates a new one; the old one goes as a
    duplicate afterwards."""
    charon, _, rec = world
    rec.run_pass(with_peers(policy()))
    charon.sas = [installed("sm-mesh@node-2", "10.77.0.2", "1"),
                  installed("sm-mesh@node-0", "10.77.0.0", "2")]
    rec.run_pass(with_peers(policy()))  # both links up: nothing to initiate
    charon.initiated.clear()
    stronger = policy(esp={"proposals": ["aes256gcm16!"]})
    rec.run_pass(with_peers(stronger))
    assert charon.terminated == []  # nothing is closed before its successor is up
    assert charon.initiated == ["sm-mesh@node-2"]  # node-0 is the initiator of its pair
    result = rec.run_pass(with_peers(stronger))
    assert charon.initiated == ["sm-mesh@node-2"]  # under way: the back-off holds
    # the old SAs carry traffic, but the new generation is not done with them: not Ready yet
    (row,) = result.status.policies
    assert (row.established_peers, row.missing_peers, row.established_sas) == (
        0, ["node-0", "node-2"], 2)
    charon.sas.append(installed("sm-mesh@node-2", "10.77.0.2", "3"))  # the new one is up
    charon.sas.append(installed("sm-mesh@node-0", "10.77.0.0", "4"))  # node-0 made its own
    (row,) = rec.run_pass(with_peers(stronger)).status.policies
    assert (row.established_peers, row.missing_peers) == (2, [])
    rec.run_pass(with_peers(stronger))
    assert sorted(charon.terminated) == ["1", "2"]
    assert charon.initiated == ["sm-mesh@node-2"]


def test_a_responders_new_sa_that_its_config_load_let_in_counts_as_new(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The initiator (node-0, the lower address) loaded the new config first and was waiting
    for this node: its new SA comes up the moment this node loads the config too, before the
    pass lists SAs. Only what existed before the load is outdated; otherwise the new SA would
    never count, the pair would stay "connecting" for good and nobody would initiate again."""
    charon, _, rec = world
    rec.run_pass(with_peers(policy(), peers=PEERS[1:]))
    charon.sas = [installed("sm-mesh@node-0", "10.77.0.0", "2")]
    rec.run_pass(with_peers(policy(), peers=PEERS[1:]))
    load = charon.apply

    def load_lets_the_new_sa_in(plan: CharonPlan) -> None:
        load(plan)
        if plan.renegotiate_conns:
            charon.sas.append(installed("sm-mesh@node-0", "10.77.0.0", "4"))

    monkeypatch.setattr(charon, "apply", load_lets_the_new_sa_in)
    stronger = policy(esp={"proposals": ["aes256gcm16!"]})
    (row,) = rec.run_pass(with_peers(stronger, peers=PEERS[1:])).status.policies
    assert (row.established_peers, row.missing_peers) == (1, [])
    rec.run_pass(with_peers(stronger, peers=PEERS[1:]))
    assert charon.terminated == ["2"]  # the old one goes as a duplicate, the new one stays
    assert charon.initiated == []  # the responder never initiates


def test_new_esp_settings_replace_the_child_sa_inside_the_same_ike_sa(world: World) -> None:
    """charon reuses an IKE_SA whose own config did not change: the new CHILD_SA comes up
    beside the old one in that IKE_SA, and the old CHILD_SA (not the IKE_SA) goes."""
    charon, _, rec = world
    rec.run_pass(with_peers(policy(), peers=PEERS[:1]))
    charon.sas = [installed("sm-mesh@node-2", "10.77.0.2", "1", child_id="11")]
    rec.run_pass(with_peers(policy(), peers=PEERS[:1]))
    charon.initiated.clear()
    stronger = policy(esp={"proposals": ["aes256gcm16!"]})
    rec.run_pass(with_peers(stronger, peers=PEERS[:1]))
    assert charon.initiated == ["sm-mesh@node-2"]
    charon.sas.append(installed("sm-mesh@node-2", "10.77.0.2", "1", child_id="12"))
    rec.run_pass(with_peers(stronger, peers=PEERS[:1]))
    assert charon.terminated_children == []  # one pass for packets still in flight
    rec.run_pass(with_peers(stronger, peers=PEERS[:1]))
    assert (charon.terminated, charon.terminated_children) == ([], ["11"])
    assert [sa.child_id for sa in charon.sas] == ["12"]
    rec.run_pass(with_peers(stronger, peers=PEERS[:1]))
    assert charon.initiated == ["sm-mesh@node-2"]  # done: nothing more to make


def test_a_peer_that_leaves_loses_its_connection(world: World) -> None:
    charon, _, rec = world
    rec.run_pass(with_peers(policy()))
    rec.run_pass(with_peers(policy(), peers=PEERS[:1]))
    assert sorted(charon.conns) == ["sm-mesh", "sm-mesh@node-2"]


def test_a_restarted_charon_makes_the_node_initiate_even_to_lower_addresses(
    world: World,
) -> None:
    charon, _, rec = world
    rec.run_pass(with_peers(policy()))
    assert charon.initiated == ["sm-mesh@node-2"]
    charon.restart()
    charon.initiated.clear()
    rec.run_pass(with_peers(policy()))
    assert sorted(charon.initiated) == ["sm-mesh@node-0", "sm-mesh@node-2"]


POD_NODE = NodeFacts(name="node-1", addresses=("10.77.0.1",), pod_cidrs=("10.244.1.0/24",),
                     mtus=(("10.77.0.1", 1500),))
POD_PEERS = (Peer(node="node-2", address="10.77.0.2", pod_cidrs=["10.244.2.0/24"]),)


def tunnel_inputs(node: NodeFacts = POD_NODE) -> AgentInputs:
    p = policy(mode="Tunnel", ipsecSubnets=["10.77.0.0/24", "10.244.0.0/16"])
    return AgentInputs(node=node, policies=(PolicyInput(p, 1, DATA, peers=POD_PEERS),))


def test_tunnel_mode_gives_each_peer_a_pod_tunnel_in_charon_and_kernel(world: World) -> None:
    charon, xfrm, rec = world
    result = rec.run_pass(tunnel_inputs())
    assert result.status.errors == []
    assert charon.children["sm-mesh@node-2"] == ["sm-mesh@node-2", "sm-mesh@node-2~pods"]
    _, _, tunnel_reqid = assign_reqids(["mesh"])["mesh"]
    out = [p for p in xfrm.policies.values()
           if (p.src, p.dst, p.direction) == ("10.244.1.0/24", "10.244.2.0/24", "out")]
    assert [(t.mode, t.reqid, t.dst) for p in out for t in p.templates] == [
        ("tunnel", tunnel_reqid, "10.77.0.2")]
    # the node (lower address) starts both children of the pair
    assert {"sm-mesh@node-2", "sm-mesh@node-2~pods"} <= set(charon.initiated)


def test_status_reports_what_esp_leaves_of_the_interface_mtu(world: World) -> None:
    _, _, rec = world
    (entry,) = rec.run_pass(tunnel_inputs()).status.policies
    # aes128gcm16 (the default) in tunnel mode over IPv4: 20 + 8 + 8 + pad + 16 (see test_mtu)
    assert (entry.interface_mtu, entry.esp_overhead, entry.max_inner_packet) == (1500, 54, 1446)
    (transport,) = rec.run_pass(AgentInputs(node=POD_NODE, policies=(
        PolicyInput(policy(), 1, DATA),))).status.policies
    assert (transport.esp_overhead, transport.max_inner_packet) == (34, 1466)


def test_mtu_is_not_guessed_when_the_interface_is_unknown(world: World) -> None:
    _, _, rec = world
    node = NodeFacts(name="node-1", addresses=("10.77.0.1",), pod_cidrs=("10.244.1.0/24",))
    (entry,) = rec.run_pass(tunnel_inputs(node)).status.policies
    assert (entry.interface_mtu, entry.esp_overhead, entry.max_inner_packet) == (None,) * 3
