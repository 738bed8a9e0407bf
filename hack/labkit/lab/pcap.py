"""Just enough of the pcap format to classify the lab's probes (tcpdump -w on the switch).

Only what the lab's switch carries is decoded: Ethernet, IPv4/IPv6, ESP (IP protocol 50 or
UDP 4500 without the non-ESP marker) and UDP/TCP/ICMP payloads searched for probe tokens.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

ESP = 50
UDP = 17
NAT_T_PORT = 4500
IPV6_FRAGMENT = 44  # the fragment extension header
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100


@dataclass(frozen=True)
class Packet:
    """One IP packet seen on the wire."""

    time: float
    src: str
    dst: str
    esp: bool  # ESP (plain or UDP-encapsulated)
    payload: bytes  # L4 payload bytes as captured (empty for ESP)
    length: int = 0  # the IP packet's length as its header says (what the MTU limits)
    fragment: bool = False  # a fragment of a larger IP packet (more-fragments or an offset)
    spi: int = 0  # ESP only: the SA's SPI and the packet's sequence number on it (1: the SA's
    esp_seq: int = 0  # first packet), which tell a loss at the switch to a new SA apart


def read_pcap(data: bytes) -> Iterator[Packet]:
    """The IP packets of a classic pcap capture (Ethernet link type); others are skipped."""
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"unsupported link type {linktype}")
    offset = 24
    record = struct.Struct(endian + "IIII")
    while offset + record.size <= len(data):
        sec, frac, caplen, _ = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset : offset + caplen]
        offset += caplen
        stamp = sec + frac / (1e9 if nanos else 1e6)
        packet = _decode_ethernet(stamp, frame)
        if packet is not None:
            yield packet


def _decode_ethernet(stamp: float, frame: bytes) -> Packet | None:
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    body = frame[14:]
    if ethertype == ETH_VLAN and len(body) >= 4:
        ethertype = struct.unpack("!H", body[2:4])[0]
        body = body[4:]
    if ethertype == ETH_IPV4 and len(body) >= 20:
        ihl = (body[0] & 0x0F) * 4
        proto = body[9]
        src = str(ipaddress.IPv4Address(body[12:16]))
        dst = str(ipaddress.IPv4Address(body[16:20]))
        length, flags = struct.unpack("!H2xH", body[2:8])
        packet = _decode_l4(stamp, src, dst, proto, body[ihl:])
        return replace(packet, length=length, fragment=bool(flags & 0x3FFF))  # MF, offset
    if ethertype == ETH_IPV6 and len(body) >= 40:
        proto = body[6]
        src = str(ipaddress.IPv6Address(body[8:24]))
        dst = str(ipaddress.IPv6Address(body[24:40]))
        packet = _decode_l4(stamp, src, dst, proto, body[40:])
        length = 40 + struct.unpack("!H", body[4:6])[0]
        return replace(packet, length=length, fragment=proto == IPV6_FRAGMENT)
    return None


def _decode_l4(stamp: float, src: str, dst: str, proto: int, l4: bytes) -> Packet:
    if proto == ESP:
        return _esp(stamp, src, dst, l4)
    if proto == UDP and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        data = l4[8:]
        natt = NAT_T_PORT in (sport, dport)
        # RFC 3948: ESP-in-UDP unless the payload starts with the 4-byte non-ESP marker
        # (IKE) or is a one-byte NAT-keepalive.
        if natt and len(data) > 4 and data[:4] != b"\0\0\0\0":
            return _esp(stamp, src, dst, data)
        return Packet(stamp, src, dst, False, data)
    return Packet(stamp, src, dst, False, l4)


def _esp(stamp: float, src: str, dst: str, header: bytes) -> Packet:
    spi, seq = struct.unpack("!II", header[:8]) if len(header) >= 8 else (0, 0)
    return Packet(stamp, src, dst, True, b"", spi=spi, esp_seq=seq)
