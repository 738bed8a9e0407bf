"""NETLINK_XFRM messages as bytes, both ways. Pure (no sockets).

Why netlink and not ``ip``: iproute2 6.1 ignores ``-j`` for ``ip xfrm`` (text only), and every
``ip`` exec costs ~45 ms inside user-mode-linux, while a netlink dump of all policies is one
syscall round trip. Layouts follow <linux/xfrm.h> (native byte order, natural alignment):
xfrm_selector 56 bytes, xfrm_userpolicy_info 168, xfrm_userpolicy_id 64, xfrm_user_tmpl 64,
xfrm_usersa_info 224, xfrm_usersa_id 24.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from controller.xfrm.model import (
    Direction,
    Level,
    Mode,
    PortMatch,
    XfrmPolicy,
    XfrmState,
    XfrmTemplate,
)

# Message types (XFRM_MSG_BASE = 0x10).
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_UPDPOLICY = 0x19

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

# Attributes.
XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ALG_COMP = 3
XFRMA_TMPL = 5
XFRMA_POLICY_TYPE = 16
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_IF_ID = 31
KEYED = {XFRMA_ALG_AUTH, XFRMA_ALG_CRYPT, XFRMA_ALG_COMP, XFRMA_ALG_AEAD, XFRMA_ALG_AUTH_TRUNC}

XFRM_POLICY_TYPE_MAIN = 0
XFRM_INF = 0xFFFFFFFFFFFFFFFF
DIRECTIONS: dict[int, Direction] = {0: "in", 1: "out", 2: "fwd"}
DIRECTION_IDS = {name: number for number, name in DIRECTIONS.items()}
ACTIONS = {0: "allow", 1: "block"}
MODES: dict[int, Mode] = {0: "transport", 1: "tunnel", 4: "beet"}
MODE_IDS = {name: number for number, name in MODES.items()}

NLMSGHDR = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")
SELECTOR_ADDRS = struct.Struct("=16s16s")
SELECTOR_PORTS = struct.Struct("!HHHH")  # dport, dport_mask, sport, sport_mask: big endian
SELECTOR_REST = struct.Struct("=HBBBxxxiI")  # family, prefixlen_d, prefixlen_s, proto, ...
SELECTOR_SIZE = 56
LIFETIME_CFG = struct.Struct("=8Q")
LIFETIME_CUR = struct.Struct("=4Q")
POLICY_TAIL = struct.Struct("=IIBBBB4x")  # priority, index, dir, action, flags, share, pad
POLICY_INFO_SIZE = SELECTOR_SIZE + LIFETIME_CFG.size + LIFETIME_CUR.size + POLICY_TAIL.size
POLICY_ID_TAIL = struct.Struct("=IB3x")  # index, dir
USER_TMPL = struct.Struct("=16s4sB3xH2x16sIBBBxIII")
SA_INFO_SIZE = 224
SA_ID = struct.Struct("=16s4sHB1x")  # daddr, spi (big endian bytes), family, proto
MARK = struct.Struct("=II")
ZERO_ADDRESS = bytes(16)

# address families as the Linux xfrm netlink ABI numbers them (<linux/socket.h>)
AF_INET = 2
AF_INET6 = 10


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` as in ``os.strerror``. An OSError, so that
    callers handling kernel I/O failures catch it with the rest."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(code, f"{what}: {os.strerror(code)}")


@dataclass(frozen=True)
class Message:
    type: int
    flags: int
    seq: int
    body: bytes
    portid: int = 0  # nlmsg_pid: in a change notification, the requester's (see below)


def message(msg_type: int, flags: int, seq: int, payload: bytes, portid: int = 0) -> bytes:
    """A request. ``portid``: the sender's netlink port id; the kernel copies a request's into
    the notifications of the change it makes (xfrm_user.c: ``c.portid = nlh->nlmsg_pid``), so
    a listener can tell its own changes from everyone else's."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), msg_type, flags, seq, portid) + payload


def parse_messages(data: bytes) -> Iterator[Message]:
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, portid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            break
        yield Message(msg_type, flags, seq, data[offset + NLMSGHDR.size : offset + length],
                      portid)
        offset += (length + 3) & ~3


def changed_by_others(data: bytes, own_portid: int) -> bool:
    """Whether a datagram of xfrm notifications reports a change that a request from another
    socket than ``own_portid`` made (someone else, or the kernel itself: port id 0)."""
    return any(m.portid != own_portid for m in parse_messages(data))


def error_code(body: bytes) -> int:
    """errno of an NLMSG_ERROR (0 = acknowledgement)."""
    return -int(struct.unpack_from("=i", body)[0])


