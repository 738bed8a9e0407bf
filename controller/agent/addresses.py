"""The node's own IP addresses and their interfaces' MTUs, read with one rtnetlink dump (no
``ip`` process to spawn).

Standalone mode has no Node object to read addresses from; spawning ``ip`` costs ~45 ms per
call inside user-mode-linux, a netlink dump well under a millisecond. Both modes read the MTU
of the interface that carries each address: Tunnel mode reports how large a pod's packet may
be once ESP is added (``controller.mtu``).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

RTM_NEWADDR = 20
RTM_GETADDR = 22
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
RT_SCOPE_UNIVERSE = 0
_HDR = struct.Struct("=IHHII")
_IFADDR = struct.Struct("=BBBBI")


def parse_addresses(data: bytes) -> Iterator[tuple[str, int, int]]:
    """(address, scope, interface index) of every RTM_NEWADDR message in a netlink dump
    reply. Pure."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, msg_type, _, _, _ = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        body = data[offset + _HDR.size : offset + length]
        offset += (length + 3) & ~3
        if msg_type != RTM_NEWADDR or len(body) < _IFADDR.size:
            continue
        family, _, _, scope, index = _IFADDR.unpack_from(body)
        attrs = _attributes(body[_IFADDR.size :])
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw is None:
            continue
        if family == socket.AF_INET and len(raw) == 4:
            yield str(ipaddress.IPv4Address(raw)), scope, index
        elif family == socket.AF_INET6 and len(raw) == 16:
            yield str(ipaddress.IPv6Address(raw)), scope, index


def _attributes(data: bytes) -> dict[int, bytes]:
    attrs = {}
    offset = 0
    while offset + 4 <= len(data):
        length, attr_type = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        attrs[attr_type & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return attrs


def _dump() -> list[tuple[str, int, int]]:
    """Every address of this network namespace: (address, scope, interface index)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        request = _HDR.pack(_HDR.size + _IFADDR.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                            1, 0) + _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(request)
        found: list[tuple[str, int, int]] = []
        done = False
        while not done:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, msg_type, _, _, _ = _HDR.unpack_from(data, offset)
                if msg_type in (NLMSG_DONE, NLMSG_ERROR) or length < _HDR.size:
                    done = True
                    break
                offset += (length + 3) & ~3
            found += parse_addresses(data)
    return found


def global_addresses() -> tuple[str, ...]:
    """Addresses of global scope on any interface (IPv4 first), in kernel order."""
    found = [a for a, scope, _ in _dump() if scope == RT_SCOPE_UNIVERSE]
    return tuple(sorted(dict.fromkeys(found), key=lambda a: ipaddress.ip_address(a).version))


def interface_mtus(addresses: tuple[str, ...],
                   sysfs: Path = Path("/sys/class/net")) -> tuple[tuple[str, int], ...]:
    """(address, MTU of the interface carrying it) for those of ``addresses`` this host holds;
    an address it does not hold, or an unreadable MTU, is left out (nothing is guessed)."""
    wanted = set(addresses)
    result: list[tuple[str, int]] = []
    for address, _, index in _dump():
        if address not in wanted:
            continue
        try:
            mtu = int((sysfs / socket.if_indextoname(index) / "mtu").read_text())
        except (OSError, ValueError):
            continue
        result.append((address, mtu))
        wanted.discard(address)
    return tuple(result)
