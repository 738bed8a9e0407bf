"""strongSwan proposal strings (``aes128-sha256-modp2048!``) checked against its keywords.

The keyword table follows strongSwan 5.9's ``proposal_keywords_static.txt``; the structural rules
follow its ``check_proposal()`` (a DH group and a PRF are mandatory in IKE proposals, AEAD and
classic ciphers cannot be mixed) plus two rules of our own that strongSwan does not enforce but
that always indicate a mistake: ESP with a classic cipher and no integrity algorithm (traffic
would be malleable), and an integrity algorithm next to an AEAD cipher (strongSwan silently drops
it). ``null`` encryption is an error too: it sends protected traffic in the clear. Weak but
working choices are warnings.

Keywords are matched case-sensitively (strongSwan's own spelling); a near miss is suggested.
The ``!`` suffix (the PCF add-on's ipsec.conf spelling for "no fallback to defaults") is
accepted and reported as ``strict``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from controller.validation.findings import Finding, error, join_path, warning

Kind = Literal["encryption", "aead", "integrity", "prf", "ke", "esn"]
Protocol = Literal["ike", "esp"]


@dataclass(frozen=True)
class Keyword:
    kind: Kind
    weak: str = ""  # why a working choice is weak ("" = fine)
    forbidden: str = ""  # why strongmesh refuses it although strongSwan parses it


def _table() -> dict[str, Keyword]:
    k: dict[str, Keyword] = {}
    small_block = "has a 64-bit block size and is considered weak"
    k["des"] = Keyword("encryption", weak="DES is broken (56-bit key)")
    k["3des"] = Keyword("encryption", weak=f"3DES {small_block}")
    k["null"] = Keyword(
        "encryption", forbidden="null encryption sends protected traffic unencrypted"
    )
    for cipher in ("aes", "camellia", "serpent", "twofish", "blowfish"):
        weak = f"Blowfish {small_block}" if cipher == "blowfish" else ""
        k[cipher] = Keyword("encryption", weak=weak)
        for size in ("128", "192", "256"):
            k[f"{cipher}{size}"] = k[cipher]
    k["cast128"] = Keyword("encryption", weak=f"CAST-128 {small_block}")
    for size in ("128", "192", "256"):
        k[f"aes{size}ctr"] = Keyword("encryption")
        k[f"camellia{size}ctr"] = Keyword("encryption")
        for mode in ("gcm", "ccm"):
            for icv in ("8", "64", "12", "96", "16", "128", ""):
                k[f"aes{size}{mode}{icv}"] = Keyword("aead")
        for icv in ("8", "64", "12", "96", "16", "128"):
            k[f"camellia{size}ccm{icv}"] = Keyword("aead")
        k[f"aes{size}gmac"] = Keyword(
            "aead", forbidden="AES-GMAC authenticates only and sends traffic unencrypted"
        )
    k["chacha20poly1305"] = Keyword("aead")
    k["chacha20poly1305compat"] = Keyword("aead")
    sha1 = "SHA-1 integrity is deprecated"
    md5 = "MD5 is broken"
    for name in ("sha", "sha1", "sha1_160"):
        k[name] = Keyword("integrity", weak=sha1)
    for name in ("md5", "md5_128"):
        k[name] = Keyword("integrity", weak=md5)
    for name in (
        "sha256", "sha2_256", "sha256_96", "sha2_256_96", "sha384", "sha2_384",
        "sha512", "sha2_512", "aesxcbc", "camelliaxcbc", "aescmac",
    ):  # fmt: skip
        k[name] = Keyword("integrity")
    k["prfsha1"] = Keyword("prf", weak="a SHA-1 PRF is deprecated")
    k["prfmd5"] = Keyword("prf", weak=f"an {md5}")
    for name in ("prfsha256", "prfsha384", "prfsha512", "prfaesxcbc", "prfcamelliaxcbc",
                 "prfaescmac"):
        k[name] = Keyword("prf")
    below = "is below 2048 bits and considered weak"
    k["modp768"] = Keyword("ke", weak=f"MODP group 768 {below}")
    k["modp1024"] = Keyword("ke", weak=f"MODP group 1024 {below}")
    k["modp1536"] = Keyword("ke", weak=f"MODP group 1536 {below}")
    k["modp1024s160"] = Keyword("ke", weak=f"MODP group 1024s160 {below}")
    rfc5114 = "uses RFC 5114 primes of questionable origin"
    k["modp2048s224"] = Keyword("ke", weak=f"modp2048s224 {rfc5114}")
    k["modp2048s256"] = Keyword("ke", weak=f"modp2048s256 {rfc5114}")
    for name in ("modp2048", "modp3072", "modp4096", "modp6144", "modp8192"):
        k[name] = Keyword("ke")
    k["ecp192"] = Keyword("ke", weak="ecp192 offers only 96-bit security")
    for name in ("ecp224", "ecp256", "ecp384", "ecp521", "ecp224bp", "ecp256bp", "ecp384bp",
                 "ecp512bp", "curve25519", "x25519", "curve448", "x448"):
        k[name] = Keyword("ke")
    for name in ("ntru112", "ntru128", "ntru192", "ntru256", "newhope128"):
        k[name] = Keyword("ke", weak=f"{name} is experimental and was removed in strongSwan 6")
    k["modpnull"] = Keyword("ke", forbidden="modpnull is for testing and provides no key exchange")
    # "none"/"modpnone": explicitly no key exchange (ESP without PFS); removed from IKE proposals
    k["none"] = Keyword("ke")
    k["modpnone"] = Keyword("ke")
    k["esn"] = Keyword("esn")
    k["noesn"] = Keyword("esn")
    return k


KEYWORDS: dict[str, Keyword] = _table()
NO_KEY_EXCHANGE = frozenset({"none", "modpnone"})

_EXPECTED = {
    "ike": "encryption (e.g. aes128, aes256gcm16), integrity (e.g. sha256), optional PRF "
    "(e.g. prfsha256) and DH group (e.g. modp2048, ecp256, x25519)",
    "esp": "encryption (e.g. aes128gcm16, aes256), integrity for non-AEAD ciphers "
    "(e.g. sha256), optional DH group for PFS, optional esn/noesn",
}


@dataclass(frozen=True)
class Proposal:
    """A proposal split into its transforms (keywords as written, in order)."""

    text: str
    strict: bool  # ended with "!"
    encryption: tuple[str, ...]
    integrity: tuple[str, ...]
    prf: tuple[str, ...]
    key_exchange: tuple[str, ...]
    esn: tuple[str, ...]

    @property
    def keywords(self) -> str:
        """The proposal without the trailing ``!``, as swanctl wants it."""
        return self.text.removesuffix("!")


def _describe(kind: Kind) -> str:
    return {
        "encryption": "encryption algorithm",
        "aead": "AEAD cipher",
        "integrity": "integrity algorithm",
        "prf": "PRF",
        "ke": "DH group",
        "esn": "ESN setting",
    }[kind]


def parse_proposal(
    text: object, protocol: Protocol, path: str
) -> tuple[Proposal | None, list[Finding]]:
    """Parse one proposal; None when any error was found."""
    label = protocol.upper()
    if not isinstance(text, str):
        return None, [error(path, f"expected a proposal string, got {text!r}", "proposal.type")]
    if not text or text.strip() != text or any(c.isspace() for c in text):
        return None, [
            error(path, f"proposal {text!r} is empty or contains whitespace", "proposal.syntax")
        ]
    strict = text.endswith("!")
    body = text.removesuffix("!")
    if "!" in body:
        return None, [
            error(path, f"'!' may only end a proposal ({text!r})", "proposal.syntax")
        ]
    findings: list[Finding] = []
    by_kind: dict[Kind, list[str]] = {kind: [] for kind in _KINDS}
    for position, token in enumerate(body.split("-")):
        if not token:
            findings.append(
                error(path, f"empty keyword at position {position + 1} in {text!r}",
                      "proposal.syntax")
            )
            continue
        keyword = KEYWORDS.get(token)
        if keyword is None:
            findings.append(error(path, _unknown(token, protocol), "proposal.unknown-keyword"))
            continue
        if keyword.forbidden:
            findings.append(
                error(path, f"'{token}' is not allowed: {keyword.forbidden}", "proposal.forbidden")
            )
        elif keyword.weak:
            findings.append(warning(path, f"'{token}': {keyword.weak}", "proposal.weak"))
        by_kind[keyword.kind].append(token)
    if any(f.severity == "error" for f in findings):
        return None, findings

    ciphers = by_kind["encryption"] + by_kind["aead"]
    aead, classic = by_kind["aead"], by_kind["encryption"]
    exchange = [t for t in by_kind["ke"] if t not in NO_KEY_EXCHANGE]
    structural: list[str] = []
    if not ciphers:
        structural.append(f"{label} proposal {text!r} has no encryption algorithm")
    if aead and classic:
        structural.append(
            f"{label} proposal {text!r} mixes AEAD ({', '.join(aead)}) and classic "
            f"({', '.join(classic)}) ciphers; use separate proposals"
        )
    if aead and by_kind["integrity"]:
        structural.append(
            f"{label} proposal {text!r} combines AEAD cipher '{aead[0]}' with integrity "
            f"algorithm '{by_kind['integrity'][0]}'; AEAD ciphers authenticate by themselves, "
            "remove the integrity algorithm"
        )
    if classic and not aead and not by_kind["integrity"]:
        structural.append(
            f"{label} proposal {text!r} uses non-AEAD cipher '{classic[0]}' without an "
            "integrity algorithm; add one (e.g. sha256) or use an AEAD cipher (e.g. aes128gcm16)"
        )
    if protocol == "ike":
        if not exchange:
            structural.append(
                f"IKE proposal {text!r} has no DH group; add one (e.g. modp2048, ecp256, x25519)"
            )
        if aead and not by_kind["prf"]:
            structural.append(
                f"IKE proposal {text!r} uses AEAD cipher '{aead[0]}' without a PRF; add one "
                "(e.g. prfsha256)"
            )
        if by_kind["esn"]:
            structural.append(
                f"'{by_kind['esn'][0]}' applies to ESP only; remove it from IKE proposal {text!r}"
            )
    elif by_kind["prf"]:
        structural.append(
            f"'{by_kind['prf'][0]}' is a PRF, which ESP proposals do not use; remove it "
            f"from {text!r}"
        )
    if structural:
        return None, findings + [error(path, m, "proposal.structure") for m in structural]
    proposal = Proposal(
        text=text,
        strict=strict,
        encryption=tuple(ciphers),
        integrity=tuple(by_kind["integrity"]),
        prf=tuple(by_kind["prf"]),
        key_exchange=tuple(by_kind["ke"]),
        esn=tuple(by_kind["esn"]),
    )
    return proposal, findings


_KINDS: tuple[Kind, ...] = ("encryption", "aead", "integrity", "prf", "ke", "esn")


def _unknown(token: str, protocol: Protocol) -> str:
    message = f"unknown keyword '{token}'"
    if token.lower() in KEYWORDS:
        return f"{message} (keywords are lower case: did you mean '{token.lower()}'?)"
    close = difflib.get_close_matches(token.lower(), KEYWORDS.keys(), n=1, cutoff=0.75)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    return f"{message}; expected strongSwan keywords for {_EXPECTED[protocol]}"


def check_proposals(values: Sequence[object], protocol: Protocol, path: str) -> list[Finding]:
    """Findings for a list of proposals (the spec's ``ike.proposals`` or ``esp.proposals``)."""
    if not values:
        return [error(path, f"at least one {protocol.upper()} proposal is required",
                      "proposal.empty")]
    findings: list[Finding] = []
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        entry = join_path(path, index)
        if isinstance(value, str) and value.removesuffix("!") in seen:
            first = join_path(path, seen[value.removesuffix("!")])
            findings.append(warning(entry, f"duplicate of {first}", "proposal.duplicate"))
            continue
        _, problems = parse_proposal(value, protocol, entry)
        findings += problems
        if isinstance(value, str):
            seen[value.removesuffix("!")] = index
    return findings


def parse_proposals(values: Sequence[str], protocol: Protocol) -> list[Proposal]:
    """The parsed proposals of an already validated list (raises ValueError otherwise)."""
    result: list[Proposal] = []
    for index, value in enumerate(values):
        proposal, problems = parse_proposal(value, protocol, f"[{index}]")
        if proposal is None:
            raise ValueError("; ".join(str(p) for p in problems if p.severity == "error"))
        result.append(proposal)
    return result


__all__ = [
    "KEYWORDS",
    "Keyword",
    "Proposal",
    "check_proposals",
    "parse_proposal",
    "parse_proposals",
]
