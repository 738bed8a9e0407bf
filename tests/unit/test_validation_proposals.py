"""strongSwan proposals: unknown keywords name the token, structural mistakes say what to add."""

from __future__ import annotations

import pytest

from controller.validation.proposals import (
    KEYWORDS,
    Protocol,
    check_proposals,
    parse_proposal,
    parse_proposals,
)

IKE = "spec.ike.proposals"
ESP = "spec.esp.proposals"


def error_lines(values: list[object], protocol: Protocol, path: str) -> list[str]:
    return [str(f) for f in check_proposals(values, protocol, path) if f.severity == "error"]


@pytest.mark.parametrize(
    ("protocol", "proposal", "expected"),
    [
        pytest.param(
            "ike",
            "aes128-sha256",
            f"{IKE}[0]: IKE proposal 'aes128-sha256' has no DH "
            "group; add one (e.g. modp2048, ecp256, x25519)",
            id="ike-no-dh",
        ),
        pytest.param(
            "ike",
            "aes128-sha256-modpnone",
            f"{IKE}[0]: IKE proposal "
            "'aes128-sha256-modpnone' has no DH group; add one (e.g. modp2048, ecp256, "
            "x25519)",
            id="ike-none-is-no-dh",
        ),
        pytest.param(
            "ike",
            "aes129-sha256-modp2048",
            f"{IKE}[0]: unknown keyword 'aes129' (did you mean 'aes192'?)",
            id="ike-unknown-cipher",
        ),
        pytest.param(
            "esp",
            "aes128gcm17!",
            f"{ESP}[0]: unknown keyword 'aes128gcm17' (did you mean 'aes128gcm16'?)",
            id="esp-unknown-aead",
        ),
        pytest.param(
            "esp",
            "aes256-sha257",
            f"{ESP}[0]: unknown keyword 'sha257' (did you mean 'sha256'?)",
            id="esp-unknown-integrity",
        ),
        pytest.param(
            "esp",
            "rot13-sha256",
            f"{ESP}[0]: unknown keyword 'rot13'; expected "
            "strongSwan keywords for encryption (e.g. aes128gcm16, aes256), integrity "
            "for non-AEAD ciphers (e.g. sha256), optional DH group for PFS, optional "
            "esn/noesn",
            id="esp-unknown-far-off",
        ),
        pytest.param(
            "ike",
            "AES128-SHA256-MODP2048",
            f"{IKE}[0]: unknown keyword 'AES128' (keywords are lower case: did you mean 'aes128'?)",
            id="upper-case",
        ),
        pytest.param(
            "esp",
            "aes128",
            f"{ESP}[0]: ESP proposal 'aes128' uses non-AEAD cipher "
            "'aes128' without an integrity algorithm; add one (e.g. sha256) or use an "
            "AEAD cipher (e.g. aes128gcm16)",
            id="esp-classic-no-integrity",
        ),
        pytest.param(
            "ike",
            "aes256-modp2048",
            f"{IKE}[0]: IKE proposal 'aes256-modp2048' uses "
            "non-AEAD cipher 'aes256' without an integrity algorithm; add one (e.g. "
            "sha256) or use an AEAD cipher (e.g. aes128gcm16)",
            id="ike-classic-no-integrity",
        ),
        pytest.param(
            "esp",
            "aes128gcm16-sha256",
            f"{ESP}[0]: ESP proposal 'aes128gcm16-sha256' "
            "combines AEAD cipher 'aes128gcm16' with integrity algorithm 'sha256'; AEAD "
            "ciphers authenticate by themselves, remove the integrity algorithm",
            id="esp-aead-with-integrity",
        ),
        pytest.param(
            "esp",
            "aes128gcm16-aes128-sha256",
            f"{ESP}[0]: ESP proposal "
            "'aes128gcm16-aes128-sha256' mixes AEAD (aes128gcm16) and classic (aes128) "
            "ciphers; use separate proposals",
            id="esp-aead-mixed-with-classic",
        ),
        pytest.param(
            "ike",
            "aes256gcm16-modp2048",
            f"{IKE}[0]: IKE proposal "
            "'aes256gcm16-modp2048' uses AEAD cipher 'aes256gcm16' without a PRF; add one"
            " (e.g. prfsha256)",
            id="ike-aead-no-prf",
        ),
        pytest.param(
            "esp",
            "sha256-modp2048",
            f"{ESP}[0]: ESP proposal 'sha256-modp2048' has no encryption algorithm",
            id="esp-no-cipher",
        ),
        pytest.param(
            "esp",
            "null-sha256",
            f"{ESP}[0]: 'null' is not allowed: null encryption sends protected traffic unencrypted",
            id="esp-null-cipher",
        ),
        pytest.param(
            "esp",
            "aes128gmac",
            f"{ESP}[0]: 'aes128gmac' is not allowed: AES-GMAC "
            "authenticates only and sends traffic unencrypted",
            id="esp-gmac",
        ),
        pytest.param(
            "ike",
            "aes128-sha256-modpnull",
            f"{IKE}[0]: 'modpnull' is not allowed: "
            "modpnull is for testing and provides no key exchange",
            id="ike-modpnull",
        ),
        pytest.param(
            "esp",
            "aes128-sha256-prfsha256",
            f"{ESP}[0]: 'prfsha256' is a PRF, which "
            "ESP proposals do not use; remove it from 'aes128-sha256-prfsha256'",
            id="esp-with-prf",
        ),
        pytest.param(
            "ike",
            "aes128-sha256-modp2048-esn",
            f"{IKE}[0]: 'esn' applies to ESP only;"
            " remove it from IKE proposal 'aes128-sha256-modp2048-esn'",
            id="ike-esn",
        ),
        pytest.param(
            "esp",
            "aes128gcm16!-esn",
            f"{ESP}[0]: '!' may only end a proposal ('aes128gcm16!-esn')",
            id="bang-in-middle",
        ),
        pytest.param(
            "esp",
            "aes128gcm16--esn",
            f"{ESP}[0]: empty keyword at position 2 in 'aes128gcm16--esn'",
            id="empty-keyword",
        ),
        pytest.param(
            "esp",
            "aes128gcm16 esn",
            f"{ESP}[0]: proposal 'aes128gcm16 esn' is empty or contains whitespace",
            id="whitespace",
        ),
        pytest.param(
            "esp", "", f"{ESP}[0]: proposal '' is empty or contains whitespace", id="empty-string"
        ),
        pytest.param(
            "ike", 2048, f"{IKE}[0]: expected a proposal string, got 2048", id="not-a-string"
        ),
    ],
)
def test_bad_proposals_are_errors_naming_the_token(
    protocol: Protocol, proposal: object, expected: str
) -> None:
    path = IKE if protocol == "ike" else ESP
    assert expected in error_lines([proposal], protocol, path)


