"""Certificate factory for tests: CAs, intermediates, instance certificates and broken variants.

Every knob that a credentials check looks at can be set (validity window, serial, CA flag,
keyUsage, issuer, key type, encrypted key), so each test builds exactly the defect it is about.
EC P-256 keys by default: generating them is fast, and strongSwan's openssl plugin accepts them.

    ca = make_ca("Test CA")
    node = make_cert(ca, "node-1")
    data = secret_data(node, cas=[ca])        # {"tls.crt": ..., "tls.key": ..., "ca.crt": ...}
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KeyType = Literal["ec", "rsa", "rsa1024"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self, password: bytes | None = None) -> str:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()


def make_key(key_type: KeyType = "ec") -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str, org: str = "strongmesh", country: str = "US") -> x509.Name:
    """``C=<country>, O=<org>, CN=<cn>`` in that order (how strongSwan prints it)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _build(
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    *,
    ca: bool | None,
    key_cert_sign: bool | None,
    not_before: datetime,
    not_after: datetime,
    serial: int | None,
    issuer_name: x509.Name | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or (issuer.cert.subject if issuer else subject))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    # SHA-1 is outside cryptography's typed choices but still signs: tests need weak signatures
    return builder.sign(signer, hash_algorithm or hashes.SHA256())  # type: ignore[arg-type]


def make_ca(
    cn: str = "strongmesh Test CA",
    *,
    issuer: Issued | None = None,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    ca: bool | None = True,
    key_cert_sign: bool | None = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 3650,
    serial: int | None = None,
    subject: x509.Name | None = None,
) -> Issued:
    """A CA certificate: self-signed root, or an intermediate when ``issuer`` is given.

    ``ca=False``/``None`` and ``key_cert_sign=False``/``None`` build "CAs" that are not CAs.
    """
    key = key or make_key(key_type)
    not_before = not_before or NOW - timedelta(days=1)
    cert = _build(
        subject or name(cn),
        key,
        issuer,
        ca=ca,
        key_cert_sign=key_cert_sign,
        not_before=not_before,
        not_after=not_after or not_before + timedelta(days=days),
        serial=serial,
    )
    return Issued(cert, key)


def make_cert(
    issuer: Issued,
    cn: str = "strongmesh-node",
    *,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 365,
    serial: int | None = None,
    subject: x509.Name | None = None,
    issuer_name: x509.Name | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
) -> Issued:
    """An instance (end-entity) certificate signed by ``issuer``."""
    key = key or make_key(key_type)
    not_before = not_before or NOW - timedelta(days=1)
    cert = _build(
        subject or name(cn),
        key,
        issuer,
        ca=False,
        key_cert_sign=False,
        not_before=not_before,
        not_after=not_after or not_before + timedelta(days=days),
        serial=serial,
        issuer_name=issuer_name,
        hash_algorithm=hash_algorithm,
    )
    return Issued(cert, key)


def expired(issuer: Issued, cn: str = "strongmesh-node", days_ago: int = 1) -> Issued:
    """An instance certificate that ended ``days_ago`` days ago."""
    end = NOW - timedelta(days=days_ago)
    return make_cert(issuer, cn, not_before=end - timedelta(days=365), not_after=end)


def not_yet_valid(issuer: Issued, cn: str = "strongmesh-node", days_ahead: int = 2) -> Issued:
    start = NOW + timedelta(days=days_ahead)
    return make_cert(issuer, cn, not_before=start, not_after=start + timedelta(days=365))


def pem_bundle(items: Iterable[Issued | x509.Certificate]) -> str:
    """Concatenated PEM certificates."""
    out = []
    for item in items:
        cert = item.cert if isinstance(item, Issued) else item
        out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(out)


def secret_data(
    instance: Issued,
    cas: Sequence[Issued],
    intermediates: Sequence[Issued] = (),
    *,
    key: PrivateKey | None = None,
    key_password: bytes | None = None,
) -> dict[str, str]:
    """Decoded Secret data: tls.crt (instance + intermediates), tls.key, ca.crt."""
    key_holder = Issued(instance.cert, key) if key is not None else instance
    return {
        "tls.crt": pem_bundle([instance, *intermediates]),
        "tls.key": key_holder.key_pem(key_password),
        "ca.crt": pem_bundle(cas),
    }


