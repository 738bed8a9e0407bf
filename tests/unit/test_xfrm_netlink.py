"""NETLINK_XFRM encoding and decoding, against bytes the host kernel produced.

The hex fixtures are dump replies captured from Linux 6.18 (``ip xfrm policy add ...`` then an
XFRM_MSG_GETPOLICY dump; XFRM_MSG_ALLOCSPI then an XFRM_MSG_GETSA dump), so decoding is checked
against the kernel's layout, not against our own encoder.
"""

from __future__ import annotations

import struct

import pytest

from controller.xfrm import netlink as nl
from controller.xfrm.model import PortMatch, XfrmPolicy, XfrmState, XfrmTemplate

# ip xfrm policy add src 10.0.0.1/32 dst 10.0.0.0/16 dir out priority 8016
#   tmpl src 0.0.0.0 dst 0.0.0.0 proto esp mode transport reqid 0x534d0001 level use
PROTECT_USE = bytes.fromhex(
    "0a0000000000000000000000000000000a000001000000000000000000000000000000000000000002001020"
    "000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000002e9d0f6b000000000000000000000000501f00000100000001000000000000004400050000000000"
    "0000000000000000000000000000000032000000020000000000000000000000000000000000000001004d53"
    "00000100ffffffffffffffffffffffff0a0010000000000000000000"
)
# ip xfrm policy add src fd00::/64 dst fd00::1/128 proto tcp dport 443 dir in priority 7050
#   mark 0x10 mask 0xff if_id 7
MARKED_V6 = bytes.fromhex(
    "fd000000000000000000000000000001fd00000000000000000000000000000001bbffff000000000a008040"
    "060000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000002e9d0f6b0000000000000000000000008a1b00000800000000000000000000000a00100000000000"
    "000000000c00150010000000ff00000008001f0007000000"
)
# ip xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir fwd priority 50 action block
BLOCK_FWD = bytes.fromhex(
    "0a0200000000000000000000000000000a010000000000000000000000000000000000000000000002001010"
    "000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000002e9d0f6b000000000000000000000000320000001200000002010000000000000a00100000000000"
    "00000000"
)
# ip xfrm policy add src 10.3.0.0/16 dst 10.4.0.0/16 dir out ptype sub priority 7001
SUB_POLICY = bytes.fromhex(
    "0a0400000000000000000000000000000a030000000000000000000000000000000000000000000002001010"
    "000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000002e9d0f6b000000000000000000000000591b00001900000001000000000000000a00100001000000"
    "00000000"
)
# XFRM_MSG_ALLOCSPI src 10.0.0.1 dst 10.0.0.2 proto esp reqid 0x534d0042 (a larval state)
LARVAL_STATE = bytes.fromhex(
    "0a0000020000000000000000000000000a000001000000000000000000000000000000000000000000002020"
    "0000000000000000000000000a0000020000000000000000000000000000131e320000000a00000100000000"
    "0000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000"
    "000000001e000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "e49c0f6b0000000000000000000000000000000000000000000000000000000042004d530200000000000000"
    "0000000010000a00000000000000000000000000"
)


def test_struct_sizes_match_linux_headers() -> None:
    assert nl.POLICY_INFO_SIZE == 168  # struct xfrm_userpolicy_info
    assert nl.SELECTOR_ADDRS.size + nl.SELECTOR_PORTS.size + nl.SELECTOR_REST.size == 56
    assert nl.USER_TMPL.size == 64  # struct xfrm_user_tmpl
    assert nl.SA_ID.size == 24  # struct xfrm_usersa_id
    assert len(nl.pack_policy_id(XfrmPolicy("10.0.0.0/8", "10.0.0.0/8", "in", 7000))) == 64


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            PROTECT_USE,
            XfrmPolicy(
                "10.0.0.1/32",
                "10.0.0.0/16",
                "out",
                8016,
                templates=(XfrmTemplate(reqid=0x534D0001, level="use"),),
                index=1,
            ),
        ),
        (
            MARKED_V6,
            XfrmPolicy(
                "fd00::/64",
                "fd00::1/128",
                "in",
                7050,
                proto=6,
                dport=PortMatch(443),
                mark=0x10,
                mark_mask=0xFF,
                if_id=7,
                index=8,
            ),
        ),
        (
            BLOCK_FWD,
            XfrmPolicy("10.1.0.0/16", "10.2.0.0/16", "fwd", 50, action="block", index=0x12),
        ),
    ],
    ids=["protect-level-use", "ipv6-ports-mark-ifid", "fwd-block"],
)
def test_policies_decode_from_kernel_bytes(body: bytes, expected: XfrmPolicy) -> None:
    assert nl.unpack_policy(body) == expected


def test_sub_policies_are_not_read_as_ours() -> None:
    assert nl.unpack_policy(SUB_POLICY) is None


def test_socket_policies_are_skipped() -> None:
    body = bytearray(PROTECT_USE)
    direction_offset = nl.SELECTOR_SIZE + nl.LIFETIME_CFG.size + nl.LIFETIME_CUR.size + 8
    assert body[direction_offset] == 1  # out
    body[direction_offset] = 3  # XFRM_POLICY_MAX + in: a per-socket policy
    assert nl.unpack_policy(bytes(body)) is None


