"""The node's addresses from an rtnetlink dump (standalone mode has no Node object)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from controller.agent.addresses import (
    IFA_ADDRESS,
    IFA_LOCAL,
    NLMSG_DONE,
    RTM_NEWADDR,
    global_addresses,
    interface_mtus,
    parse_addresses,
)


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(family: int, scope: int, *attrs: bytes, kind: int = RTM_NEWADDR) -> bytes:
    body = struct.pack("=BBBBI", family, 24, 0, scope, 2) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def test_local_address_wins_over_peer_address() -> None:
    data = message(socket.AF_INET, 0, attr(IFA_ADDRESS, bytes([10, 0, 0, 9])),
                   attr(IFA_LOCAL, bytes([10, 77, 0, 1])))
    assert list(parse_addresses(data)) == [("10.77.0.1", 0, 2)]


def test_ipv6_and_scopes_are_reported() -> None:
    v6 = bytes.fromhex("fd000000000000000000000000000002")
    data = message(socket.AF_INET6, 0, attr(IFA_ADDRESS, v6)) + message(
        socket.AF_INET, 254, attr(IFA_LOCAL, bytes([127, 0, 0, 1]))
    )
    assert list(parse_addresses(data)) == [("fd00::2", 0, 2), ("127.0.0.1", 254, 2)]


def test_other_messages_are_skipped() -> None:
    data = message(socket.AF_INET, 0, attr(IFA_LOCAL, bytes(4)), kind=NLMSG_DONE)
    assert list(parse_addresses(data)) == []


def test_global_addresses_of_this_namespace_exclude_loopback() -> None:
    found = global_addresses()
    assert "127.0.0.1" not in found
    assert "::1" not in found
    versions = [4 if ":" not in a else 6 for a in found]
    assert versions == sorted(versions)


def test_mtus_of_the_loopback_address_come_from_sysfs() -> None:
    """Loopback is the one interface every network namespace holds; its MTU is whatever sysfs
    says (65536 on Linux), read by the interface index the dump names."""
    expected = int(Path("/sys/class/net/lo/mtu").read_text())
    assert interface_mtus(("127.0.0.1", "192.0.2.77")) == (("127.0.0.1", expected),)