def test_an_empty_proposal_list_is_an_error() -> None:
    assert error_lines([], "esp", ESP) == [f"{ESP}: at least one ESP proposal is required"]


@pytest.mark.parametrize(
    ("protocol", "proposal", "expected"),
    [
        pytest.param(
            "ike",
            "3des-sha256-modp2048",
            "'3des': 3DES has a 64-bit block size and is considered weak",
            id="3des",
        ),
        pytest.param("esp", "des-sha256", "'des': DES is broken (56-bit key)", id="des"),
        pytest.param("ike", "aes128-md5-modp2048", "'md5': MD5 is broken", id="md5"),
        pytest.param("esp", "aes128-sha1", "'sha1': SHA-1 integrity is deprecated", id="sha1"),
        pytest.param(
            "ike",
            "aes128-sha256-modp1024",
            "'modp1024': MODP group 1024 is below 2048 bits and considered weak",
            id="modp1024",
        ),
        pytest.param(
            "ike",
            "aes128-sha256-modp1536",
            "'modp1536': MODP group 1536 is below 2048 bits and considered weak",
            id="modp1536",
        ),
    ],
)
def test_weak_choices_are_warnings(protocol: Protocol, proposal: str, expected: str) -> None:
    parsed, findings = parse_proposal(proposal, protocol, "p")
    assert parsed is not None
    assert [f.message for f in findings] == [expected]
    assert {f.severity for f in findings} == {"warning"}