def secret_manifest(
    data: dict[str, str], name: str = "ipsec-credentials", namespace: str = "strongmesh-system"
) -> dict[str, object]:
    """A Secret manifest (base64 ``data``) holding decoded ``data``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


# --- examples/bad/: one manifest per defect that `strongmesh validate` must reject ----------

LONG = 36500  # days: example certificates that must not expire while the repository lives


def _policy(name: str, **spec: object) -> dict[str, object]:
    body: dict[str, object] = {
        "ipsecSubnets": ["10.77.0.0/24"],
        "credentials": {
            "secretRef": {"name": f"{name}-credentials", "namespace": "strongmesh-system"}
        },
    }
    body.update(spec)
    return {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": name},
        "spec": body,
    }


def _with_secret(name: str, data: dict[str, str]) -> list[dict[str, object]]:
    return [_policy(name), secret_manifest(data, name=f"{name}-credentials")]


def _corrupt(pem: str) -> str:
    lines = pem.splitlines()
    middle = len(lines) // 2
    return "\n".join([*lines[:middle], "!!not-base64!!", *lines[middle + 2 :]]) + "\n"


def bad_examples() -> dict[str, tuple[str, list[dict[str, object]]]]:
    """file name -> (what is wrong, documents)."""
    ca = make_ca("strongmesh Example CA", days=LONG)
    good = make_cert(ca, "strongmesh-node", days=LONG)
    other_ca = make_ca("Some Other CA", days=LONG)
    foreign = make_cert(other_ca, "strongmesh-node", days=LONG)
    not_ca = make_ca("Not A CA", ca=False, key_cert_sign=False, days=LONG)
    signed_by_not_ca = make_cert(not_ca, "strongmesh-node", days=LONG)
    dup_ca = make_ca("Duplicate Serial CA", serial=4096, days=LONG)
    dup_leaf = make_cert(dup_ca, "strongmesh-node", serial=4096, days=LONG)
    malformed = secret_data(good, [ca])
    malformed["ca.crt"] = _corrupt(malformed["ca.crt"])
    return {
        "malformed-ca-bundle.yaml": (
            "ca.crt holds a corrupted PEM certificate",
            _with_secret("malformed-ca-bundle", malformed),
        ),
        "wrong-ca.yaml": (
            "the instance certificate was issued by a CA that is not in ca.crt",
            _with_secret("wrong-ca", secret_data(foreign, [ca])),
        ),
        "key-mismatch.yaml": (
            "tls.key is not the key of tls.crt",
            _with_secret("key-mismatch", secret_data(good, [ca], key=make_key())),
        ),
        "expired-cert.yaml": (
            "the instance certificate expired",
            _with_secret("expired-cert", secret_data(expired(ca, days_ago=30), [ca])),
        ),
        "duplicate-serial.yaml": (
            "the instance certificate and its CA share a serial number",
            _with_secret("duplicate-serial", secret_data(dup_leaf, [dup_ca])),
        ),
        "ca-not-ca.yaml": (
            "ca.crt holds a certificate that is not a CA (basicConstraints CA:FALSE)",
            _with_secret("ca-not-ca", secret_data(signed_by_not_ca, [not_ca])),
        ),
        "encrypted-key.yaml": (
            "tls.key is encrypted with a passphrase",
            _with_secret("encrypted-key", secret_data(good, [ca], key_password=b"secret")),
        ),
        "ike-no-dh.yaml": (
            "an IKE proposal without a DH group",
            [_policy("ike-no-dh", ike={"proposals": ["aes128-sha256"]})],
        ),
        "esp-unknown-keyword.yaml": (
            "an ESP proposal with an unknown keyword",
            [_policy("esp-unknown-keyword", esp={"proposals": ["aes256-sha257"]})],
        ),
        "subnet-prefix.yaml": (
            "an ipsecSubnets entry with an impossible prefix length",
            [_policy("subnet-prefix", ipsecSubnets=["10.0.0.0/33"])],
        ),
        "enforcement.yaml": (
            "an enforcement value that does not exist",
            [_policy("enforcement", enforcement="Sometimes")],
        ),
        "ike-version.yaml": (
            "an IKE version that does not exist",
            [_policy("ike-version", ike={"version": 3})],
        ),
    }


def write_bad_examples(directory: str) -> None:
    import os

    import yaml

    for file_name, (what, documents) in bad_examples().items():
        header = (
            f"# Invalid on purpose: {what}.\n"
            "# `strongmesh validate -f` must exit 1 naming the field "
            "(tests/unit/test_cli_validate.py).\n"
            "# Regenerate all: .venv/bin/python tests/certs.py examples/bad\n"
        )
        text = yaml.safe_dump_all(documents, sort_keys=False, width=1000)
        with open(os.path.join(directory, file_name), "w", encoding="utf-8") as stream:
            stream.write(header + text)


if __name__ == "__main__":
    import sys

    write_bad_examples(sys.argv[1] if len(sys.argv) > 1 else "examples/bad")
