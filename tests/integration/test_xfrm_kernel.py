"""controller.xfrm against the host kernel, in network namespaces this test creates.

The host kernel has xfrm policies but no ESP (LAB-NOTES), which is exactly what these checks
need: a protect policy whose template cannot be satisfied behaves like Required with charon down
(packet dropped, ACQUIRE sent), ``level use`` lets cleartext through (Optional), and bypass
policies must win. Traffic is real UDP between two namespaces joined by a veth pair; "nothing
left in the clear" is checked with the receiving interface's packet counter.

Layout: namespace A (the node, 10.99.0.1) -- veth -- namespace B (an in-scope peer 10.99.0.2
and a bypass host 10.99.0.200 on the same interface, no policies at all).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.models.policy import IPsecPolicySpec
from controller.ownership import reqid_for
from controller.xfrm import (
    ProtectEntry,
    XfrmApplyError,
    XfrmPlan,
    XfrmPolicy,
    desired_policies,
    plan_policies,
    stale_states,
)
from controller.xfrm import netlink as nl
from controller.xfrm.kernel import Xfrm, network_namespace
from tests.environment import missing

if os.geteuid() != 0:
    missing("needs root (network namespaces)")

NODE = "10.99.0.1"
PEER = "10.99.0.2"
BYSTANDER = "10.99.0.200"
PORT = 40999
REQID = reqid_for("mesh", ())


@dataclass
class Lab:
    a: str
    b: str
    xfrm: Xfrm

    def ip(self, netns: str, *args: str) -> str:
        done = subprocess.run(
            ["ip", "-n", netns, *args], check=True, capture_output=True, text=True
        )
        return done.stdout

    def rx_packets(self, netns: str, device: str) -> int:
        with network_namespace(netns):
            lines = Path("/proc/thread-self/net/dev").read_text().splitlines()
        for line in lines:
            name, _, counters = line.partition(":")
            if name.strip() == device:
                return int(counters.split()[1])
        raise AssertionError(f"no {device} in {netns}")

    def udp_delivered(self, src_ns: str, src: str, dst_ns: str, dst: str) -> bool:
        """Send one datagram src -> dst; True iff the receiver got it."""
        with network_namespace(dst_ns):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with network_namespace(src_ns):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with receiver, sender:
            receiver.bind((dst, PORT))
            receiver.settimeout(0.3)
            sender.bind((src, 0))
            token = uuid.uuid4().bytes
            try:
                sender.sendto(token, (dst, PORT))
            except OSError:  # the kernel may refuse at once (no SA, larval drop)
                return False
            try:
                return receiver.recv(64) == token
            except TimeoutError:
                return False


def _setup(a: str, b: str) -> None:
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", a)
    ip("netns", "add", b)
    ip("-n", a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", b)
    for netns, dev, addrs in ((a, "veth-a", [NODE]), (b, "veth-b", [PEER, BYSTANDER])):
        with network_namespace(netns):
            for conf in ("all", "default"):
                Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1")
        ip("-n", netns, "link", "set", "lo", "up")
        for addr in addrs:
            ip("-n", netns, "addr", "add", f"{addr}/24", "dev", dev)
        ip("-n", netns, "link", "set", dev, "up")
    # Static neighbours: no ARP on the wire, so the counters see only the probes.
    mac = {}
    for netns, dev in ((a, "veth-a"), (b, "veth-b")):
        out = subprocess.run(
            ["ip", "-n", netns, "-o", "link", "show", dev],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        mac[netns] = out.split("link/ether ")[1].split()[0]
    for addr in (PEER, BYSTANDER):
        ip("-n", a, "neigh", "replace", addr, "lladdr", mac[b], "dev", "veth-a", "nud", "permanent")
    ip("-n", b, "neigh", "replace", NODE, "lladdr", mac[a], "dev", "veth-b", "nud", "permanent")


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"smx-{tag}-a", f"smx-{tag}-b"
    try:
        _setup(a, b)
        with Xfrm(a) as xfrm:
            yield Lab(a, b, xfrm)
    finally:
        for netns in (a, b):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _spec(enforcement: str = "Required", **extra: object) -> IPsecPolicySpec:
    body: dict[str, object] = {
        "ipsecSubnets": ["10.99.0.0/24"],
        "noIpsecSubnets": [f"{BYSTANDER}/32"],
        "enforcement": enforcement,
        "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
    }
    body.update(extra)
    return IPsecPolicySpec.model_validate(body)


def _reconcile(lab: Lab, spec: IPsecPolicySpec | None) -> None:
    desired = desired_policies([ProtectEntry(spec, REQID)] if spec else [], NODE)
    lab.xfrm.apply(plan_policies(desired, lab.xfrm.read_policies()))


def test_required_drops_in_scope_traffic_both_ways_and_nothing_leaves_in_the_clear(
    lab: Lab,
) -> None:
    assert lab.udp_delivered(lab.a, NODE, lab.b, PEER)  # baseline: the path works
    _reconcile(lab, _spec("Required"))
    before = lab.rx_packets(lab.b, "veth-b")

    assert not lab.udp_delivered(lab.a, NODE, lab.b, PEER)
    assert lab.rx_packets(lab.b, "veth-b") == before, "cleartext left the node"
    assert not lab.udp_delivered(lab.b, PEER, lab.a, NODE)  # inbound cleartext refused


def test_bypass_subnet_wins_over_ipsec_subnet_in_both_directions(lab: Lab) -> None:
    _reconcile(lab, _spec("Required"))
    assert lab.udp_delivered(lab.a, NODE, lab.b, BYSTANDER)
    assert lab.udp_delivered(lab.b, BYSTANDER, lab.a, NODE)


def test_optional_lets_cleartext_through_while_no_sa_exists(lab: Lab) -> None:
    _reconcile(lab, _spec("Optional"))
    assert lab.udp_delivered(lab.a, NODE, lab.b, PEER)
    assert lab.udp_delivered(lab.b, PEER, lab.a, NODE)


def test_nodes_own_traffic_is_bypassed_even_where_loopback_does_xfrm(lab: Lab) -> None:
    # By default the kernel exempts loopback from xfrm (lo: disable_xfrm = disable_policy =
    # 1), so the self bypass is defence in depth; switch the exemption off to see it work.
    with network_namespace(lab.a):
        for knob in ("disable_xfrm", "disable_policy"):
            Path(f"/proc/sys/net/ipv4/conf/lo/{knob}").write_text("0")
    desired = desired_policies([ProtectEntry(_spec("Required"), REQID)], NODE)
    without_self = frozenset(p for p in desired if p.src != p.dst)
    lab.xfrm.apply(plan_policies(without_self, lab.xfrm.read_policies()))
    assert not lab.udp_delivered(lab.a, NODE, lab.a, NODE)  # control: protect would block

    lab.xfrm.apply(plan_policies(desired, lab.xfrm.read_policies()))

    assert lab.udp_delivered(lab.a, NODE, lab.a, NODE)


@pytest.mark.parametrize(("enforcement", "delivered"), [("Required", False), ("Optional", True)])
def test_in_scope_traffic_makes_the_kernel_ask_for_an_sa_with_our_reqid(
    lab: Lab, enforcement: str, delivered: bool
) -> None:
    """The ACQUIRE is what makes charon's trap negotiate, in both modes (Optional: the packet
    itself still goes out in the clear)."""
    _reconcile(lab, _spec(enforcement))
    with network_namespace(lab.a):
        listener = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6)
    with listener:
        listener.bind((0, 1 << (1 - 1)))  # XFRMNLGRP_ACQUIRE = 1
        listener.settimeout(1)
        assert lab.udp_delivered(lab.a, NODE, lab.b, PEER) is delivered
        acquires = [m for m in nl.parse_messages(listener.recv(65536)) if m.type == 0x17]
    assert acquires
    # xfrm_user_acquire is 280 bytes, then attributes; the template carries the reqid.
    template = nl.parse_attributes(acquires[0].body[280:])[nl.XFRMA_TMPL]
    reqid = struct.unpack_from("=I", template, 44)[0]
    assert reqid == REQID
    # The kernel now holds a larval acquire state with our reqid: owned, never stale.
    states = lab.xfrm.read_states()
    assert [s.reqid for s in states] == [REQID]
    assert states[0].larval
    assert stale_states(states, []) == []


def test_switching_optional_to_required_updates_in_place_and_closes(lab: Lab) -> None:
    _reconcile(lab, _spec("Optional"))
    indexes = {p.key: p.index for p in lab.xfrm.read_policies()}
    plan = plan_policies(
        desired_policies([ProtectEntry(_spec("Required"), REQID)], NODE), lab.xfrm.read_policies()
    )
    assert plan.add == ()
    assert plan.delete == ()
    assert len(plan.update) == 2
    lab.xfrm.apply(plan)
    after = lab.xfrm.read_policies()
    assert {p.key: p.index for p in after} == indexes  # same kernel objects, replaced
    assert all(t.level == "required" for p in after for t in p.templates)
    assert not lab.udp_delivered(lab.a, NODE, lab.b, PEER)


def test_reconcile_with_nothing_to_change_plans_nothing(lab: Lab) -> None:
    _reconcile(lab, _spec("Required"))
    desired = desired_policies([ProtectEntry(_spec("Required"), REQID)], NODE)
    assert plan_policies(desired, lab.xfrm.read_policies()).empty


def test_foreign_policies_survive_reconcile_and_removal(lab: Lab) -> None:
    foreign = ["src", "10.99.0.0/24", "dst", "10.98.0.0/16", "dir", "out", "priority", "100"]
    lab.ip(lab.a, "xfrm", "policy", "add", *foreign)
    lab.ip(
        lab.a,
        "xfrm",
        "policy",
        "add",
        "src",
        "10.98.0.0/16",
        "dst",
        "10.99.0.0/24",
        "dir",
        "in",
        "priority",
        "9000",
    )  # just above our protect band
    listing = lab.ip(lab.a, "xfrm", "policy")

    _reconcile(lab, _spec("Required"))
    assert lab.xfrm.read_policies()
    _reconcile(lab, None)

    assert lab.xfrm.read_policies() == frozenset()
    assert lab.ip(lab.a, "xfrm", "policy") == listing


def test_foreign_policy_holding_our_key_is_reported_not_overwritten(lab: Lab) -> None:
    lab.ip(
        lab.a,
        "xfrm",
        "policy",
        "add",
        "src",
        f"{NODE}/32",
        "dst",
        "10.99.0.0/24",
        "dir",
        "out",
        "priority",
        "100",
    )
    with pytest.raises(XfrmApplyError, match="does not own"):
        _reconcile(lab, _spec("Required"))
    listing = lab.ip(lab.a, "xfrm", "policy", "list", "dir", "out", "dst", "10.99.0.0/24")
    assert "priority 100" in listing
    assert "tmpl" not in listing
    # Everything else was applied: the inbound protect policy and the bypasses are in.
    desired = desired_policies([ProtectEntry(_spec(), REQID)], NODE)
    assert len(lab.xfrm.read_policies()) == len(desired) - 1


def test_a_plan_touching_a_foreign_policy_is_refused(lab: Lab) -> None:
    lab.ip(
        lab.a,
        "xfrm",
        "policy",
        "add",
        "src",
        "10.99.0.0/24",
        "dst",
        "10.98.0.0/16",
        "dir",
        "out",
        "priority",
        "100",
    )
    foreign = XfrmPolicy("10.99.0.0/24", "10.98.0.0/16", "out", 100)
    with pytest.raises(XfrmApplyError, match="outside our bands"):
        lab.xfrm.apply(XfrmPlan(delete=(foreign,)))
    assert "10.98.0.0/16" in lab.ip(lab.a, "xfrm", "policy")


def test_stale_owned_policies_are_removed(lab: Lab) -> None:
    lab.ip(
        lab.a,
        "xfrm",
        "policy",
        "add",
        "src",
        f"{NODE}/32",
        "dst",
        "10.97.0.0/16",
        "dir",
        "out",
        "priority",
        "8016",
        "tmpl",
        "proto",
        "esp",
        "mode",
        "transport",
        "reqid",
        str(REQID),
    )
    _reconcile(lab, _spec("Required"))
    assert "10.97.0.0/16" not in lab.ip(lab.a, "xfrm", "policy")


def test_acq_expires_is_set_per_network_namespace(lab: Lab) -> None:
    host = int(Path("/proc/sys/net/core/xfrm_acq_expires").read_text())
    other = 7 if host != 7 else 8
    lab.xfrm.set_acq_expires(other)
    assert lab.xfrm.get_acq_expires() == other
    assert int(Path("/proc/sys/net/core/xfrm_acq_expires").read_text()) == host
    with Xfrm(lab.b) as peer:
        assert peer.get_acq_expires() != other


def _allocate_spi(netns: str, dst: str, reqid: int) -> None:
    """A larval ESP state, as charon makes while negotiating (works without ESP support)."""
    info = bytearray(nl.SA_INFO_SIZE)
    info[56:72] = socket.inet_aton(dst).ljust(16, b"\0")
    info[76] = 50
    info[80:96] = socket.inet_aton(NODE).ljust(16, b"\0")
    struct.pack_into("=IHB", info, 208, reqid, socket.AF_INET, 0)
    payload = bytes(info) + struct.pack("=II", 0x1000, 0xFFFF)
    with network_namespace(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6)
    with sock:
        sock.send(nl.message(nl.XFRM_MSG_ALLOCSPI, nl.NLM_F_REQUEST, 1, payload))
        reply = next(nl.parse_messages(sock.recv(65536)))
        assert reply.type == nl.XFRM_MSG_NEWSA, reply


def test_states_are_read_and_deleted_only_in_our_reqid_band(lab: Lab) -> None:
    _allocate_spi(lab.a, PEER, REQID)
    _allocate_spi(lab.a, BYSTANDER, 0x42)  # foreign reqid
    owned = lab.xfrm.read_states()
    assert [(s.dst, s.reqid) for s in owned] == [(PEER, REQID)]

    lab.xfrm.delete_states(owned)

    assert lab.xfrm.read_states() == []
    assert "reqid 66 " in lab.ip(lab.a, "xfrm", "state")


UML_INIT = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /mnt
V=$(uname -r)
mkdir -p /mnt/lib/modules/$V
mount --bind /usr/lib/uml/modules/$V /mnt/lib/modules/$V
for m in xfrm_user esp4; do modprobe -d /mnt $m; done
printf '#!/bin/sh\\nexec modprobe -d /mnt "$@"\\n' > /mnt/modprobe && chmod +x /mnt/modprobe
echo /mnt/modprobe > /proc/sys/kernel/modprobe
cd {cwd} && {python} {script}
halt -f
"""