@pytest.mark.parametrize(
    ("protocol", "proposal"),
    [
        ("ike", "aes128-sha256-modp2048!"),
        ("ike", "aes256-sha384-ecp384"),
        ("ike", "aes128-aes256-sha256-sha384-prfsha384-modp2048-ecp256-x25519"),
        ("ike", "aes256gcm16-prfsha384-ecp384"),
        ("ike", "chacha20poly1305-prfsha256-curve25519"),
        ("ike", "aes128ctr-aescmac-prfaescmac-modp3072"),
        ("ike", "camellia256-sha512-ecp512bp"),
        ("esp", "aes128gcm16!"),
        ("esp", "aes256gcm16-ecp256-esn"),
        ("esp", "aes128-sha256-modp2048"),
        ("esp", "aes192ccm12-noesn"),
        ("esp", "aes256-sha256_96"),
        ("esp", "aes256ctr-aesxcbc-none"),
        ("esp", "aes256gcm128-x448"),
        ("esp", "camellia128ccm16"),
    ],
)
def test_good_proposals_parse_without_findings(protocol: Protocol, proposal: str) -> None:
    parsed, findings = parse_proposal(proposal, protocol, "p")
    assert findings == []
    assert parsed is not None
    assert parsed.keywords == proposal.removesuffix("!")


def test_parsed_proposal_sorts_transforms_by_kind() -> None:
    (parsed,) = parse_proposals(["aes128-sha256-prfsha256-modp2048-x25519!"], "ike")
    assert parsed.strict
    assert parsed.encryption == ("aes128",)
    assert parsed.integrity == ("sha256",)
    assert parsed.prf == ("prfsha256",)
    assert parsed.key_exchange == ("modp2048", "x25519")


def test_parse_proposals_refuses_invalid_input() -> None:
    with pytest.raises(ValueError, match="unknown keyword 'aes129'"):
        parse_proposals(["aes129-sha256-modp2048"], "ike")


def test_duplicate_proposal_is_a_warning() -> None:
    findings = check_proposals(["aes128gcm16!", "aes128gcm16"], "esp", ESP)
    assert [str(f) for f in findings] == [f"{ESP}[1]: duplicate of {ESP}[0]"]
    assert findings[0].severity == "warning"


@pytest.mark.parametrize(
    "keyword",
    [
        "aes128",
        "aes192",
        "aes256",
        "aes128ctr",
        "aes256ctr",
        "aes128gcm8",
        "aes128gcm64",
        "aes192gcm12",
        "aes192gcm96",
        "aes256gcm16",
        "aes256gcm128",
        "aes128ccm8",
        "aes256ccm16",
        "chacha20poly1305",
        "camellia128",
        "camellia256ctr",
        "camellia192ccm12",
        "3des",
        "des",
        "blowfish",
        "null",
        "sha1",
        "sha256",
        "sha384",
        "sha512",
        "md5",
        "aesxcbc",
        "aescmac",
        "sha256_96",
        "prfsha1",
        "prfsha256",
        "prfsha384",
        "prfsha512",
        "prfmd5",
        "prfaesxcbc",
        "prfaescmac",
        "modp768",
        "modp1024",
        "modp1536",
        "modp2048",
        "modp3072",
        "modp4096",
        "modp6144",
        "modp8192",
        "modp1024s160",
        "modp2048s224",
        "modp2048s256",
        "ecp192",
        "ecp224",
        "ecp256",
        "ecp384",
        "ecp521",
        "ecp224bp",
        "ecp256bp",
        "ecp384bp",
        "ecp512bp",
        "curve25519",
        "x25519",
        "curve448",
        "x448",
        "esn",
        "noesn",
    ],
)
def test_strongswan_keywords_are_known(keyword: str) -> None:
    assert keyword in KEYWORDS
