"""The operator's assessment of a policy's Secret names the Secret and the offending key."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest

from controller.models.policy import IPsecPolicySpec
from controller.operator.records import SecretContents, parse_secret
from controller.operator.verdicts import assess_secret, unreadable_secret
from tests.certs import NOW, make_ca, make_cert, secret_data, secret_manifest

SPEC = IPsecPolicySpec.model_validate(
    {
        "ipsecSubnets": ["10.77.0.0/24"],
        "credentials": {"secretRef": {"name": "creds", "namespace": "sm"}},
    }
)


def secret(data: dict[str, str]) -> SecretContents:
    return parse_secret(secret_manifest(data, name="creds", namespace="sm"))


@pytest.fixture(scope="module")
def ca() -> Any:
    return make_ca("Test CA")


def test_valid_secret_names_the_identity(ca: Any) -> None:
    check = assess_secret(SPEC, secret(secret_data(make_cert(ca, "node"), [ca])), NOW)
    assert (check.verdict.valid, check.verdict.reason) == (True, "Valid")
    assert "CN=node" in check.verdict.message
    assert check.expiry_level is None


def test_malformed_ca_is_invalid_and_names_ca_crt(ca: Any) -> None:
    data = secret_data(make_cert(ca, "node"), [ca])
    data["ca.crt"] = data["ca.crt"].replace("\n", "\n!", 3)
    check = assess_secret(SPEC, secret(data), NOW)
    assert (check.verdict.valid, check.verdict.reason) == (False, "Invalid")
    assert "ca.crt" in check.verdict.message
    assert check.verdict.message.startswith("Secret sm/creds: ")


def test_missing_secret_is_reported_by_name() -> None:
    check = assess_secret(SPEC, None, NOW)
    assert (check.verdict.valid, check.verdict.reason, check.verdict.message) == (
        False,
        "SecretNotFound",
        "Secret sm/creds not found",
    )


@pytest.mark.parametrize(
    ("days_left", "level"),
    [(200, None), (20, "info"), (10, "warning"), (5, "error"), (2, "critical")],
)
def test_expiry_level_comes_with_a_still_valid_verdict(
    ca: Any, days_left: int, level: str | None
) -> None:
    cert = make_cert(ca, "node", not_after=NOW + timedelta(days=days_left))
    check = assess_secret(SPEC, secret(secret_data(cert, [ca])), NOW)
    assert check.verdict.valid
    assert check.expiry_level == level
    if level:
        assert "Secret sm/creds" in check.expiry_message


def test_undecodable_secret_is_invalid_naming_the_key() -> None:
    body = {"data": {"tls.crt": "!!!", "ca.crt": base64.b64encode(b"x").decode()}}
    check = assess_secret(SPEC, parse_secret(body), NOW)
    assert (check.verdict.valid, check.verdict.reason) == (False, "Invalid")
    assert "tls.crt" in check.verdict.message


def test_a_secret_rbac_refuses_is_unreadable_and_says_how_to_allow_it() -> None:
    check = unreadable_secret(("sm", "creds"), 'secrets "creds" is forbidden')
    assert (check.verdict.valid, check.verdict.reason) == (False, "SecretUnreadable")
    assert check.verdict.message == (
        "Secret sm/creds may not be read by the operator: the chart's credentials.secretNames "
        "(and credentials.namespace) must name it (secrets \"creds\" is forbidden)"
    )
