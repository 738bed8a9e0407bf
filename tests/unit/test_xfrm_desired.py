"""Which xfrm policies a node needs (controller.xfrm.desired)."""

from __future__ import annotations

import ipaddress

import pytest

from controller.models.policy import IPsecPolicySpec
from controller.ownership import BAND_SIZE, BYPASS_BASE, PROTECT_BASE
from controller.xfrm.desired import ProtectEntry, acq_expires_for, desired_policies
from controller.xfrm.model import PortMatch, XfrmPolicy, XfrmTemplate

R1 = 0x534D0001
R2 = 0x534D0002


def spec(
    ipsec: list[str],
    bypass: list[str] | None = None,
    enforcement: str = "Required",
    acq: int | None = None,
    mode: str = "Transport",
) -> IPsecPolicySpec:
    body: dict[str, object] = {
        "ipsecSubnets": ipsec,
        "noIpsecSubnets": bypass or [],
        "enforcement": enforcement,
        "mode": mode,
        "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
    }
    if acq is not None:
        body["xfrmAcqExpiresSeconds"] = acq
    return IPsecPolicySpec.model_validate(body)


def by_key(policies: frozenset[XfrmPolicy]) -> dict[tuple[str, str, str], XfrmPolicy]:
    return {(p.src, p.dst, p.direction): p for p in policies if not p.proto}


def test_required_policy_protects_both_directions_with_level_required() -> None:
    got = by_key(desired_policies([ProtectEntry(spec(["10.0.0.0/16"]), R1)], "10.0.0.5"))
    template = (XfrmTemplate(reqid=R1, level="required"),)
    assert got[("10.0.0.5/32", "10.0.0.0/16", "out")] == XfrmPolicy(
        "10.0.0.5/32", "10.0.0.0/16", "out", PROTECT_BASE + 16, templates=template
    )
    assert got[("10.0.0.0/16", "10.0.0.5/32", "in")] == XfrmPolicy(
        "10.0.0.0/16", "10.0.0.5/32", "in", PROTECT_BASE + 16, templates=template
    )


def test_optional_policy_uses_level_use_templates() -> None:
    entry = ProtectEntry(spec(["10.0.0.0/16"], enforcement="Optional"), R1)
    got = desired_policies([entry], "10.0.0.5")
    levels = {t.level for p in got for t in p.templates}
    assert levels == {"use"}


def test_bypass_subnet_gets_allow_policies_both_ways_in_the_bypass_band() -> None:
    entry = ProtectEntry(spec(["10.0.0.0/16"], ["10.0.0.10/32"]), R1)
    got = by_key(desired_policies([entry], "10.0.0.5"))
    out = got[("10.0.0.5/32", "10.0.0.10/32", "out")]
    inbound = got[("10.0.0.10/32", "10.0.0.5/32", "in")]
    for policy in (out, inbound):
        assert policy.is_bypass
        assert policy.priority == BYPASS_BASE


def test_nodes_own_address_is_bypassed_both_ways() -> None:
    got = by_key(desired_policies([ProtectEntry(spec(["10.0.0.0/16"]), R1)], "10.0.0.5"))
    for direction in ("out", "in"):
        policy = got[("10.0.0.5/32", "10.0.0.5/32", direction)]
        assert policy.is_bypass
        assert policy.priority == BYPASS_BASE


def test_other_local_addresses_are_bypassed_like_the_node_address() -> None:
    got = by_key(
        desired_policies(
            [ProtectEntry(spec(["10.0.0.0/16"]), R1)], "10.0.0.5",
            local_addresses=["10.0.0.6", "fd00::1"],
        )
    )
    assert got[("10.0.0.5/32", "10.0.0.6/32", "out")].is_bypass
    assert got[("10.0.0.6/32", "10.0.0.5/32", "in")].is_bypass
    assert not any("fd00" in p.src + p.dst for p in got.values())


@pytest.mark.parametrize(
    ("ipsec", "bypass"),
    [
        ("10.0.0.0/8", "10.0.0.10/32"),  # bypass more specific
        ("10.0.0.6/32", "0.0.0.0/0"),  # bypass least specific possible
        ("fd00::/8", "::/0"),
        ("fd00::6/128", "fd00::/16"),
    ],
)
def test_every_bypass_policy_wins_over_every_protect_policy(ipsec: str, bypass: str) -> None:
    node = "fd00::5" if ":" in ipsec else "10.0.0.5"
    got = desired_policies([ProtectEntry(spec([ipsec], [bypass]), R1)], node)
    bypasses = [p.priority for p in got if p.is_bypass]
    protects = [p.priority for p in got if p.is_protect]
    assert bypasses
    assert protects
    assert max(bypasses) < min(protects)
    assert all(BYPASS_BASE <= p < BYPASS_BASE + BAND_SIZE for p in bypasses)
    assert all(PROTECT_BASE <= p < PROTECT_BASE + BAND_SIZE for p in protects)


