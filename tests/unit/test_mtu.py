"""ESP size arithmetic (``controller.mtu``): figures worked out by hand from RFC 4303/4106.

The lab's MTU drill (tests/lab/test_lab_pods.py) checks the same figures against the kernel:
the largest packet passes whole, one byte more does not.
"""

from __future__ import annotations

import pytest

from controller.mtu import Cipher, cipher_of, esp_packet, max_inner_packet, mtu_facts

GCM = Cipher(iv=8, block=4, icv=16)


def test_gcm_tunnel_ipv4_adds_54_bytes_to_a_full_packet() -> None:
    # 20 outer IP + 8 ESP header + 8 IV + (1446 + 2 trailer = 1448, a multiple of 4) + 16 tag
    assert esp_packet(1446, GCM, tunnel=True, version=4, udp=False) == 1500
    assert esp_packet(1447, GCM, tunnel=True, version=4, udp=False) > 1500
    assert max_inner_packet(1500, GCM, tunnel=True, version=4, udp=False) == 1446


def test_transport_keeps_the_ip_header_so_costs_20_bytes_less() -> None:
    assert max_inner_packet(1500, GCM, tunnel=False, version=4, udp=False) == 1466


def test_udp_encapsulation_and_ipv6_cost_their_headers() -> None:
    assert max_inner_packet(1500, GCM, tunnel=True, version=4, udp=True) == 1438
    assert max_inner_packet(1500, GCM, tunnel=True, version=6, udp=False) == 1426


def test_cbc_pads_to_its_16_byte_block() -> None:
    cbc = cipher_of("aes256-sha256")
    assert cbc == Cipher(iv=16, block=16, icv=16)
    # 20 + 8 + 16 IV + padded + 16 ICV <= 1500: padded <= 1440, a multiple of 16
    assert max_inner_packet(1500, cbc, tunnel=True, version=4, udp=False) == 1438


@pytest.mark.parametrize(("proposal", "expected"), [
    ("aes128gcm16", GCM),
    ("aes256gcm16-modp2048!", GCM),
    ("aes128gcm", GCM),
    ("aes128gcm8", Cipher(iv=8, block=4, icv=8)),
    ("chacha20poly1305", GCM),
    ("aes128ctr-sha1", Cipher(iv=8, block=4, icv=12)),
    # a proposal the peer may take any part of: the worst of its algorithms
    ("aes128gcm8-aes256gcm16", GCM),
    ("aes128-3des-sha1-sha512", Cipher(iv=16, block=16, icv=32)),
])
def test_proposals_are_sized_by_their_worst_algorithm(proposal: str, expected: Cipher) -> None:
    assert cipher_of(proposal) == expected


@pytest.mark.parametrize("proposal", ["aes256", "serpent256-sha256", ""])
def test_unknown_or_incomplete_proposals_are_refused(proposal: str) -> None:
    with pytest.raises(ValueError, match="cannot size ESP proposal"):
        cipher_of(proposal)


def test_the_worst_proposal_of_a_policy_decides() -> None:
    facts = mtu_facts(1500, ["aes128gcm16", "aes256-sha256"], tunnel=True, version=4, udp=False)
    assert facts.max_inner == 1438
    assert facts.overhead == 62
