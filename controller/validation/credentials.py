"""Node credentials from the policy's Secret: ``tls.crt``, ``tls.key``, ``ca.crt``.

Checks what made PCF IPsec add-on deployments fail at runtime, before charon sees the files:
unparsable PEM, a CA bundle entry that is not a CA, an instance certificate that does not chain
to the bundle, a key that does not match, an encrypted key (charon has no passphrase), two
certificates of one chain with the same subject or serial number, and the validity window.

Expiry levels (``certificateExpiry``) are *alerts*, not failures: a certificate that expires in
two days still authenticates today, and refusing it would take the node's IPsec down early. So
the levels info/warning/error/critical are reported with severity ``info`` (info level) or
``warning`` (the others), the message naming the level; only an expired (or not yet valid)
certificate is an ``error``. ``expiry_level()`` gives the level itself to callers that map it to
events or metrics.

Paths name the Secret key (``tls.crt``, ``tls.key``, ``ca.crt``); a certificate inside a PEM
bundle is ``key[i]`` (0-based block index), the instance certificate is plain ``tls.crt``.
Pure: no I/O, ``now`` injectable.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from controller.facts import NodeCredentials
from controller.models.policy import CertificateExpiry
from controller.validation.findings import Finding, error, info, join_path, warning

CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
CA_KEY = "ca.crt"

ExpiryLevel = Literal["ok", "info", "warning", "error", "critical", "expired"]

_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----\r?\n?", re.DOTALL
)
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_PRIVATE_KEY_LABELS = (
    "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"
)
# DER content of the OID id-dsa (1.2.840.10040.4.1). DSA is recognised from the PEM itself:
# cryptography deprecates DSA, and loading such a key (or naming its class) warns.
_DSA_OID = bytes.fromhex("2a8648ce380401")
_DSA_REJECTED = ("DSA keys are not supported by strongSwan's IKEv2 authentication; use RSA, "
                 "ECDSA or Ed25519")
_MAX_CHAIN = 8

# strongSwan's short names when it prints a DN (identification.c / oid.txt).
_DN_NAMES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "S",
    NameOID.GIVEN_NAME: "G",
    NameOID.TITLE: "T",
    NameOID.INITIALS: "I",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.DN_QUALIFIER: "dnQualifier",
}


def strongswan_dn(name: x509.Name) -> str:
    """A DN as strongSwan prints and parses it: ``C=US, O=strongmesh, CN=node-1`` (cert order)."""
    parts = []
    for rdn in name.rdns:
        for attribute in rdn:
            label = _DN_NAMES.get(attribute.oid, attribute.oid.dotted_string)
            value = attribute.value if isinstance(attribute.value, str) else "?"
            parts.append(f"{label}={value}")
    return ", ".join(parts)


def expiry_level(
    cert_not_after: datetime, expiry: CertificateExpiry, now: datetime | None = None
) -> ExpiryLevel:
    """The alert level of a certificate ending at ``cert_not_after`` (thresholds in days)."""
    now = now or datetime.now(UTC)
    left = cert_not_after - now
    if left <= timedelta(0):
        return "expired"
    for level, days in (
        ("critical", expiry.critical_days),
        ("error", expiry.error_days),
        ("warning", expiry.warn_days),
        ("info", expiry.info_days),
    ):
        if left <= timedelta(days=days):
            return level  # type: ignore[return-value]
    return "ok"


@dataclass(frozen=True)
class _Cert:
    path: str
    cert: x509.Certificate
    pem: str

    @property
    def subject(self) -> str:
        return strongswan_dn(self.cert.subject)

    @property
    def label(self) -> str:
        return f"{self.path} ({self.subject or 'empty subject'})"


def _blocks(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """PEM blocks (label, full text) and a problem with the framing, if any."""
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(text)]
    begins = _BEGIN.findall(text)
    if len(begins) != len(blocks):
        return blocks, "a PEM block has a BEGIN line without a matching END line (truncated?)"
    return blocks, None


def _short(exc: Exception) -> str:
    """cryptography's parse error without its FAQ link."""
    text = re.sub(r"\s*See https?://\S+ for more details\.", "", str(exc)).strip()
    return text or type(exc).__name__