def attribute(attr_type: int, payload: bytes) -> bytes:
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, attr_type) + payload + b"\0" * ((4 - length % 4) % 4)


def parse_attributes(data: bytes) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    offset = 0
    while offset + NLATTR.size <= len(data):
        length, attr_type = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size:
            break
        attrs[attr_type & 0x3FFF] = data[offset + NLATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


# --- addresses and selectors -------------------------------------------------------------


def _family(version: int) -> int:
    return AF_INET if version == 4 else AF_INET6


def _pack_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return address.packed.ljust(16, b"\0")


def _unpack_address(raw: bytes, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if family == AF_INET6:
        return ipaddress.IPv6Address(raw[:16])
    return ipaddress.IPv4Address(raw[:4])


@functools.lru_cache(maxsize=4096)
def _network(raw: bytes, prefixlen: int, family: int) -> str:
    """Cached: a reconcile pass reads the same few networks over and over."""
    address = _unpack_address(raw, family)
    return str(ipaddress.ip_network(f"{address}/{prefixlen}", strict=False))


def pack_selector(policy: XfrmPolicy) -> bytes:
    src = ipaddress.ip_network(policy.src)
    dst = ipaddress.ip_network(policy.dst)
    sport = policy.sport or PortMatch(0, 0)
    dport = policy.dport or PortMatch(0, 0)
    return (
        SELECTOR_ADDRS.pack(_pack_address(dst.network_address), _pack_address(src.network_address))
        + SELECTOR_PORTS.pack(dport.value, dport.mask, sport.value, sport.mask)
        + SELECTOR_REST.pack(_family(src.version), dst.prefixlen, src.prefixlen, policy.proto, 0, 0)
    )


@dataclass(frozen=True)
class _Selector:
    src: str
    dst: str
    proto: int
    sport: PortMatch | None
    dport: PortMatch | None
    family: int


def _unpack_selector(raw: bytes) -> _Selector:
    daddr, saddr = SELECTOR_ADDRS.unpack_from(raw, 0)
    dport, dport_mask, sport, sport_mask = SELECTOR_PORTS.unpack_from(raw, SELECTOR_ADDRS.size)
    family, prefixlen_d, prefixlen_s, proto, _ifindex, _user = SELECTOR_REST.unpack_from(
        raw, SELECTOR_ADDRS.size + SELECTOR_PORTS.size
    )
    if family not in (AF_INET, AF_INET6):
        family = AF_INET  # selector family unset: an "any" selector, read as IPv4
    return _Selector(
        src=_network(saddr, prefixlen_s, family),
        dst=_network(daddr, prefixlen_d, family),
        proto=proto,
        sport=PortMatch(sport, sport_mask) if sport_mask else None,
        dport=PortMatch(dport, dport_mask) if dport_mask else None,
        family=family,
    )


# --- policies -----------------------------------------------------------------------------


def _pack_template(template: XfrmTemplate, family: int) -> bytes:
    def addr(text: str) -> bytes:
        if not text:
            return b"\0" * 16
        return _pack_address(ipaddress.ip_address(text))

    return USER_TMPL.pack(
        addr(template.dst),
        b"\0" * 4,
        template.proto,
        family,
        addr(template.src),
        template.reqid,
        MODE_IDS.get(template.mode, 0),
        0,
        1 if template.level == "use" else 0,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0xFFFFFFFF,
    )


def _unpack_templates(raw: bytes, policy_family: int) -> tuple[XfrmTemplate, ...]:
    templates = []
    for offset in range(0, len(raw) - USER_TMPL.size + 1, USER_TMPL.size):
        daddr, _spi, proto, family, saddr, reqid, mode, _share, optional, *_ = (
            USER_TMPL.unpack_from(raw, offset)
        )
        family = family or policy_family
        level: Level = "use" if optional else "required"
        templates.append(
            XfrmTemplate(
                reqid=reqid,
                level=level,
                proto=proto,
                mode=MODES.get(mode, "other"),
                src=_template_address(saddr, family),
                dst=_template_address(daddr, family),
            )
        )
    return tuple(templates)


def _template_address(raw: bytes, family: int) -> str:
    """Empty for "any" (all zeroes), the common transport-mode case."""
    if raw == ZERO_ADDRESS:
        return ""
    return str(_unpack_address(raw, family))


def _policy_attributes(policy: XfrmPolicy) -> bytes:
    attrs = b""
    if policy.mark or policy.mark_mask:
        attrs += attribute(XFRMA_MARK, MARK.pack(policy.mark, policy.mark_mask))
    if policy.if_id:
        attrs += attribute(XFRMA_IF_ID, struct.pack("=I", policy.if_id))
    return attrs


def pack_policy_info(policy: XfrmPolicy) -> bytes:
    """Body of XFRM_MSG_NEWPOLICY / UPDPOLICY."""
    family = _family(ipaddress.ip_network(policy.src).version)
    info = (
        pack_selector(policy)
        + LIFETIME_CFG.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
        + LIFETIME_CUR.pack(0, 0, 0, 0)
        + POLICY_TAIL.pack(
            policy.priority,
            0,
            DIRECTION_IDS[policy.direction],
            1 if policy.action == "block" else 0,
            0,
            0,
        )
    )
    attrs = _policy_attributes(policy)
    if policy.templates:
        attrs += attribute(
            XFRMA_TMPL, b"".join(_pack_template(t, family) for t in policy.templates)
        )
    return info + attrs


def pack_policy_id(policy: XfrmPolicy) -> bytes:
    """Body of XFRM_MSG_DELPOLICY: by kernel index when known (immune to a policy that was
    replaced meanwhile), otherwise by selector."""
    return (
        pack_selector(policy)
        + POLICY_ID_TAIL.pack(policy.index, DIRECTION_IDS[policy.direction])
        + _policy_attributes(policy)
    )


def unpack_policy(body: bytes) -> XfrmPolicy | None:
    """A policy from a NEWPOLICY message; None for socket and sub policies (never ours)."""
    if len(body) < POLICY_INFO_SIZE:
        return None
    offset = SELECTOR_SIZE + LIFETIME_CFG.size + LIFETIME_CUR.size
    priority, index, direction, action, _flags, _share = POLICY_TAIL.unpack_from(body, offset)
    if direction not in DIRECTIONS:
        return None
    attrs = parse_attributes(body[POLICY_INFO_SIZE:])
    policy_type = attrs.get(XFRMA_POLICY_TYPE)
    if policy_type and policy_type[0] != XFRM_POLICY_TYPE_MAIN:
        return None
    selector = _unpack_selector(body[:SELECTOR_SIZE])
    mark, mark_mask = MARK.unpack(attrs[XFRMA_MARK][:8]) if XFRMA_MARK in attrs else (0, 0)
    if_id = struct.unpack("=I", attrs[XFRMA_IF_ID][:4])[0] if XFRMA_IF_ID in attrs else 0
    return XfrmPolicy(
        src=selector.src,
        dst=selector.dst,
        direction=DIRECTIONS[direction],
        priority=priority,
        action="block" if ACTIONS.get(action) == "block" else "allow",
        templates=_unpack_templates(attrs.get(XFRMA_TMPL, b""), selector.family),
        proto=selector.proto,
        sport=selector.sport,
        dport=selector.dport,
        mark=mark,
        mark_mask=mark_mask,
        if_id=if_id,
        index=index,
    )


def policy_dump_request() -> bytes:
    return bytes(POLICY_INFO_SIZE)


# --- states -------------------------------------------------------------------------------


def unpack_state(body: bytes) -> XfrmState | None:
    if len(body) < SA_INFO_SIZE:
        return None
    daddr, spi, proto = struct.unpack_from("=16s4sB", body, SELECTOR_SIZE)
    saddr = body[80:96]
    reqid, family, mode = struct.unpack_from("=IHB", body, 208)
    attrs = parse_attributes(body[SA_INFO_SIZE:])
    mark, mark_mask = MARK.unpack(attrs[XFRMA_MARK][:8]) if XFRMA_MARK in attrs else (0, 0)
    if_id = struct.unpack("=I", attrs[XFRMA_IF_ID][:4])[0] if XFRMA_IF_ID in attrs else 0
    return XfrmState(
        src=str(_unpack_address(saddr, family)),
        dst=str(_unpack_address(daddr, family)),
        spi=int.from_bytes(spi, "big"),
        reqid=reqid,
        proto=proto,
        mode=MODES.get(mode, "other"),
        mark=mark,
        mark_mask=mark_mask,
        if_id=if_id,
        larval=not KEYED & attrs.keys(),
    )


def pack_state_id(state: XfrmState) -> bytes:
    """Body of XFRM_MSG_DELSA: daddr + SPI + proto identify an SA (plus its mark)."""
    dst = ipaddress.ip_address(state.dst)
    body = SA_ID.pack(
        _pack_address(dst), state.spi.to_bytes(4, "big"), _family(dst.version), state.proto
    )
    if state.mark or state.mark_mask:
        body += attribute(XFRMA_MARK, MARK.pack(state.mark, state.mark_mask))
    if state.if_id:
        body += attribute(XFRMA_IF_ID, struct.pack("=I", state.if_id))
    return body


def state_dump_request() -> bytes:
    return bytes(SA_INFO_SIZE)
