"""`strongmesh validate`: one line per problem, exit 0/1/2, JSON for machines."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.cli import main
from controller.manifests import decode_secret, find_secret, load_documents
from controller.models import CertificateExpiry
from controller.validation import validate_credentials
from tests.certs import make_ca, make_cert, secret_data, secret_manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BAD = EXAMPLES / "bad"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    status = main(["validate", *args])
    return status, capsys.readouterr().out.splitlines()


def test_ready_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = run(
        capsys, "-f", str(EXAMPLES / "policy.yaml"), "-f", str(EXAMPLES / "policy-optional.yaml")
    )
    assert (status, lines) == (0, [])


def test_example_certificate_stays_valid_for_years() -> None:
    docs = load_documents(str(EXAMPLES / "policy.yaml"))
    secret = find_secret(docs, "ipsec-credentials", "strongmesh-system")
    assert secret is not None
    later = datetime.now(UTC) + timedelta(days=5 * 365)
    credentials, findings = validate_credentials(
        decode_secret(secret), CertificateExpiry(), now=later
    )
    assert credentials is not None, findings
    assert credentials.subject == "C=US, O=strongmesh, CN=strongmesh-node"


def test_policy_without_its_secret_gets_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "policy-optional.yaml")
    status, lines = run(capsys, "-f", path)
    assert status == 0
    assert lines == [
        f"{path}: IPsecPolicy/node-mesh: spec.credentials.secretRef: note: Secret "
        "strongmesh-system/ipsec-credentials is not among the files; credentials not checked"
    ]


# examples/bad/<file> -> the line `strongmesh validate` must print (after "FILE: ")
BAD_CASES = {
    "malformed-ca-bundle.yaml": "Secret/strongmesh-system/malformed-ca-bundle-credentials: "
    "ca.crt[0]: certificate does not parse: ",
    "wrong-ca.yaml": "Secret/strongmesh-system/wrong-ca-credentials: tls.crt: the instance "
    "certificate was issued by 'C=US, O=strongmesh, CN=Some Other CA', which is neither in ca.crt",
    "key-mismatch.yaml": "Secret/strongmesh-system/key-mismatch-credentials: tls.key: the private "
    "key does not match the certificate in tls.crt",
    "expired-cert.yaml": "Secret/strongmesh-system/expired-cert-credentials: tls.crt: "
    "certificate 'C=US, O=strongmesh, CN=strongmesh-node' expired on ",
    "duplicate-serial.yaml": "Secret/strongmesh-system/duplicate-serial-credentials: ca.crt[0]: "
    "has the same serial number as tls.crt (0x1000)",
    "ca-not-ca.yaml": "Secret/strongmesh-system/ca-not-ca-credentials: ca.crt[0]: certificate "
    "'C=US, O=strongmesh, CN=Not A CA' is not a CA: its basicConstraints say CA:FALSE",
    "encrypted-key.yaml": "Secret/strongmesh-system/encrypted-key-credentials: tls.key: the "
    "private key is encrypted with a passphrase",
    "ike-no-dh.yaml": "IPsecPolicy/ike-no-dh: spec.ike.proposals[0]: IKE proposal "
    "'aes128-sha256' has no DH group",
    "esp-unknown-keyword.yaml": "IPsecPolicy/esp-unknown-keyword: spec.esp.proposals[0]: unknown "
    "keyword 'sha257'",
    "subnet-prefix.yaml": "IPsecPolicy/subnet-prefix: spec.ipsecSubnets[0]: '10.0.0.0/33' is not "
    "a CIDR: prefix length 33 is out of range for IPv4 (0-32)",
    "enforcement.yaml": "IPsecPolicy/enforcement: spec.enforcement: got 'Sometimes'; expected "
    "'Required' or 'Optional'",
    "ike-version.yaml": "IPsecPolicy/ike-version: spec.ike.version: got 3; expected 1 or 2",
}


def test_every_bad_example_has_a_case() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(BAD_CASES)


@pytest.mark.parametrize(("file_name", "expected"), list(BAD_CASES.items()), ids=list(BAD_CASES))
def test_bad_examples_exit_1_naming_the_field(
    capsys: pytest.CaptureFixture[str], file_name: str, expected: str
) -> None:
    path = str(BAD / file_name)
    status, lines = run(capsys, "-f", path)
    assert status == 1
    assert any(line.startswith(f"{path}: {expected}") for line in lines), lines


def test_unreadable_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    status, lines = run(capsys, "-f", str(broken), "-f", str(BAD / "ike-version.yaml"))
    assert status == 2
    assert lines[0].startswith(f"{broken}: not valid YAML: ")
    assert any("spec.ike.version" in line for line in lines)  # other files are still checked


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, lines = run(capsys, "-f", str(tmp_path / "nope.yaml"))
    assert status == 2
    assert lines[0].startswith(f"{tmp_path / 'nope.yaml'}: cannot read: ")


def test_warnings_do_not_fail(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ca = make_ca()
    path = tmp_path / "weak.yaml"
    policy = {
        "apiVersion": "strongmesh.io/v1alpha1",
        "kind": "IPsecPolicy",
        "metadata": {"name": "weak"},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"],
            "ike": {"proposals": ["aes128-sha1-modp2048"]},
            "credentials": {"secretRef": {"name": "c", "namespace": "ns"}},
        },
    }
    secret = secret_manifest(secret_data(make_cert(ca, days=10), [ca]), name="c", namespace="ns")
    path.write_text(json.dumps(policy) + "\n---\n" + json.dumps(secret))
    status, lines = run(capsys, "-f", str(path))
    assert status == 0
    assert lines == [
        f"{path}: IPsecPolicy/weak: spec.ike.proposals[0]: warning: 'sha1': SHA-1 integrity is "
        "deprecated",
        f"{path}: Secret/ns/c: tls.crt: warning: certificate 'C=US, O=strongmesh, "
        "CN=strongmesh-node' expires in 8 days (" + lines[1].split(" days (")[1],
    ]
    assert "warning level: within 14 days" in lines[1]


def test_secret_in_another_file_is_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    only_secret = tmp_path / "secret.yaml"
    text = (EXAMPLES / "policy.yaml").read_text()
    only_secret.write_text(text[text.index("apiVersion: v1") :])
    status, lines = run(
        capsys, "-f", str(EXAMPLES / "policy-optional.yaml"), "-f", str(only_secret)
    )
    assert (status, lines) == (0, [])


def test_unknown_strongmesh_kind_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("apiVersion: strongmesh.io/v1alpha1\nkind: IPSecPolicy\nmetadata:\n  name: x\n")
    status, lines = run(capsys, "-f", str(path))
    assert status == 1
    assert lines == [
        f"{path}: IPSecPolicy/x: kind: unknown strongmesh.io kind 'IPSecPolicy'; "
        "this version knows IPsecPolicy and IPsecNode"
    ]


def test_file_without_policy_gets_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    status, lines = run(capsys, "-f", str(path))
    assert (status, lines) == (0, [f"{path}: note: no IPsecPolicy found; nothing was checked"])


def test_directory_is_expanded(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = run(capsys, "-f", str(BAD))
    assert status == 1
    assert {line.split(":")[0] for line in lines} == {str(BAD / name) for name in BAD_CASES}


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO((BAD / "ike-version.yaml").read_text()))
    status, lines = run(capsys, "-f", "-")
    assert status == 1
    assert "-: IPsecPolicy/ike-version: spec.ike.version: got 3; expected 1 or 2" in lines


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(BAD / "esp-unknown-keyword.yaml")
    status, lines = run(capsys, "-f", path, "--output", "json")
    report = json.loads("\n".join(lines))
    assert status == 1
    assert report["valid"] is False
    assert report["exitCode"] == 1
    assert report["errors"] == 1
    assert report["problems"][0] == {
        "file": path,
        "object": "IPsecPolicy/esp-unknown-keyword",
        "severity": "error",
        "path": "spec.esp.proposals[0]",
        "message": "unknown keyword 'sha257' (did you mean 'sha256'?)",
        "code": "proposal.unknown-keyword",
    }