def _load_certs(key: str, text: str | None, findings: list[Finding]) -> list[_Cert]:
    if text is None or not text.strip():
        findings.append(error(key, "missing or empty; the Secret must hold this key",
                              "credentials.missing"))
        return []
    blocks, framing = _blocks(text)
    if framing:
        findings.append(error(key, framing, "credentials.pem"))
    certs: list[_Cert] = []
    cert_index = 0
    for label, block in blocks:
        if label in _PRIVATE_KEY_LABELS:
            findings.append(
                error(key, f"contains a {label} block; {key} must hold certificates only "
                      "(and the key leaks to whoever can read it)", "credentials.key-in-cert")
            )
            continue
        if label != "CERTIFICATE":
            findings.append(
                warning(key, f"ignoring a PEM block of type {label!r}", "credentials.pem-extra")
            )
            continue
        path = key if key == CERT_KEY and cert_index == 0 else join_path(key, cert_index)
        cert_index += 1
        try:
            cert = x509.load_pem_x509_certificate(block.encode())
        except ValueError as exc:
            findings.append(
                error(path, f"certificate does not parse: {_short(exc)}", "credentials.parse")
            )
            continue
        certs.append(_Cert(path, cert, cert.public_bytes(serialization.Encoding.PEM).decode()))
    if not blocks and not framing:
        findings.append(
            error(key, "no PEM certificate found (expected -----BEGIN CERTIFICATE----- blocks)",
                  "credentials.pem")
        )
    return certs


def _load_key(
    text: str | None, findings: list[Finding]
) -> tuple[object | None, str]:
    if text is None or not text.strip():
        findings.append(error(KEY_KEY, "missing or empty; the Secret must hold this key",
                              "credentials.missing"))
        return None, ""
    blocks, framing = _blocks(text)
    if framing:
        findings.append(error(KEY_KEY, framing, "credentials.pem"))
    keys = [(label, block) for label, block in blocks if label in _PRIVATE_KEY_LABELS]
    if not keys:
        if not framing:
            findings.append(error(KEY_KEY, "no PEM private key found (expected a -----BEGIN "
                                  "PRIVATE KEY----- block)", "credentials.pem"))
        return None, ""
    if len(keys) > 1:
        findings.append(error(KEY_KEY, f"holds {len(keys)} private keys; expected exactly one",
                              "credentials.key-count"))
        return None, ""
    label, block = keys[0]
    if label == "ENCRYPTED PRIVATE KEY" or "Proc-Type: 4,ENCRYPTED" in block:
        findings.append(
            error(KEY_KEY, "the private key is encrypted with a passphrase; charon loads it "
                  "unattended, so store it unencrypted (the Secret is the protection)",
                  "credentials.key-encrypted")
        )
        return None, ""
    if _is_dsa_key(label, block):
        findings.append(error(KEY_KEY, _DSA_REJECTED, "credentials.key-type"))
        return None, ""
    try:
        # skipping the RSA consistency check (primality tests) saves ~100 ms per call; we only
        # compare the public half with the certificate, charon does the signing
        key = serialization.load_pem_private_key(
            block.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        findings.append(
            error(KEY_KEY, f"private key does not parse: {_short(exc)}", "credentials.parse")
        )
        return None, ""
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        findings.append(warning(KEY_KEY, f"RSA key of {key.key_size} bits is weak; use 2048 "
                                "bits or more", "credentials.key-weak"))
    if not isinstance(
        key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
              ed448.Ed448PrivateKey)
    ):
        findings.append(error(KEY_KEY, f"unsupported key type {type(key).__name__}",
                              "credentials.key-type"))
        return None, ""
    text = block.replace("\r\n", "\n")
    return key, text if text.endswith("\n") else text + "\n"


