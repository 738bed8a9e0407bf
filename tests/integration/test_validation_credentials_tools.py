"""Credentials checked against the tools of the trade: strongSwan's `pki` prints subjects as
the validator does, and a SHA-1 chain made by `openssl` (cryptography no longer signs one)
passes with a warning. The validator's own tests: tests/unit/test_validation_credentials.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from controller.models import CertificateExpiry
from controller.validation import validate_credentials
from tests.certs import NOW, make_ca, make_cert, name, secret_data
from tests.environment import missing

CA = make_ca("strongmesh Test CA")
EXPIRY = CertificateExpiry()

def test_subject_is_printed_as_strongswan_prints_it(tmp_path: Path) -> None:
    """Cross-check against strongSwan's own `pki --print` (installed with strongswan-pki)."""
    if shutil.which("pki") is None:
        missing("needs strongSwan's pki (strongswan-pki, hack/install-system-deps)")
    subject = name("node-1", org="strongmesh")
    node = make_cert(CA, subject=subject)
    credentials, _ = validate_credentials(secret_data(node, [CA]), EXPIRY, now=NOW)
    assert credentials is not None
    (tmp_path / "cert.pem").write_text(credentials.cert_pem)
    printed = subprocess.run(
        ["pki", "--print", "--in", str(tmp_path / "cert.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'subject:  "{credentials.subject}"' in printed


def test_sha1_signed_chain_is_accepted_with_a_warning(tmp_path: Path) -> None:
    """Old deployments have SHA-1-signed certificates; cryptography no longer signs them, so
    openssl makes them. strongSwan accepts them: a warning, not a broken-chain error."""
    if shutil.which("openssl") is None:
        missing("needs openssl to build a SHA-1 signed certificate")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=SHA1 CA",
        "-sha1",
        "-days",
        "90",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "n.key",
        "-out",
        "n.csr",
        "-subj",
        "/CN=node",
    )
    run(
        "x509",
        "-req",
        "-in",
        "n.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-out",
        "n.crt",
        "-sha1",
        "-days",
        "60",
        "-set_serial",
        "5",
    )
    data = {
        k: (tmp_path / f).read_text()
        for k, f in (("tls.crt", "n.crt"), ("tls.key", "n.key"), ("ca.crt", "ca.crt"))
    }
    credentials, findings = validate_credentials(data, EXPIRY)
    assert credentials is not None
    assert [str(f) for f in findings] == [
        "tls.crt: signed with SHA1, which is weak; reissue it with SHA-256"
    ]
