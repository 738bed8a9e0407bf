"""Credentials from the Secret: every documented deploy failure is caught with a precise message."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from controller.models import CertificateExpiry
from controller.validation import expiry_level, has_errors, validate_credentials
from tests.certs import (
    NOW,
    Issued,
    expired,
    make_ca,
    make_cert,
    make_key,
    not_yet_valid,
    pem_bundle,
    secret_data,
)

DATA = Path(__file__).resolve().parents[1] / "data"
EXPIRY = CertificateExpiry()

# Built once: key generation dominates the cost of these tests.
CA = make_ca("strongmesh Test CA")
NODE = make_cert(CA, "strongmesh-node")
INTERMEDIATE = make_ca("strongmesh Intermediate CA", issuer=CA)
VIA_INTERMEDIATE = make_cert(INTERMEDIATE, "node-via-intermediate")
OTHER_CA = make_ca("Other CA")


def _replace(data: dict[str, str], **changes: str | None) -> dict[str, str]:
    result = dict(data)
    for key, value in changes.items():
        real = key.replace("_", ".")
        if value is None:
            result.pop(real, None)
        else:
            result[real] = value
    return result


def _corrupt(pem: str) -> str:
    lines = pem.splitlines()
    return "\n".join([*lines[:3], "!!!!", *lines[4:]]) + "\n"


def _traditional_encrypted(issued: Issued) -> str:
    return issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"pass"),
    ).decode()


GOOD = secret_data(NODE, [CA])

# name -> (secret data builder, the error line that must be reported)
BAD: dict[str, tuple[Callable[[], dict[str, str]], str]] = {
    "missing-tls-crt": (
        lambda: _replace(GOOD, tls_crt=None),
        "tls.crt: missing or empty; the Secret must hold this key",
    ),
    "missing-tls-key": (
        lambda: _replace(GOOD, tls_key=None),
        "tls.key: missing or empty; the Secret must hold this key",
    ),
    "missing-ca-crt": (
        lambda: _replace(GOOD, ca_crt=""),
        "ca.crt: missing or empty; the Secret must hold this key",
    ),
    "tls-crt-not-pem": (
        lambda: _replace(GOOD, tls_crt="hello"),
        "tls.crt: no PEM certificate found (expected -----BEGIN CERTIFICATE----- blocks)",
    ),
    "ca-crt-corrupted": (
        lambda: _replace(GOOD, ca_crt=_corrupt(GOOD["ca.crt"])),
        "ca.crt[0]: certificate does not parse: ",
    ),
    "ca-crt-second-corrupted": (
        lambda: _replace(GOOD, ca_crt=GOOD["ca.crt"] + _corrupt(OTHER_CA.cert_pem)),
        "ca.crt[1]: certificate does not parse: ",
    ),
    "ca-crt-truncated": (
        lambda: _replace(GOOD, ca_crt=GOOD["ca.crt"][:200]),
        "ca.crt: a PEM block has a BEGIN line without a matching END line (truncated?)",
    ),
    "tls-key-not-pem": (
        lambda: _replace(GOOD, tls_key="not a key"),
        "tls.key: no PEM private key found (expected a -----BEGIN PRIVATE KEY----- block)",
    ),
    "tls-key-corrupted": (
        lambda: _replace(GOOD, tls_key=_corrupt(GOOD["tls.key"])),
        "tls.key: private key does not parse: ",
    ),
    "tls-key-two-keys": (
        lambda: _replace(GOOD, tls_key=GOOD["tls.key"] + NODE.key_pem()),
        "tls.key: holds 2 private keys; expected exactly one",
    ),
    "key-encrypted-pkcs8": (
        lambda: secret_data(NODE, [CA], key_password=b"secret"),
        "tls.key: the private key is encrypted with a passphrase; charon loads it unattended, "
        "so store it unencrypted (the Secret is the protection)",
    ),
    "key-encrypted-traditional": (
        lambda: _replace(GOOD, tls_key=_traditional_encrypted(NODE)),
        "tls.key: the private key is encrypted with a passphrase; charon loads it unattended, "
        "so store it unencrypted (the Secret is the protection)",
    ),
    "key-mismatch": (
        lambda: secret_data(NODE, [CA], key=make_key()),
        "tls.key: the private key does not match the certificate in tls.crt "
        "('C=US, O=strongmesh, CN=strongmesh-node')",
    ),
    "private-key-in-ca-bundle": (
        lambda: _replace(GOOD, ca_crt=GOOD["ca.crt"] + CA.key_pem()),
        "ca.crt: contains a PRIVATE KEY block; ca.crt must hold certificates only (and the key "
        "leaks to whoever can read it)",
    ),
    "ca-basic-constraints-false": (
        lambda: (lambda ca: secret_data(make_cert(ca), [ca]))(
            make_ca("Not A CA", ca=False, key_cert_sign=False)
        ),
        "ca.crt[0]: certificate 'C=US, O=strongmesh, CN=Not A CA' is not a CA: its "
        "basicConstraints say CA:FALSE; ca.crt must hold CA certificates only",
    ),
    "ca-without-basic-constraints": (
        lambda: (lambda ca: secret_data(make_cert(ca), [ca]))(make_ca("V1 CA", ca=None)),
        "ca.crt[0]: certificate 'C=US, O=strongmesh, CN=V1 CA' is not a CA: it has no "
        "basicConstraints extension (CA:TRUE is required); ca.crt must hold CA certificates only",
    ),
    "ca-without-key-cert-sign": (
        lambda: (lambda ca: secret_data(make_cert(ca), [ca]))(
            make_ca("No Signing CA", key_cert_sign=False)
        ),
        "ca.crt[0]: certificate 'C=US, O=strongmesh, CN=No Signing CA' is not a CA: its keyUsage "
        "lacks keyCertSign; ca.crt must hold CA certificates only",
    ),
    "signed-by-other-ca": (
        lambda: secret_data(make_cert(OTHER_CA), [CA]),
        "tls.crt: the instance certificate was issued by 'C=US, O=strongmesh, CN=Other CA', "
        "which is neither in ca.crt (trusted: C=US, O=strongmesh, CN=strongmesh Test CA) nor an "
        "intermediate in tls.crt",
    ),
    "ca-recreated-same-name": (
        lambda: secret_data(make_cert(make_ca("strongmesh Test CA")), [CA]),
        "tls.crt: the instance certificate is not signed by any trusted CA: ca.crt[0] has the "
        "issuer's name (C=US, O=strongmesh, CN=strongmesh Test CA) but a different key (was the "
        "CA re-created?)",
    ),
    "intermediate-missing": (
        lambda: secret_data(VIA_INTERMEDIATE, [CA]),
        "tls.crt: the instance certificate was issued by 'C=US, O=strongmesh, CN=strongmesh "
        "Intermediate CA', which is neither in ca.crt (trusted: C=US, O=strongmesh, "
        "CN=strongmesh Test CA) nor an intermediate in tls.crt",
    ),
    "intermediate-not-ca": (
        lambda: (lambda mid: secret_data(make_cert(mid, "leaf"), [CA], [mid]))(
            make_ca("Bad Intermediate", issuer=CA, ca=False)
        ),
        "tls.crt[1]: intermediate 'C=US, O=strongmesh, CN=Bad Intermediate' is not a CA: its "
        "basicConstraints say CA:FALSE",
    ),
    "instance-expired": (
        lambda: secret_data(expired(CA, days_ago=3), [CA]),
        f"tls.crt: certificate 'C=US, O=strongmesh, CN=strongmesh-node' expired on "
        f"{NOW - timedelta(days=3):%Y-%m-%d %H:%M} UTC",
    ),
    "instance-not-yet-valid": (
        lambda: secret_data(not_yet_valid(CA, days_ahead=2), [CA]),
        f"tls.crt: certificate 'C=US, O=strongmesh, CN=strongmesh-node' is not valid before "
        f"{NOW + timedelta(days=2):%Y-%m-%d %H:%M} UTC (check the clock or the certificate)",
    ),
    "ca-expired": (
        lambda: (
            lambda ca: secret_data(make_cert(ca, not_before=NOW - timedelta(days=9), days=30), [ca])
        )(make_ca("Old CA", not_before=NOW - timedelta(days=10), days=5)),
        f"ca.crt[0]: certificate 'C=US, O=strongmesh, CN=Old CA' expired on "
        f"{NOW - timedelta(days=5):%Y-%m-%d %H:%M} UTC",
    ),
    "duplicate-serial-with-ca": (
        lambda: (lambda ca: secret_data(make_cert(ca, serial=7), [ca]))(make_ca("CA7", serial=7)),
        "ca.crt[0]: has the same serial number as tls.crt (0x7); give every certificate a "
        "unique serial",
    ),
    "duplicate-serial-with-intermediate": (
        lambda: (lambda mid: secret_data(make_cert(mid, "leaf", serial=99), [CA], [mid]))(
            make_ca("Mid 99", issuer=CA, serial=99)
        ),
        "tls.crt[1]: has the same serial number as tls.crt (0x63); give every certificate a "
        "unique serial",
    ),
    "duplicate-subject-with-ca": (
        lambda: secret_data(make_cert(CA, subject=CA.cert.subject), [CA]),
        "ca.crt[0]: has the same subject as tls.crt ('C=US, O=strongmesh, CN=strongmesh Test "
        "CA'); every certificate of a chain needs its own subject (an instance certificate named "
        "like its CA looks self-signed to strongSwan)",
    ),
    "key-is-dsa-pkcs8": (
        lambda: _replace(GOOD, tls_key=_dsa_key_pem("dsa-pkcs8.key")),
        "tls.key: DSA keys are not supported by strongSwan's IKEv2 authentication; use RSA, "
        "ECDSA or Ed25519",
    ),
    "key-is-dsa-traditional": (
        lambda: _replace(GOOD, tls_key=_dsa_key_pem("dsa-traditional.key")),
        "tls.key: DSA keys are not supported by strongSwan's IKEv2 authentication; use RSA, "
        "ECDSA or Ed25519",
    ),
}


def _dsa_key_pem(name: str) -> str:
    # Made once with `openssl genpkey` (cryptography deprecates DSA: generating one warns).
    return (DATA / name).read_text()


@pytest.mark.parametrize(("build", "expected"), list(BAD.values()), ids=list(BAD))
def test_bad_credentials_are_rejected_with_the_key_named(
    build: Callable[[], dict[str, str]], expected: str
) -> None:
    credentials, findings = validate_credentials(build(), EXPIRY, now=NOW)
    assert credentials is None
    lines = [str(f) for f in findings if f.severity == "error"]
    assert any(line.startswith(expected) for line in lines), lines


def test_good_credentials_give_what_charon_needs() -> None:
    credentials, findings = validate_credentials(GOOD, EXPIRY, now=NOW)
    assert findings == []
    assert credentials is not None
    assert credentials.subject == "C=US, O=strongmesh, CN=strongmesh-node"
    assert credentials.cert_pem == NODE.cert_pem
    assert credentials.ca_pems == (CA.cert_pem,)
    assert credentials.chain_pems == ()
    assert "PRIVATE KEY" in credentials.key_pem
    assert "PRIVATE KEY" not in repr(credentials)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(secret_data(VIA_INTERMEDIATE, [CA], [INTERMEDIATE]), id="intermediate-in-tls"),
        pytest.param(secret_data(VIA_INTERMEDIATE, [CA, INTERMEDIATE]), id="intermediate-in-ca"),
        pytest.param(secret_data(VIA_INTERMEDIATE, [INTERMEDIATE]), id="intermediate-as-anchor"),
        pytest.param(secret_data(NODE, [OTHER_CA, CA]), id="rotation-old-and-new-ca"),
        pytest.param(secret_data(make_cert(CA, key_type="rsa"), [CA]), id="rsa-key"),
        pytest.param(
            (lambda ca: secret_data(make_cert(ca), [ca]))(make_ca("No KU CA", key_cert_sign=None)),
            id="ca-without-key-usage",
        ),
        pytest.param({k: v.replace("\n", "\r\n") for k, v in GOOD.items()}, id="crlf-line-endings"),
    ],
)
def test_good_credential_layouts_are_accepted(data: dict[str, str]) -> None:
    credentials, findings = validate_credentials(data, EXPIRY, now=NOW)
    assert not has_errors(findings), findings
    assert credentials is not None


def test_intermediate_from_tls_crt_is_passed_on_as_chain() -> None:
    data = secret_data(VIA_INTERMEDIATE, [CA], [INTERMEDIATE])
    credentials, _ = validate_credentials(data, EXPIRY, now=NOW)
    assert credentials is not None
    assert credentials.chain_pems == (INTERMEDIATE.cert_pem,)
    assert credentials.subject == "C=US, O=strongmesh, CN=node-via-intermediate"


def test_expired_ca_left_over_from_rotation_is_only_a_warning() -> None:
    old = make_ca("Retired CA", not_before=NOW - timedelta(days=800), days=400)
    credentials, findings = validate_credentials(secret_data(NODE, [old, CA]), EXPIRY, now=NOW)
    assert credentials is not None
    assert [f.severity for f in findings] == ["warning"]
    assert findings[0].path == "ca.crt[0]"
    assert "remove it from the bundle" in findings[0].message


def test_unrelated_intermediate_in_tls_crt_is_a_warning() -> None:
    data = secret_data(NODE, [CA], [INTERMEDIATE])
    credentials, findings = validate_credentials(data, EXPIRY, now=NOW)
    assert credentials is not None
    assert [str(f) for f in findings] == [
        "tls.crt[1]: certificate 'C=US, O=strongmesh, CN=strongmesh Intermediate CA' is not "
        "part of the instance certificate's chain"
    ]


def test_small_rsa_key_is_a_warning() -> None:
    node = make_cert(CA, key_type="rsa1024")
    credentials, findings = validate_credentials(secret_data(node, [CA]), EXPIRY, now=NOW)
    assert credentials is not None
    assert [str(f) for f in findings] == [
        "tls.key: RSA key of 1024 bits is weak; use 2048 bits or more"
    ]


@pytest.mark.parametrize(
    ("days_left", "severity", "level"),
    [
        pytest.param(40, None, "ok", id="ok"),
        pytest.param(25, "info", "info", id="info"),
        pytest.param(10, "warning", "warning", id="warning"),
        pytest.param(5, "warning", "error", id="error-level-still-usable"),
        pytest.param(2, "warning", "critical", id="critical-level-still-usable"),
    ],
)
def test_expiry_levels_alert_but_keep_the_certificate_usable(
    days_left: int, severity: str | None, level: str
) -> None:
    node = make_cert(
        CA, not_before=NOW - timedelta(days=100), not_after=NOW + timedelta(days=days_left, hours=1)
    )
    credentials, findings = validate_credentials(secret_data(node, [CA]), EXPIRY, now=NOW)
    assert credentials is not None
    if severity is None:
        assert findings == []
        return
    (finding,) = findings
    assert finding.severity == severity
    assert finding.path == "tls.crt"
    assert f"expires in {days_left} days" in finding.message
    assert f"{level} level" in finding.message


@pytest.mark.parametrize(
    ("left", "text"),
    [(timedelta(days=1, hours=2), "expires in 1 day "), (timedelta(hours=5, minutes=3),
                                                         "expires in 5 hours ")],
)
def test_expiry_message_counts_days_then_hours(left: timedelta, text: str) -> None:
    node = make_cert(CA, not_before=NOW - timedelta(days=100), not_after=NOW + left)
    _, findings = validate_credentials(secret_data(node, [CA]), EXPIRY, now=NOW)
    (finding,) = findings
    assert text in finding.message
    assert "critical level: within 3 days" in finding.message


def test_expiry_uses_the_soonest_certificate_of_the_chain() -> None:
    mid = make_ca("Short Mid", issuer=CA, not_before=NOW - timedelta(days=1), days=6)
    node = make_cert(mid, "leaf")
    _, findings = validate_credentials(secret_data(node, [CA], [mid]), EXPIRY, now=NOW)
    assert [(f.path, f.code) for f in findings] == [("tls.crt[1]", "credentials.expiry-error")]


@pytest.mark.parametrize(
    ("left", "level"),
    [
        (timedelta(days=31), "ok"),
        (timedelta(days=30), "info"),
        (timedelta(days=14), "warning"),
        (timedelta(days=13), "warning"),
        (timedelta(days=7), "error"),
        (timedelta(days=3), "critical"),
        (timedelta(seconds=1), "critical"),
        (timedelta(0), "expired"),
        (timedelta(days=-1), "expired"),
    ],
)
def test_expiry_level_thresholds(left: timedelta, level: str) -> None:
    assert expiry_level(NOW + left, EXPIRY, NOW) == level


def test_expiry_level_with_custom_thresholds() -> None:
    expiry = CertificateExpiry(info_days=90, warn_days=60, error_days=30, critical_days=0)
    assert expiry_level(NOW + timedelta(days=80), expiry, NOW) == "info"
    assert expiry_level(NOW + timedelta(hours=1), expiry, NOW) == "error"


def test_ca_bundle_with_many_cas_in_pem_order() -> None:
    cas = [make_ca(f"CA {i}") for i in range(3)]
    node = make_cert(cas[2])
    data = secret_data(node, cas)
    assert data["ca.crt"] == pem_bundle(cas)
    credentials, findings = validate_credentials(data, EXPIRY, now=NOW)
    assert findings == []
    assert credentials is not None
    assert len(credentials.ca_pems) == 3
