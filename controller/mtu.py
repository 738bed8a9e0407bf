"""What ESP costs in packet size, and the largest inner packet that still fits. Pure.

ESP (RFC 4303) wraps a payload as: ESP header (SPI, sequence: 8 bytes), the cipher's IV, the
payload padded so that it, the pad-length and next-header bytes (2) fill whole cipher blocks
(4 bytes for the AEAD/stream modes), then the integrity check value. Transport mode protects
the packet's own payload (the IP header stays); tunnel mode carries the whole inner packet
behind a new outer IP header. UDP encapsulation (NAT traversal, or forced) adds 8 bytes.

``max_inner_packet`` is the largest inner IP packet (what a pod's interface may send) whose ESP
packet still fits the node's interface MTU, for the worst proposal of a policy: the CNI MTU to
configure in Tunnel mode. In Transport mode the same arithmetic gives the largest packet a node
may send between node addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ESP_HEADER = 8
TRAILER = 2  # pad length + next header
UDP_HEADER = 8
IP_HEADER = {4: 20, 6: 40}


@dataclass(frozen=True)
class Cipher:
    iv: int
    block: int  # padding granularity
    icv: int  # integrity check value (AEAD tag, or truncated HMAC)


# AEAD ciphers: 8-byte IV (RFC 4106/4309/7634), the tag length is in the proposal name.
_AEAD = {"aes128gcm16": 16, "aes192gcm16": 16, "aes256gcm16": 16, "aes128gcm12": 12,
         "aes192gcm12": 12, "aes256gcm12": 12, "aes128gcm8": 8, "aes192gcm8": 8,
         "aes256gcm8": 8, "aes128ccm16": 16, "aes192ccm16": 16, "aes256ccm16": 16,
         "aes128ccm12": 12, "aes256ccm12": 12, "aes128ccm8": 8, "aes256ccm8": 8,
         "chacha20poly1305": 16}
_AEAD_ALIASES = {"aes128gcm": "aes128gcm16", "aes192gcm": "aes192gcm16",
                 "aes256gcm": "aes256gcm16", "aes128ccm": "aes128ccm16",
                 "aes256ccm": "aes256ccm16"}
# Block ciphers: IV and block size in bytes.
_BLOCK = {"aes128": 16, "aes192": 16, "aes256": 16, "aes": 16, "3des": 8, "camellia128": 16,
          "camellia192": 16, "camellia256": 16, "aes128ctr": 8, "aes192ctr": 8,
          "aes256ctr": 8}
# Integrity algorithms as strongSwan truncates them for ESP (RFC 4868, RFC 2404).
_INTEGRITY = {"sha1": 12, "sha256": 16, "sha384": 24, "sha512": 32, "md5": 12,
              "aesxcbc": 12, "sha256_96": 12}


def cipher_of(proposal: str) -> Cipher:
    """The worst-case size facts of one ESP proposal (``aes128gcm16``, ``aes256-sha256``, a
    trailing ``!`` ok). A proposal naming several algorithms lets the peer choose any
    combination: the largest IV, block and check value among them."""
    parts = [p for p in proposal.strip().rstrip("!").lower().split("-") if p]
    options: list[Cipher] = []
    for part in parts:
        name = _AEAD_ALIASES.get(part, part)
        if name in _AEAD:
            options.append(Cipher(iv=8, block=4, icv=_AEAD[name]))
    icvs = [_INTEGRITY[p] for p in parts if p in _INTEGRITY]
    blocks = [p for p in parts if p in _BLOCK]
    if blocks and not icvs:
        raise ValueError(f"cannot size ESP proposal {proposal!r}: no integrity algorithm")
    for part in blocks:
        ctr = part.endswith("ctr")
        options += [Cipher(iv=8 if ctr else _BLOCK[part], block=4 if ctr else _BLOCK[part],
                           icv=icv) for icv in icvs]
    if not options:
        raise ValueError(f"cannot size ESP proposal {proposal!r}: no known cipher")
    return Cipher(iv=max(c.iv for c in options), block=max(c.block for c in options),
                  icv=max(c.icv for c in options))


def esp_packet(inner: int, cipher: Cipher, tunnel: bool, version: int, udp: bool) -> int:
    """Size of the ESP packet on the wire for an inner IP packet of ``inner`` bytes."""
    header = IP_HEADER[version]
    payload = inner if tunnel else inner - header  # transport keeps the original IP header
    padded = -(-(payload + TRAILER) // cipher.block) * cipher.block
    return header + (UDP_HEADER if udp else 0) + ESP_HEADER + cipher.iv + padded + cipher.icv


def max_inner_packet(mtu: int, cipher: Cipher, tunnel: bool, version: int, udp: bool) -> int:
    """The largest inner packet whose ESP packet fits ``mtu``."""
    size = mtu
    while size > 0 and esp_packet(size, cipher, tunnel, version, udp) > mtu:
        size -= 1
    return size


@dataclass(frozen=True)
class MtuFacts:
    overhead: int  # worst-case bytes ESP adds to a full-size packet
    max_inner: int  # the largest inner packet that fits the interface MTU


def mtu_facts(mtu: int, proposals: Sequence[str], tunnel: bool, version: int,
              udp: bool) -> MtuFacts:
    """For the worst of a policy's ESP proposals (the peer may choose any of them)."""
    ciphers = [cipher_of(p) for p in proposals]
    inner = min(max_inner_packet(mtu, c, tunnel, version, udp) for c in ciphers)
    return MtuFacts(overhead=mtu - inner, max_inner=inner)
