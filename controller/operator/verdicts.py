"""The operator's judgement of a policy body and its Secret (PURE; ``now`` injectable).

One validation library serves the CLI, the agent and the operator (``controller.validation``);
this module only turns its findings into what conditions and events need: a verdict with a
reason, and a message that names the offending Secret key (``ca.crt: ...``) so that
``kubectl describe`` tells people what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from controller.manifests import ManifestError, decode_secret
from controller.models.policy import IPsecPolicy, IPsecPolicySpec
from controller.operator.status import CredentialsVerdict
from controller.validation import (
    IssuerCA,
    validate_credentials,
    validate_issuer,
    validate_policy_body,
)
from controller.validation.findings import Finding

EXPIRY_CODE_PREFIX = "credentials.expiry-"


@dataclass(frozen=True)
class PolicyCheck:
    """A policy body parsed (None if it cannot be) and its errors as readable lines."""

    policy: IPsecPolicy | None
    errors: tuple[str, ...]


@dataclass(frozen=True)
class CredentialsCheck:
    verdict: CredentialsVerdict
    expiry_level: str | None = None  # info | warning | error | critical
    expiry_message: str = ""
    not_after: datetime | None = None  # of the instance (or, issuer mode, the CA) certificate
    issuer: IssuerCA | None = None  # issuer mode: the CA that signs node certificates


def check_policy(body: Mapping[str, Any]) -> PolicyCheck:
    """Parse and validate a policy body with the shared library.

    A body with semantic errors (say, Tunnel mode) that still parses keeps its model, so that
    the status can still list the nodes it selects next to the errors.
    """
    policy, findings = validate_policy_body(dict(body))
    errors = tuple(str(f) for f in findings if f.severity == "error")
    if policy is None:
        try:
            policy = IPsecPolicy.model_validate(dict(body))
        except ValueError:
            policy = None
    if policy is None and not errors:
        errors = ("the policy could not be parsed",)
    return PolicyCheck(policy, errors)


def _join(findings: list[Finding]) -> str:
    return "; ".join(str(f) for f in findings)


def check_credentials(
    spec: IPsecPolicySpec, secret: Mapping[str, Any] | None, now: datetime | None = None
) -> CredentialsCheck:
    """Verdict on the Secret the policy references (``secret`` None: it does not exist): the
    shared node credentials, or (issuer mode) the issuing CA."""
    issuer = spec.credentials.issuer
    ref = issuer.secret_ref if issuer is not None else spec.credentials.secret_ref
    assert ref is not None  # the model requires exactly one of the two
    where = f"{'issuer ' if issuer is not None else ''}Secret {ref.namespace}/{ref.name}"
    if secret is None:
        return CredentialsCheck(CredentialsVerdict(False, "SecretNotFound", f"{where} not found"))
    try:
        data = decode_secret(secret)
    except ManifestError as error:
        return CredentialsCheck(CredentialsVerdict(False, "Invalid", f"{where}: {error}"))
    if issuer is not None:
        return _check_issuer(where, data, spec, now)
    credentials, findings = validate_credentials(data, spec.certificate_expiry, now)
    errors = [f for f in findings if f.severity == "error"]
    expiring = next((f for f in findings if f.code.startswith(EXPIRY_CODE_PREFIX)), None)
    level = expiring.code.removeprefix(EXPIRY_CODE_PREFIX) if expiring else None
    expiry_message = f"{where}: {expiring}" if expiring else ""
    if credentials is None or errors:
        return CredentialsCheck(
            CredentialsVerdict(False, "Invalid", f"{where}: {_join(errors)}"),
            level, expiry_message,
        )
    not_after = x509.load_pem_x509_certificate(
        credentials.cert_pem.encode()
    ).not_valid_after_utc
    advice = [f for f in findings if f.severity in ("warning", "info")]
    message = f"{where}: identity {credentials.subject!r}, {len(credentials.ca_pems)} CA(s)"
    if advice:
        message += f"; {_join(advice)}"
    return CredentialsCheck(
        CredentialsVerdict(True, "Valid", message), level, expiry_message, not_after
    )


def _check_issuer(
    where: str, data: Mapping[str, str], spec: IPsecPolicySpec, now: datetime | None
) -> CredentialsCheck:
    ca, findings = validate_issuer(data, spec.certificate_expiry, now)
    errors = [f for f in findings if f.severity == "error"]
    expiring = next((f for f in findings if f.code.startswith(EXPIRY_CODE_PREFIX)), None)
    level = expiring.code.removeprefix(EXPIRY_CODE_PREFIX) if expiring else None
    expiry_message = f"{where}: {expiring}" if expiring else ""
    if ca is None or errors:
        return CredentialsCheck(
            CredentialsVerdict(False, "Invalid", f"{where}: {_join(errors)}"),
            level, expiry_message,
        )
    not_after = x509.load_pem_x509_certificate(ca.cert_pem.encode()).not_valid_after_utc
    advice = [f for f in findings if f.severity in ("warning", "info")]
    message = (f"{where}: issuing CA {ca.subject!r}, nodes trust {len(ca.bundle_pems)} CA(s); "
               "each node has its own certificate")
    if advice:
        message += f"; {_join(advice)}"
    return CredentialsCheck(
        CredentialsVerdict(True, "Valid", message), level, expiry_message, not_after, ca
    )
