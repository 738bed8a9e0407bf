"""`strongmesh validate` and hack/make-certs run as processes (the console script the package
installs, the script the README tells users to run), make-certs' issuer Secrets included. The
in-process tests of validate: tests/unit/test_cli_validate.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.manifests import find_secret, load_documents
from controller.models import CertificateExpiry
from controller.validation import validate_credentials
from tests.unit.test_cli_validate import BAD, EXAMPLES, ROOT, run
from tests.unit.test_lab_cluster_pure import valid_issuer_subject


def test_console_script_runs_validate() -> None:
    script = Path(sys.executable).parent / "strongmesh"
    good = subprocess.run(
        [str(script), "validate", "-f", str(EXAMPLES / "policy.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (good.returncode, good.stdout) == (0, "")
    bad = subprocess.run(
        [str(script), "validate", "-f", str(BAD / "subnet-prefix.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "spec.ipsecSubnets[0]: '10.0.0.0/33' is not a CIDR" in bad.stdout


def test_make_certs_output_validates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """hack/make-certs writes what validate accepts, keys 0600, and reuses its CA."""
    out = tmp_path / "certs"
    secret = tmp_path / "secret.yaml"

    def make_certs(*args: str) -> None:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "hack" / "make-certs"),
                "--out",
                str(out),
                "--key-type",
                "ecdsa",
                *args,
            ],
            check=True,
            capture_output=True,
        )

    make_certs("--node", "node-1", "--secret-out", str(secret))
    for key_file in ("ca.key", "tls.key", "node-1.key", "../secret.yaml"):
        assert (out / key_file).stat().st_mode & 0o777 == 0o600, key_file
    ca_before = (out / "ca.crt").read_text()
    make_certs("--node", "node-2")
    assert (out / "ca.crt").read_text() == ca_before

    subjects = []
    for node in ("tls", "node-1", "node-2"):
        data = {
            "tls.crt": (out / f"{node}.crt").read_text(),
            "tls.key": (out / f"{node}.key").read_text(),
            "ca.crt": ca_before,
        }
        credentials, findings = validate_credentials(data, CertificateExpiry())
        assert findings == []
        assert credentials is not None
        subjects.append(credentials.subject)
    assert subjects == [
        f"C=US, O=strongmesh, CN={cn}" for cn in ("strongmesh-node", "node-1", "node-2")
    ]

    policy = tmp_path / "policy.yaml"
    policy.write_text((EXAMPLES / "policy-optional.yaml").read_text())
    status, lines = run(capsys, "-f", str(policy), "-f", str(secret))
    assert (status, lines) == (0, [])


def test_make_certs_issuer_secret_is_a_valid_issuer(tmp_path: Path) -> None:
    """``hack/make-certs --issuer-secret-out`` writes (0600) an issuer Secret the operator
    accepts, as the identity lab tests' example holds one."""
    out = tmp_path / "issuer.yaml"
    subprocess.run([sys.executable, str(ROOT / "hack" / "make-certs"), "--out",
                    str(tmp_path / "certs"), "--key-type", "ecdsa", "--ca-cn", "Made CA",
                    "--issuer-secret-out", str(out)], check=True, capture_output=True)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    secret = find_secret(load_documents(str(out)), "mesh-ca", "strongmesh-system")
    assert secret is not None
    assert valid_issuer_subject(secret) == "C=US, O=strongmesh, CN=Made CA"
