"""Per-node certificates (``controller.pki``): what the operator approves, what it signs, and
when a node asks again."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from controller.pki import (
    ISSUER_ANNOTATION,
    NODE_CLAIM,
    SIGNER,
    certificate_facts,
    csr_object,
    fingerprint,
    judge_csr,
    new_node_key,
    node_csr,
    node_identity,
    renewal_reason,
    sign,
)
from tests.certs import make_ca

AGENT = "system:serviceaccount:strongmesh-system:strongmesh-agent"
ISSUER = "strongmesh-system/mesh-ca"
NOW = datetime(2026, 12, 7, tzinfo=UTC)
CA = make_ca("mesh CA")
OTHER_CA = make_ca("next mesh CA")
KEY = new_node_key()
NODES: dict[str, dict[str, str]] = {"node-1": {}, "node-2": {}}
ISSUERS = {"node-1": {ISSUER}, "node-2": {ISSUER}}


def request(node: str = "node-1", csr_pem: str | None = None, user: str = AGENT,
            claim: list[str] | None = None, issuer: str = ISSUER,
            usages: list[str] | None = None) -> dict[str, Any]:
    body = csr_object("strongmesh-node-1-x", node, csr_pem or node_csr(KEY, node), issuer, 3600)
    body["spec"]["username"] = user
    body["spec"]["extra"] = {NODE_CLAIM: ["node-1"] if claim is None else claim}
    if usages is not None:
        body["spec"]["usages"] = usages
    return body


def foreign_csr(subject: x509.Name, key: Any, sans: tuple[str, ...] = ()) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def node_name(cn: str, org: str = "strongmesh") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


CASES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "the node's agent for itself": (lambda: request(), "StrongmeshNodeApproved"),
    "someone else's signer": (
        lambda: request() | {"spec": request()["spec"] | {"signerName": "kubernetes.io/x"}},
        "NotOurSigner"),
    "not the agent ServiceAccount": (lambda: request(user="strongmesh-admin"), "NotAnAgent"),
    "a token without the node claim": (lambda: request(claim=[]), "NoNodeClaim"),
    "a node that does not exist": (lambda: request(claim=["node-9"]), "UnknownNode"),
    "another node's subject": (lambda: request("node-2"), "WrongSubject"),
    "another organisation": (
        lambda: request(csr_pem=foreign_csr(node_name("node-1", "evil"),
                                            ec.generate_private_key(ec.SECP256R1()))),
        "WrongSubject"),
    "extra names": (
        lambda: request(csr_pem=foreign_csr(node_name("node-1"),
                                            ec.generate_private_key(ec.SECP256R1()),
                                            ("kubernetes.default",))),
        "ExtraExtensions"),
    "a weak key": (
        lambda: request(csr_pem=foreign_csr(node_name("node-1"), rsa.generate_private_key(
            public_exponent=65537, key_size=1024))),
        "WeakKey"),
    "usages beyond ours": (lambda: request(usages=["digital signature", "cert sign"]),
                           "UsagesNotAllowed"),
    "an issuer no policy of the node uses": (lambda: request(issuer="ns/other-ca"),
                                             "IssuerNotSelected"),
}


@pytest.mark.parametrize(("build", "reason"), list(CASES.values()), ids=list(CASES))
def test_only_a_nodes_agent_asking_for_its_own_identity_is_approved(
    build: Callable[[], dict[str, Any]], reason: str
) -> None:
    verdict = judge_csr(build(), AGENT, NODES, ISSUERS)
    assert verdict.reason == reason, verdict.message
    assert verdict.approve is (reason == "StrongmeshNodeApproved")


def test_the_signed_certificate_is_the_nodes_key_and_subject_under_the_ca() -> None:
    csr = request()
    pem = sign(csr, CA.cert_pem, CA.key_pem(), timedelta(hours=720), NOW)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject == node_name("node-1")
    assert cert.issuer == x509.load_pem_x509_certificate(CA.cert_pem.encode()).subject
    key = serialization.load_pem_private_key(KEY.encode(), password=None)
    assert cert.public_key() == key.public_key()
    # the CSR's expirationSeconds (3600) wins over a longer policy duration
    assert cert.not_valid_after_utc - NOW == timedelta(hours=1)
    facts = certificate_facts(pem, [OTHER_CA.cert_pem, CA.cert_pem])
    assert facts.subject == "O=strongmesh, CN=node-1" == node_identity("node-1")
    assert facts.issuer_fingerprint == fingerprint(CA.cert_pem)


def test_a_node_asks_again_for_no_cert_renewal_window_rotation_or_a_foreign_key() -> None:
    signer = fingerprint(CA.cert_pem)
    renew = timedelta(hours=240)
    good = sign(request() | {"spec": request()["spec"] | {"expirationSeconds": None}},
                CA.cert_pem, CA.key_pem(), timedelta(hours=720), NOW)
    assert renewal_reason(good, KEY, "node-1", signer, [CA.cert_pem], renew, NOW) is None
    assert renewal_reason(None, KEY, "node-1", signer, [], renew, NOW) == "no certificate yet"
    late = NOW + timedelta(hours=481)
    assert "renewal window" in (renewal_reason(good, KEY, "node-1", signer, [CA.cert_pem],
                                               renew, late) or "")
    rotated = renewal_reason(good, KEY, "node-1", fingerprint(OTHER_CA.cert_pem),
                             [CA.cert_pem, OTHER_CA.cert_pem], renew, NOW)
    assert rotated == "the issuer signs with another CA now (CA rotation)"
    assert renewal_reason(good, new_node_key(), "node-1", signer, [CA.cert_pem], renew,
                          NOW) == "the certificate is not for this node's key"
    assert "subject" in (renewal_reason(good, KEY, "node-2", signer, [CA.cert_pem], renew,
                                        NOW) or "")


def test_the_csr_names_its_issuer_and_only_the_usages_strongmesh_grants() -> None:
    body = csr_object("n", "node-1", node_csr(KEY, "node-1"), ISSUER, 60)
    assert body["metadata"]["annotations"] == {ISSUER_ANNOTATION: ISSUER}
    assert body["spec"]["signerName"] == SIGNER
    assert x509.load_pem_x509_csr(base64.b64decode(body["spec"]["request"])).subject == \
        node_name("node-1")