def test_encoding_our_protect_policy_reproduces_what_ip_wrote() -> None:
    policy = nl.unpack_policy(PROTECT_USE)
    assert policy is not None
    encoded = nl.pack_policy_info(policy.content)
    # Same selector and template; the kernel-filled parts (lifetimes in use, index,
    # policy type attribute) differ by design.
    assert encoded[: nl.SELECTOR_SIZE] == PROTECT_USE[: nl.SELECTOR_SIZE]
    tmpl = nl.parse_attributes(encoded[nl.POLICY_INFO_SIZE :])[nl.XFRMA_TMPL]
    assert tmpl == nl.parse_attributes(PROTECT_USE[nl.POLICY_INFO_SIZE :])[nl.XFRMA_TMPL]


@pytest.mark.parametrize(
    "policy",
    [
        XfrmPolicy(
            "10.0.0.1/32",
            "10.0.0.0/16",
            "out",
            8016,
            templates=(XfrmTemplate(reqid=0x534D0001, level="required"),),
        ),
        XfrmPolicy("::/0", "::/0", "in", 7128, proto=58, sport=PortMatch(135)),
        XfrmPolicy("fd00::/64", "fd00::1/128", "in", 7050, mark=1, mark_mask=3, if_id=9),
        XfrmPolicy(
            "10.0.0.0/8",
            "10.1.0.0/16",
            "out",
            8008,
            templates=(
                XfrmTemplate(0x534D0002, "use", mode="tunnel", src="1.1.1.1", dst="2.2.2.2"),
            ),
        ),
    ],
    ids=["protect", "icmpv6-type", "marked", "tunnel-template"],
)
def test_policies_survive_an_encode_decode_round_trip(policy: XfrmPolicy) -> None:
    assert nl.unpack_policy(nl.pack_policy_info(policy)) == policy


def test_delete_by_index_carries_index_direction_and_mark() -> None:
    policy = XfrmPolicy("10.0.0.0/8", "10.0.0.0/8", "out", 7000, mark=5, mark_mask=7, index=42)
    body = nl.pack_policy_id(policy)
    index, direction = struct.unpack_from("=IB", body, nl.SELECTOR_SIZE)
    assert (index, direction) == (42, 1)
    assert nl.parse_attributes(body[64:])[nl.XFRMA_MARK] == struct.pack("=II", 5, 7)


def test_larval_state_decodes_from_kernel_bytes() -> None:
    assert nl.unpack_state(LARVAL_STATE) == XfrmState(
        src="10.0.0.1", dst="10.0.0.2", spi=0x131E, reqid=0x534D0042, larval=True
    )


def test_state_with_keys_is_not_larval() -> None:
    keyed = LARVAL_STATE + nl.attribute(nl.XFRMA_ALG_AEAD, b"rfc4106(gcm(aes))".ljust(72, b"\0"))
    state = nl.unpack_state(keyed)
    assert state is not None
    assert not state.larval


def test_state_id_names_destination_spi_and_protocol() -> None:
    state = XfrmState(src="10.0.0.1", dst="10.0.0.2", spi=0xC0FFEE01, reqid=0x534D0001)
    assert nl.pack_state_id(state) == (
        bytes([10, 0, 0, 2])
        + bytes(12)
        + bytes.fromhex("c0ffee01")
        + struct.pack("=HB", 2, 50)
        + b"\0"
    )


def test_messages_split_on_aligned_boundaries_and_errors_decode() -> None:
    ack = nl.message(nl.NLMSG_ERROR, 0, 7, struct.pack("=i", 0) + bytes(16))
    refusal = nl.message(nl.NLMSG_ERROR, 0, 8, struct.pack("=i", -17) + bytes(16))
    odd = nl.message(0x10, 0, 9, b"abc")  # 19 bytes, padded to 20 on the wire
    messages = list(nl.parse_messages(odd + b"\0" + ack + refusal))
    assert [(m.type, m.seq) for m in messages] == [(0x10, 9), (2, 7), (2, 8)]
    assert messages[0].body == b"abc"
    assert [nl.error_code(m.body) for m in messages[1:]] == [0, 17]


def test_attributes_are_padded_and_parsed_back() -> None:
    data = nl.attribute(1, b"x") + nl.attribute(2, b"12345")
    assert len(data) == 8 + 12
    assert nl.parse_attributes(data) == {1: b"x", 2: b"12345"}


def test_a_request_carries_its_port_id_and_notifications_tell_whose_change_they_report() -> None:
    ours = nl.message(nl.XFRM_MSG_NEWPOLICY, nl.NLM_F_REQUEST, 7, b"\0" * 4, portid=4242)
    (parsed,) = nl.parse_messages(ours)
    assert (parsed.seq, parsed.portid) == (7, 4242)
    # the kernel's notification of a change echoes the requester's nlmsg_pid
    theirs = nl.message(nl.XFRM_MSG_DELPOLICY, 0, 1, b"\0" * 4, portid=0)  # `ip xfrm` sends 0
    assert not nl.changed_by_others(ours + ours, 4242)
    assert nl.changed_by_others(ours + theirs, 4242)
    assert nl.changed_by_others(ours, 99)