UML_CHECK = """
import json, subprocess
from controller.xfrm import stale_states
from controller.xfrm.kernel import Xfrm
aead = "aead 'rfc4106(gcm(aes))' 0x0102030405060708091011121314151617181920 128"
for spi, reqid in (("0xc1a2b3c4", "{reqid:#x}"), ("0xc1a2b3c5", "0x42")):
    subprocess.run(f"ip xfrm state add src 10.77.0.1 dst 10.77.0.2 proto esp spi {{spi}} "
                   f"reqid {{reqid}} mode transport {{aead}}", shell=True, check=True)
with Xfrm() as x:
    owned = x.read_states()
    stale = stale_states(owned, ["c1a2b3c9"])
    x.delete_states(stale)
    after = x.read_states()
left = subprocess.run(["ip", "xfrm", "state"], capture_output=True, text=True).stdout
print("RESULT " + json.dumps({{
    "owned": [[s.spi, s.reqid, s.larval] for s in owned],
    "stale": [s.spi for s in stale], "after": len(after), "foreign_left": "reqid 66 " in left,
}}))
"""


@pytest.mark.lab
def test_keyed_esp_states_are_read_and_stale_ones_deleted_in_a_kernel_with_esp(
    tmp_path: Path,
) -> None:
    """The host has no ESP, so this one runs in user-mode-linux (LAB-NOTES): ~10 s."""
    script = tmp_path / "check.py"
    script.write_text(UML_CHECK.format(reqid=REQID))
    init = tmp_path / "init.sh"
    init.write_text(UML_INIT.format(cwd=Path.cwd(), python=sys.executable, script=script))
    init.chmod(0o755)
    done = subprocess.run(
        [
            "linux.uml",
            "mem=512M",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
            f"init={init}",
            "con0=fd:0,fd:1",
            "con=null",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result == {
        "owned": [[0xC1A2B3C4, REQID, False]],
        "stale": [0xC1A2B3C4],
        "after": 0,
        "foreign_left": True,
    }


NODE6 = "fd99::1"
PEER6 = "fd99::2"


def _enable_ipv6(lab: Lab) -> None:
    for netns, dev, addr in ((lab.a, "veth-a", NODE6), (lab.b, "veth-b", PEER6)):
        with network_namespace(netns):
            Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("0")
        lab.ip(netns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")


def _peer_resolves_node(lab: Lab) -> str:
    """Let the peer resolve the node's IPv6 address; return the peer's neighbour state."""
    with network_namespace(lab.b):
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with sender:
        sender.sendto(b"x", (NODE6, PORT))
    for _ in range(50):
        entry = lab.ip(lab.b, "-6", "neigh", "show", NODE6, "dev", "veth-b")
        if "REACHABLE" in entry or "STALE" in entry:
            break
        subprocess.run(["sleep", "0.02"], check=True)
    return entry


def test_ipv6_neighbour_discovery_works_under_required(lab: Lab) -> None:
    _enable_ipv6(lab)
    spec = _spec("Required", ipsecSubnets=["fd99::/64"], noIpsecSubnets=[])
    desired = desired_policies([ProtectEntry(spec, REQID)], NODE6)
    without_nd = frozenset(p for p in desired if not p.proto)
    lab.xfrm.apply(plan_policies(without_nd, lab.xfrm.read_policies()))
    assert "REACHABLE" not in _peer_resolves_node(lab)  # control: the node's NA is dropped

    lab.ip(lab.b, "-6", "neigh", "flush", "dev", "veth-b")
    lab.xfrm.apply(plan_policies(desired, lab.xfrm.read_policies()))

    assert "REACHABLE" in _peer_resolves_node(lab)
