"""Per-node certificates: the decisions and the cryptography, no I/O. Pure but for randomness.

A node's agent generates its key on the node (ECDSA P-256; the key never leaves it), asks for a
certificate with a CertificateSigningRequest (``certificates.k8s.io/v1``, signerName
``strongmesh.io/ipsec-node``, subject ``CN=<node>, O=strongmesh``, the issuer Secret named in
an annotation), and the operator approves only what that node's agent may ask for, then signs
with the issuer's CA. Both sides use this module.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SIGNER = "strongmesh.io/ipsec-node"
ORGANIZATION = "strongmesh"
ISSUER_ANNOTATION = "strongmesh.io/issuer"  # "<namespace>/<name>" of the issuer Secret
NODE_CLAIM = "authentication.kubernetes.io/node-name"
USAGES = ("digital signature", "server auth", "client auth")
ALLOWED_USAGES = frozenset({*USAGES, "key encipherment"})


def new_node_key() -> str:
    """A new ECDSA P-256 private key, PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def node_subject(node: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, node),
    ])


@functools.lru_cache(maxsize=1 << 14)
def node_identity(node: str) -> str:
    """The IKE identity of a node's issued certificate, as its agent reports it: the only
    subject the signer certifies for that node (``judge_csr``)."""
    from controller.validation.credentials import strongswan_dn

    return strongswan_dn(node_subject(node))


def node_csr(key_pem: str, node: str) -> str:
    """The PEM CSR of a node's key with the node's subject and nothing else."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    csr = x509.CertificateSigningRequestBuilder().subject_name(node_subject(node)).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_object(name: str, node: str, csr_pem: str, issuer: str, seconds: int) -> dict[str, Any]:
    """The CertificateSigningRequest an agent creates."""
    return {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name, "annotations": {ISSUER_ANNOTATION: issuer},
                     "labels": {"app.kubernetes.io/part-of": "strongmesh",
                                "strongmesh.io/node": node}},
        "spec": {
            "request": base64.b64encode(csr_pem.encode()).decode(),
            "signerName": SIGNER,
            "usages": list(USAGES),
            "expirationSeconds": seconds,
        },
    }


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of a certificate's DER, hex: how a CA is named in IPsecPeerSlices."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class CertificateFacts:
    subject: str
    issuer: str
    not_after: datetime
    issuer_fingerprint: str  # of the CA that signed it, when it is known; else ""


def certificate_facts(cert_pem: str, cas: Sequence[str] = ()) -> CertificateFacts:
    """Subject, issuer (strongSwan's DN format), notAfter, and which of ``cas`` signed it."""
    from controller.validation.credentials import strongswan_dn

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    signer = ""
    for ca_pem in cas:
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        if ca.subject == cert.issuer:
            try:
                cert.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                continue
            signer = fingerprint(ca_pem)
            break
    return CertificateFacts(strongswan_dn(cert.subject), strongswan_dn(cert.issuer),
                            cert.not_valid_after_utc, signer)


def renewal_reason(
    cert_pem: str | None, key_pem: str, node: str, signer: str, trusted: Sequence[str],
    renew_before: timedelta, now: datetime,
) -> str | None:
    """Why the node needs a new certificate, or None while the one it has is good."""
    if cert_pem is None:
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "the stored certificate does not parse"
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "the certificate is not for this node's key"
    if cert.subject != node_subject(node):
        return f"the certificate's subject is not CN={node}, O={ORGANIZATION}"
    facts = certificate_facts(cert_pem, trusted)
    if signer and facts.issuer_fingerprint != signer:
        return "the issuer signs with another CA now (CA rotation)"
    if now >= cert.not_valid_after_utc - renew_before:
        return f"it expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (renewal window)"
    return None


@dataclass(frozen=True)
class CsrVerdict:
    approve: bool
    reason: str  # one CamelCase word
    message: str
    node: str = ""


def judge_csr(
    csr: Mapping[str, Any],
    agent_user: str,
    nodes: Mapping[str, Any],
    issuers_of_node: Mapping[str, set[str]],
) -> CsrVerdict:
    """Whether to approve a CSR for our signer: made by a node's agent (its ServiceAccount with
    the node-name claim), for exactly that node's subject, from an issuer a policy selecting
    that node uses, with a supported key and nothing more than the usages we grant."""
    spec = csr.get("spec") or {}
    meta = csr.get("metadata") or {}
    if spec.get("signerName") != SIGNER:
        return CsrVerdict(False, "NotOurSigner", f"signerName is {spec.get('signerName')!r}")
    if spec.get("username") != agent_user:
        return CsrVerdict(False, "NotAnAgent",
                          f"requested by {spec.get('username')!r}, not by {agent_user!r}")
    claim = ((spec.get("extra") or {}).get(NODE_CLAIM)) or []
    if len(claim) != 1:
        return CsrVerdict(False, "NoNodeClaim", "the requester's token carries no node name "
                          "(a node-bound ServiceAccount token is required)")
    node = str(claim[0])
    if node not in nodes:
        return CsrVerdict(False, "UnknownNode", f"Node {node} does not exist", node)
    try:
        request = x509.load_pem_x509_csr(base64.b64decode(spec.get("request", "")))
    except ValueError as error:
        return CsrVerdict(False, "BadRequest", f"the request does not parse: {error}", node)
    if request.subject != node_subject(node):
        return CsrVerdict(False, "WrongSubject",
                          f"subject {request.subject.rfc4514_string()!r} is not "
                          f"CN={node},O={ORGANIZATION} (the requesting node)", node)
    if list(request.extensions):
        return CsrVerdict(False, "ExtraExtensions",
                          "the request carries extensions (SANs...); strongmesh sets them", node)
    public = request.public_key()
    if not (isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
            or (isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048)):
        return CsrVerdict(False, "WeakKey", "the key is not ECDSA, Ed25519 or RSA >= 2048", node)
    usages = set(spec.get("usages") or [])
    if not usages <= ALLOWED_USAGES:
        return CsrVerdict(False, "UsagesNotAllowed",
                          f"usages {sorted(usages - ALLOWED_USAGES)} are not granted", node)
    issuer = str((meta.get("annotations") or {}).get(ISSUER_ANNOTATION, ""))
    if issuer not in issuers_of_node.get(node, set()):
        return CsrVerdict(False, "IssuerNotSelected",
                          f"no IPsecPolicy selecting {node} uses the issuer {issuer!r}", node)
    return CsrVerdict(True, "StrongmeshNodeApproved",
                      f"the agent of {node} asked for its own identity", node)


def sign(
    csr: Mapping[str, Any], ca_cert_pem: str, ca_key_pem: str, lifetime: timedelta,
    now: datetime | None = None,
) -> str:
    """The node certificate for an approved CSR: the requested key, the node's subject, the
    CA as issuer, the shorter of ``lifetime`` and the CSR's expirationSeconds."""
    now = now or datetime.now(UTC)
    spec = csr.get("spec") or {}
    request = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    asked = spec.get("expirationSeconds")
    if asked:
        lifetime = min(lifetime, timedelta(seconds=int(asked)))
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                      | ed25519.Ed25519PrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca.subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.public_key()), critical=False)  # type: ignore[arg-type]
    )
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(ca_key, algorithm).public_bytes(serialization.Encoding.PEM).decode()