@pytest.mark.parametrize(
    ("subnet", "priority"),
    [
        ("10.0.0.0/8", PROTECT_BASE + 24),
        ("10.1.0.0/16", PROTECT_BASE + 16),
        ("10.1.2.9/32", PROTECT_BASE),
        ("0.0.0.0/0", PROTECT_BASE + 32),
    ],
)
def test_more_specific_subnet_gets_higher_precedence(subnet: str, priority: int) -> None:
    got = desired_policies([ProtectEntry(spec([subnet]), R1)], "10.1.2.3")
    assert {p.priority for p in got if p.is_protect} == {priority}


def test_subnets_of_the_other_family_are_ignored() -> None:
    entry = ProtectEntry(spec(["10.0.0.0/16", "fd00::/64"], ["fd00::9/128"]), R1)
    got = desired_policies([entry], "10.0.0.5")
    assert {ipaddress.ip_network(p.src).version for p in got} == {4}


def test_ipv6_node_bypasses_neighbour_discovery() -> None:
    got = desired_policies([ProtectEntry(spec(["fd00::/64"]), R1)], "fd00::5")
    nd = {(p.direction, p.sport) for p in got if p.proto == 58}
    assert nd == {
        (direction, PortMatch(icmp_type)) for direction in ("in", "out") for icmp_type in (135, 136)
    }
    assert all(p.is_bypass for p in got if p.proto == 58)


def test_ipv4_node_has_no_icmpv6_policies() -> None:
    got = desired_policies([ProtectEntry(spec(["10.0.0.0/16"]), R1)], "10.0.0.5")
    assert not [p for p in got if p.proto]


def test_no_policy_selecting_the_node_means_no_xfrm_policy_at_all() -> None:
    assert desired_policies([], "10.0.0.5") == frozenset()


def test_noipsec_subnet_of_one_policy_wins_over_ipsec_subnet_of_another() -> None:
    entries = [
        ProtectEntry(spec(["10.0.0.0/16"]), R1),
        ProtectEntry(spec(["10.9.0.0/16"], ["10.0.0.0/16"]), R2),
    ]
    got = by_key(desired_policies(entries, "10.0.0.5"))
    assert got[("10.0.0.5/32", "10.0.0.0/16", "out")].is_bypass


def test_required_wins_over_optional_on_the_same_selector() -> None:
    entries = [
        ProtectEntry(spec(["10.0.0.0/16"], enforcement="Optional"), R1),
        ProtectEntry(spec(["10.0.0.0/16"], enforcement="Required"), R2),
    ]
    got = by_key(desired_policies(entries, "10.0.0.5"))
    assert got[("10.0.0.5/32", "10.0.0.0/16", "out")].templates == (XfrmTemplate(R2, "required"),)


def test_first_policy_wins_a_tie_on_the_same_selector() -> None:
    entries = [ProtectEntry(spec(["10.0.0.0/16"]), R1), ProtectEntry(spec(["10.0.0.0/16"]), R2)]
    got = by_key(desired_policies(entries, "10.0.0.5"))
    assert got[("10.0.0.0/16", "10.0.0.5/32", "in")].templates == (XfrmTemplate(R1, "required"),)


def test_several_policies_on_different_subnets_each_keep_their_reqid() -> None:
    entries = [ProtectEntry(spec(["10.0.0.0/16"]), R1), ProtectEntry(spec(["10.1.0.0/16"]), R2)]
    got = by_key(desired_policies(entries, "10.0.0.5"))
    assert got[("10.0.0.5/32", "10.0.0.0/16", "out")].templates[0].reqid == R1
    assert got[("10.0.0.5/32", "10.1.0.0/16", "out")].templates[0].reqid == R2


def test_host_bits_in_subnets_are_normalised() -> None:
    got = by_key(desired_policies([ProtectEntry(spec(["10.0.0.77/16"]), R1)], "10.0.0.5"))
    assert ("10.0.0.5/32", "10.0.0.0/16", "out") in got


@pytest.mark.parametrize(("values", "expected"), [([], None), ([6], 6), ([30, 6, 10], 6)])
def test_acq_expires_is_the_smallest_any_policy_asks_for(
    values: list[int], expected: int | None
) -> None:
    assert acq_expires_for([spec(["10.0.0.0/8"], acq=v) for v in values]) == expected


def test_acq_expires_defaults_to_six_seconds() -> None:
    assert acq_expires_for([spec(["10.0.0.0/8"])]) == 6