def _is_dsa_key(label: str, block: str) -> bool:
    """Whether a PEM private key is DSA: by its label, or by a PKCS#8 algorithm identifier."""
    if label == "DSA PRIVATE KEY":
        return True
    if label != "PRIVATE KEY":
        return False
    body = "".join(line for line in block.splitlines() if not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        return False  # the loader reports the broken encoding
    return _pkcs8_algorithm_oid(der) == _DSA_OID


def _der_header(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, content start, content length) of the DER element at ``at``; IndexError if cut."""
    tag, first = der[at], der[at + 1]
    if first < 0x80:
        return tag, at + 2, first
    count = first & 0x7F
    return tag, at + 2 + count, int.from_bytes(der[at + 2:at + 2 + count], "big")


def _pkcs8_algorithm_oid(der: bytes) -> bytes | None:
    """The OID content bytes of PrivateKeyInfo.privateKeyAlgorithm (RFC 5208), or None."""
    try:
        tag, at, _ = _der_header(der, 0)  # PrivateKeyInfo ::= SEQUENCE
        if tag != 0x30:
            return None
        tag, start, length = _der_header(der, at)  # version INTEGER
        if tag != 0x02:
            return None
        tag, at, _ = _der_header(der, start + length)  # AlgorithmIdentifier ::= SEQUENCE
        if tag != 0x30:
            return None
        tag, start, length = _der_header(der, at)  # algorithm OBJECT IDENTIFIER
        return der[start:start + length] if tag == 0x06 else None
    except IndexError:
        return None


def _is_ca(cert: x509.Certificate) -> str:
    """Why the certificate cannot act as a CA ("" when it can)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "it has no basicConstraints extension (CA:TRUE is required)"
    if not constraints.ca:
        return "its basicConstraints say CA:FALSE"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ""  # no keyUsage extension: every usage is allowed (RFC 5280)
    if not usage.key_cert_sign:
        return "its keyUsage lacks keyCertSign"
    return ""


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography refuses some algorithms strongSwan still accepts (SHA-1 signatures of
        # old PCF-era CAs); verify those directly, the weak hash is warned about separately
        return _verify_legacy(child, parent)
    return True


def _verify_legacy(child: x509.Certificate, parent: x509.Certificate) -> bool:
    public = parent.public_key()
    algorithm = child.signature_hash_algorithm
    try:
        if isinstance(public, rsa.RSAPublicKey) and algorithm is not None:
            parameters = child.signature_algorithm_parameters
            if not isinstance(parameters, padding.PKCS1v15 | padding.PSS):
                return False
            public.verify(child.signature, child.tbs_certificate_bytes, parameters, algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey) and algorithm is not None:
            public.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _build_chain(
    leaf: _Cert, intermediates: Sequence[_Cert], anchors: Sequence[_Cert]
) -> list[_Cert] | None:
    """leaf, intermediates..., trust anchor from ca.crt; None when no path exists."""
    anchor_ders = {a.cert.public_bytes(serialization.Encoding.DER) for a in anchors}
    candidates = [*intermediates, *anchors]
    chain = [leaf]
    while len(chain) <= _MAX_CHAIN:
        current = chain[-1].cert
        if len(chain) > 1 and current.public_bytes(serialization.Encoding.DER) in anchor_ders:
            return chain
        issuers = [c for c in candidates if c not in chain and _issued_by(current, c.cert)]
        if not issuers:
            return None
        # prefer a trust anchor (ends the chain) over an intermediate
        issuers.sort(key=lambda c: c.cert.public_bytes(serialization.Encoding.DER)
                     not in anchor_ders)
        chain.append(issuers[0])
    return None


def _explain_no_chain(
    leaf: _Cert, intermediates: Sequence[_Cert], anchors: Sequence[_Cert]
) -> str:
    issuer = strongswan_dn(leaf.cert.issuer)
    same_name = [c for c in (*intermediates, *anchors) if c.cert.subject == leaf.cert.issuer]
    if same_name:
        names = ", ".join(c.path for c in same_name)
        return (f"the instance certificate is not signed by any trusted CA: {names} has the "
                f"issuer's name ({issuer}) but a different key (was the CA re-created?)")
    trusted = "; ".join(a.subject for a in anchors) or "none"
    return (f"the instance certificate was issued by '{issuer}', which is neither in {CA_KEY} "
            f"(trusted: {trusted}) nor an intermediate in {CERT_KEY}")


def _public_der(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    der: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _check_validity(c: _Cert, now: datetime, findings: list[Finding]) -> bool:
    not_before, not_after = c.cert.not_valid_before_utc, c.cert.not_valid_after_utc
    if not_after <= now:
        findings.append(error(c.path, f"certificate {c.subject!r} expired on "
                              f"{not_after:%Y-%m-%d %H:%M} UTC", "credentials.expired"))
        return False
    if not_before > now:
        findings.append(error(c.path, f"certificate {c.subject!r} is not valid before "
                              f"{not_before:%Y-%m-%d %H:%M} UTC (check the clock or the "
                              "certificate)", "credentials.not-yet-valid"))
        return False
    return True


def _check_duplicates(chain: Sequence[_Cert], findings: list[Finding]) -> None:
    for i, first in enumerate(chain):
        for second in chain[i + 1:]:
            if first.cert.subject == second.cert.subject:
                findings.append(error(
                    second.path,
                    f"has the same subject as {first.path} ({first.subject!r}); every "
                    "certificate of a chain needs its own subject (an instance certificate "
                    "named like its CA looks self-signed to strongSwan)",
                    "credentials.duplicate-subject",
                ))
            if first.cert.serial_number == second.cert.serial_number:
                findings.append(error(
                    second.path,
                    f"has the same serial number as {first.path} "
                    f"({first.cert.serial_number:#x}); give every certificate a unique serial",
                    "credentials.duplicate-serial",
                ))


def _expiry_finding(
    chain: Sequence[_Cert], expiry: CertificateExpiry, now: datetime
) -> Finding | None:
    soonest = min(chain, key=lambda c: c.cert.not_valid_after_utc)
    not_after = soonest.cert.not_valid_after_utc
    level = expiry_level(not_after, expiry, now)
    if level in ("ok", "expired"):
        return None
    days = {"info": expiry.info_days, "warning": expiry.warn_days, "error": expiry.error_days,
            "critical": expiry.critical_days}[level]
    left = not_after - now
    count, unit = (left.days, "day") if left.days else (int(left.total_seconds() // 3600), "hour")
    when = f"{count} {unit}" + ("" if count == 1 else "s")
    message = (f"certificate {soonest.subject!r} expires in {when} ({not_after:%Y-%m-%d} UTC; "
               f"{level} level: within {days} days); renew it")
    code = f"credentials.expiry-{level}"
    if level == "info":
        return info(soonest.path, message, code)
    return warning(soonest.path, message, code)


def _signature_warnings(chain: Sequence[_Cert], findings: list[Finding]) -> None:
    for c in chain[:-1]:  # the anchor's self-signature is not checked by anyone
        algorithm = c.cert.signature_hash_algorithm
        if algorithm is not None and algorithm.name in ("md5", "sha1"):
            findings.append(warning(c.path, f"signed with {algorithm.name.upper()}, which is "
                                    "weak; reissue it with SHA-256", "credentials.weak-signature"))


def validate_credentials(
    secret_data: Mapping[str, str],
    expiry: CertificateExpiry,
    now: datetime | None = None,
) -> tuple[NodeCredentials | None, list[Finding]]:
    """Check decoded Secret data; credentials ready for charon, or None when any error."""
    now = now or datetime.now(UTC)
    findings: list[Finding] = []
    tls_certs = _load_certs(CERT_KEY, secret_data.get(CERT_KEY), findings)
    key, key_pem = _load_key(secret_data.get(KEY_KEY), findings)
    cas = _load_certs(CA_KEY, secret_data.get(CA_KEY), findings)

    usable_cas = []
    for ca in cas:
        why = _is_ca(ca.cert)
        if why:
            findings.append(error(ca.path, f"certificate {ca.subject!r} is not a CA: {why}; "
                                  f"{CA_KEY} must hold CA certificates only", "credentials.not-ca"))
        else:
            usable_cas.append(ca)

    leaf = tls_certs[0] if tls_certs and tls_certs[0].path == CERT_KEY else None
    if leaf is None:
        return None, findings
    intermediates = tls_certs[1:]

    if key is not None and _public_der(key) != leaf.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        findings.append(error(KEY_KEY, f"the private key does not match the certificate in "
                              f"{CERT_KEY} ({leaf.subject!r})", "credentials.key-mismatch"))

    chain = _build_chain(leaf, intermediates, usable_cas) if usable_cas else None
    if chain is None:
        if usable_cas:
            findings.append(error(CERT_KEY, _explain_no_chain(leaf, intermediates, usable_cas),
                                  "credentials.untrusted"))
        _check_duplicates(tls_certs, findings)
        _check_validity(leaf, now, findings)
        return None, findings

    for c in chain[1:-1]:
        why = _is_ca(c.cert)
        if why:
            findings.append(error(c.path, f"intermediate {c.subject!r} is not a CA: {why}",
                                  "credentials.not-ca"))
    for c in intermediates:
        if c not in chain:
            findings.append(warning(c.path, f"certificate {c.subject!r} is not part of the "
                                    "instance certificate's chain", "credentials.unused"))
    _check_duplicates(chain, findings)
    valid = [_check_validity(c, now, findings) for c in chain]
    for ca in usable_cas:
        if ca not in chain and ca.cert.not_valid_after_utc <= now:
            findings.append(warning(ca.path, f"CA certificate {ca.subject!r} expired on "
                                    f"{ca.cert.not_valid_after_utc:%Y-%m-%d} UTC; remove it "
                                    "from the bundle", "credentials.ca-expired"))
    _signature_warnings(chain, findings)
    if all(valid):
        expiring = _expiry_finding(chain, expiry, now)
        if expiring is not None:
            findings.append(expiring)

    if any(f.severity == "error" for f in findings):
        return None, findings
    credentials = NodeCredentials(
        cert_pem=leaf.pem,
        chain_pems=tuple(c.pem for c in intermediates if c in chain),
        key_pem=key_pem,
        ca_pems=tuple(ca.pem for ca in cas),
        subject=leaf.subject,
    )
    return credentials, findings


@dataclass(frozen=True)
class IssuerCA:
    """The issuing CA of per-node certificates, from an issuer Secret, as PEM text."""

    cert_pem: str
    key_pem: str
    bundle_pems: tuple[str, ...]  # every CA the nodes trust (the signing one among them)
    subject: str

    def __repr__(self) -> str:  # never print key material, whoever logs the object
        return f"IssuerCA(subject={self.subject!r}, trusted={len(self.bundle_pems)})"


def validate_issuer(
    secret_data: Mapping[str, str],
    expiry: CertificateExpiry,
    now: datetime | None = None,
) -> tuple[IssuerCA | None, list[Finding]]:
    """Check an issuer Secret: tls.crt a CA certificate, tls.key its key, ca.crt (optional)
    CA certificates that include it. The CA's expiry levels are reported like a node's."""
    now = now or datetime.now(UTC)
    findings: list[Finding] = []
    certs = _load_certs(CERT_KEY, secret_data.get(CERT_KEY), findings)
    key, key_pem = _load_key(secret_data.get(KEY_KEY), findings)
    bundle = _load_certs(CA_KEY, secret_data.get(CA_KEY), findings) if secret_data.get(
        CA_KEY) else []
    ca = certs[0] if certs and certs[0].path == CERT_KEY else None
    if ca is None:
        return None, findings
    why = _is_ca(ca.cert)
    if why:
        findings.append(error(CERT_KEY, f"certificate {ca.subject!r} cannot sign node "
                              f"certificates: {why}", "credentials.not-ca"))
    if key is not None and _public_der(key) != ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        findings.append(error(KEY_KEY, f"the private key does not match the CA certificate in "
                              f"{CERT_KEY} ({ca.subject!r})", "credentials.key-mismatch"))
    for other in bundle:
        other_why = _is_ca(other.cert)
        if other_why:
            findings.append(error(other.path, f"certificate {other.subject!r} is not a CA: "
                                  f"{other_why}", "credentials.not-ca"))
    if bundle and all(b.cert != ca.cert for b in bundle):
        findings.append(error(CA_KEY, f"does not include the signing CA {ca.subject!r} of "
                              f"{CERT_KEY}: nodes would not trust the certificates it signs",
                              "credentials.issuer-untrusted"))
    if _check_validity(ca, now, findings):
        expiring = _expiry_finding([ca], expiry, now)
        if expiring is not None:
            findings.append(expiring)
    if any(f.severity == "error" for f in findings):
        return None, findings
    trusted = tuple(b.pem for b in bundle) or (ca.pem,)
    return IssuerCA(cert_pem=ca.pem, key_pem=key_pem, bundle_pems=trusted,
                    subject=ca.subject), findings
