"""The operator's judgement of a policy's Secret (PURE; ``now`` injectable).

One validation library serves the CLI, the agent and the operator (``controller.validation``);
this module only turns its findings into what conditions and events need: a verdict with a
reason, and a message that names the offending Secret key (``ca.crt: ...``) so that
``kubectl describe`` tells people what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from controller.models.policy import IPsecPolicySpec
from controller.operator.records import SecretContents, SecretKey
from controller.operator.status import CredentialsVerdict
from controller.validation import IssuerCA, validate_credentials, validate_issuer
from controller.validation.findings import Finding

EXPIRY_CODE_PREFIX = "credentials.expiry-"


@dataclass(frozen=True)
class SecretAssessment:
    """What the operator concluded about the Secret a policy references."""

    verdict: CredentialsVerdict
    expiry_level: str | None = None  # info | warning | error | critical
    expiry_message: str = ""
    not_after: datetime | None = None  # of the instance (or, issuer mode, the CA) certificate
    issuer: IssuerCA | None = None  # issuer mode: the CA that signs node certificates


def _join(findings: list[Finding]) -> str:
    return "; ".join(str(f) for f in findings)


def unreadable_secret(key: SecretKey, refusal: str) -> SecretAssessment:
    """RBAC refuses the Secret to the operator (``refusal``: the API's message)."""
    namespace, name = key
    return SecretAssessment(CredentialsVerdict(
        False, "SecretUnreadable",
        f"Secret {namespace}/{name} may not be read by the operator: the chart's "
        f"credentials.secretNames (and credentials.namespace) must name it ({refusal})",
    ))


def assess_secret(
    spec: IPsecPolicySpec, secret: SecretContents | None, now: datetime | None = None
) -> SecretAssessment:
    """Verdict on the Secret the policy references (``secret`` None: it does not exist): the
    shared node credentials, or (issuer mode) the issuing CA."""
    issuer = spec.credentials.issuer
    ref = issuer.secret_ref if issuer is not None else spec.credentials.secret_ref
    assert ref is not None  # the model requires exactly one of the two
    where = f"{'issuer ' if issuer is not None else ''}Secret {ref.namespace}/{ref.name}"
    if secret is None:
        return SecretAssessment(CredentialsVerdict(False, "SecretNotFound", f"{where} not found"))
    if secret.problem:
        return SecretAssessment(CredentialsVerdict(False, "Invalid", f"{where}: {secret.problem}"))
    if issuer is not None:
        return _assess_issuer(where, secret.data, spec, now)
    credentials, findings = validate_credentials(secret.data, spec.certificate_expiry, now)
    errors = [f for f in findings if f.severity == "error"]
    expiring = next((f for f in findings if f.code.startswith(EXPIRY_CODE_PREFIX)), None)
    level = expiring.code.removeprefix(EXPIRY_CODE_PREFIX) if expiring else None
    expiry_message = f"{where}: {expiring}" if expiring else ""
    if credentials is None or errors:
        return SecretAssessment(
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
    return SecretAssessment(
        CredentialsVerdict(True, "Valid", message), level, expiry_message, not_after
    )


def _assess_issuer(
    where: str, data: Mapping[str, str], spec: IPsecPolicySpec, now: datetime | None
) -> SecretAssessment:
    ca, findings = validate_issuer(data, spec.certificate_expiry, now)
    errors = [f for f in findings if f.severity == "error"]
    expiring = next((f for f in findings if f.code.startswith(EXPIRY_CODE_PREFIX)), None)
    level = expiring.code.removeprefix(EXPIRY_CODE_PREFIX) if expiring else None
    expiry_message = f"{where}: {expiring}" if expiring else ""
    if ca is None or errors:
        return SecretAssessment(
            CredentialsVerdict(False, "Invalid", f"{where}: {_join(errors)}"),
            level, expiry_message,
        )
    not_after = x509.load_pem_x509_certificate(ca.cert_pem.encode()).not_valid_after_utc
    advice = [f for f in findings if f.severity in ("warning", "info")]
    message = (f"{where}: issuing CA {ca.subject!r}, nodes trust {len(ca.bundle_pems)} CA(s); "
               "each node has its own certificate")
    if advice:
        message += f"; {_join(advice)}"
    return SecretAssessment(
        CredentialsVerdict(True, "Valid", message), level, expiry_message, not_after, ca
    )