def test_known_peers_get_their_own_pair_which_outranks_the_subnet() -> None:
    entry = ProtectEntry(spec(["10.0.0.0/16"]), R1, R2, peers=("10.0.0.7", "10.0.0.5", "10.9.9.9"))
    got = by_key(desired_policies([entry], "10.0.0.5"))
    out = got[("10.0.0.5/32", "10.0.0.7/32", "out")]
    inbound = got[("10.0.0.7/32", "10.0.0.5/32", "in")]
    assert out.templates == inbound.templates == (XfrmTemplate(R2, "required"),)
    subnet = got[("10.0.0.5/32", "10.0.0.0/16", "out")]
    assert subnet.templates == (XfrmTemplate(R1, "required"),)
    assert out.priority < subnet.priority  # lower value = higher precedence
    # the node itself and a peer outside the ipsecSubnets get no per-peer policy
    assert ("10.0.0.5/32", "10.9.9.9/32", "out") not in got


def test_bypass_still_beats_a_per_peer_policy() -> None:
    entry = ProtectEntry(spec(["10.0.0.0/16"], ["10.0.0.7/32"]), R1, R2, peers=("10.0.0.7",))
    got = by_key(desired_policies([entry], "10.0.0.5"))
    assert got[("10.0.0.5/32", "10.0.0.7/32", "out")].is_bypass


def test_optional_per_peer_policies_use_level_use() -> None:
    entry = ProtectEntry(spec(["10.0.0.0/16"], enforcement="Optional"), R1, R2, peers=("10.0.0.7",))
    got = by_key(desired_policies([entry], "10.0.0.5"))
    assert got[("10.0.0.5/32", "10.0.0.7/32", "out")].templates == (XfrmTemplate(R2, "use"),)


R3 = 0x534D0003
NODES, PODS = "10.77.0.0/24", "10.244.0.0/16"


def tunnel_entry(enforcement: str = "Required", bypass: list[str] | None = None) -> ProtectEntry:
    return ProtectEntry(
        spec([NODES, PODS], bypass, enforcement=enforcement, mode="Tunnel"), R1, R2,
        peers=("10.77.0.2",), tunnel_reqid=R3, local_pods=("10.244.1.0/24",),
        peer_pods=(("10.77.0.2", ("10.244.2.0/24",)),), pod_space=(PODS,),
    )


def test_tunnel_mode_sends_pod_traffic_through_a_tunnel_to_the_peer_node() -> None:
    got = by_key(desired_policies([tunnel_entry()], "10.77.0.1"))
    out = got[("10.244.1.0/24", "10.244.2.0/24", "out")]
    assert out.templates == (XfrmTemplate(R3, "required", mode="tunnel", src="10.77.0.1",
                                          dst="10.77.0.2"),)
    fwd = got[("10.244.2.0/24", "10.244.1.0/24", "fwd")]
    assert fwd.templates == (XfrmTemplate(R3, "required", mode="tunnel", src="10.77.0.2",
                                          dst="10.77.0.1"),)
    assert ("10.244.2.0/24", "10.244.1.0/24", "in") not in got  # pods are no local address
    # the node's own addresses keep their transport protection, as in Transport mode
    assert got[("10.77.0.1/32", "10.77.0.2/32", "out")].templates[0].mode == "transport"


def test_required_blocks_the_pod_space_below_the_tunnels() -> None:
    got = by_key(desired_policies([tunnel_entry()], "10.77.0.1"))
    block_out = got[("10.244.1.0/24", PODS, "out")]
    block_fwd = got[(PODS, "10.244.1.0/24", "fwd")]
    assert block_out.action == block_fwd.action == "block"
    tunnel = got[("10.244.1.0/24", "10.244.2.0/24", "out")]
    assert tunnel.priority < block_out.priority  # the known peer's tunnel wins
    own = got[("10.244.1.0/24", "10.244.1.0/24", "out")]
    assert own.is_bypass  # own pods never leave the node
    assert own.priority < tunnel.priority
    # no host-to-host protection towards the pod space: no IKE peer lives there
    assert ("10.77.0.1/32", PODS, "out") not in got


def test_optional_tunnels_block_nothing() -> None:
    got = desired_policies([tunnel_entry("Optional")], "10.77.0.1")
    assert not [p for p in got if p.action == "block"]
    assert {t.level for p in got for t in p.templates} == {"use"}


def test_bypass_subnets_beat_pod_tunnels() -> None:
    got = by_key(desired_policies([tunnel_entry(bypass=["10.244.2.0/25"])], "10.77.0.1"))
    bypass = got[("10.244.1.0/24", "10.244.2.0/25", "out")]
    assert bypass.is_bypass
    assert bypass.priority < got[("10.244.1.0/24", "10.244.2.0/24", "out")].priority
    assert got[("10.244.2.0/25", "10.244.1.0/24", "fwd")].is_bypass


def test_transport_mode_has_no_pod_policies() -> None:
    entry = ProtectEntry(spec([NODES, PODS]), R1, R2, peers=("10.77.0.2",))
    got = desired_policies([entry], "10.77.0.1")
    assert not [p for p in got if p.src.startswith("10.244.1.") or p.dst.startswith("10.244.1.")]
