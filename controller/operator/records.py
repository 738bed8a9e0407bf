"""What the operator keeps of the policies and Secrets it watches, parsed once on arrival (PURE).

``ClusterState`` turns every IPsecPolicy and referenced Secret into a record here, at the watch
boundary, and nothing later looks at a raw body again. A policy body that fails the shared
validation library is kept too, as ``InvalidSpec`` with its findings (each names the field):
its status says what to fix, while its IPsecPeerSlices keep the last spec that was valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.manifests import ManifestError, decode_secret
from controller.models.common import LabelSelector
from controller.models.policy import IPsecPolicy, IPsecPolicySpec, IPsecPolicyStatus
from controller.validation import validate_policy_body

SecretKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class ValidSpec:
    """A policy body that passed the shared validation library."""

    spec: IPsecPolicySpec


@dataclass(frozen=True)
class InvalidSpec:
    """A policy body with errors, each naming its field (``spec.esp.proposals: ...``)."""

    errors: tuple[str, ...]
    # Set when only the semantics are wrong (the body still parses): the status can then list
    # the nodes the policy selects next to the errors.
    spec: IPsecPolicySpec | None = None


@dataclass(frozen=True)
class PolicyMeta:
    """The metadata the operator acts on."""

    name: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 1
    finalizers: tuple[str, ...] = ()
    deletion_timestamp: datetime | None = None

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None


@dataclass(frozen=True)
class PolicyRecord:
    """One IPsecPolicy as the operator keeps it."""

    meta: PolicyMeta
    checked: ValidSpec | InvalidSpec
    # The status the API serves (the operator's last write); None when it does not parse.
    served_status: IPsecPolicyStatus | None
    # The Secret the operator reads for the policy: the nodes' shared credentials or, in
    # issuer mode, the issuing CA. Taken from the raw body, so an invalid policy has one too.
    secret: SecretKey | None
    # The nodeSelector alone (None: unreadable, then every node's report concerns the policy).
    selector: LabelSelector | None

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def valid_spec(self) -> IPsecPolicySpec | None:
        return self.checked.spec if isinstance(self.checked, ValidSpec) else None

    @property
    def spec_errors(self) -> tuple[str, ...]:
        return self.checked.errors if isinstance(self.checked, InvalidSpec) else ()


def check_spec(body: Mapping[str, Any]) -> ValidSpec | InvalidSpec:
    """Validate a policy body with the shared library (errors only; warnings are the CLI's)."""
    policy, findings = validate_policy_body(dict(body))
    if policy is not None:
        return ValidSpec(policy.spec)  # the library returns no model when there are errors
    errors = tuple(str(f) for f in findings if f.severity == "error")
    try:
        spec: IPsecPolicySpec | None = IPsecPolicy.model_validate(dict(body)).spec
    except ValueError:
        spec = None
    return InvalidSpec(errors or ("the policy could not be parsed",), spec)


def _secret_ref(spec: Mapping[str, Any]) -> SecretKey | None:
    credentials = spec.get("credentials") or {}
    ref = credentials.get("secretRef") or (credentials.get("issuer") or {}).get("secretRef") or {}
    if isinstance(ref, Mapping) and ref.get("name") and ref.get("namespace"):
        return str(ref["namespace"]), str(ref["name"])
    return None


def _selector(spec: Mapping[str, Any]) -> LabelSelector | None:
    try:
        return LabelSelector.model_validate(spec.get("nodeSelector") or {})
    except ValueError:
        return None


def _status(body: Mapping[str, Any]) -> IPsecPolicyStatus | None:
    try:
        return IPsecPolicyStatus.model_validate(body.get("status") or {})
    except ValueError:
        return None


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as the API writes it."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse_policy(body: Mapping[str, Any]) -> PolicyRecord:
    meta = body["metadata"]
    spec = body.get("spec") or {}
    deletion = meta.get("deletionTimestamp")
    return PolicyRecord(
        meta=PolicyMeta(
            name=meta["name"],
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            generation=int(meta.get("generation") or 1),
            finalizers=tuple(meta.get("finalizers") or ()),
            deletion_timestamp=parse_time(deletion) if deletion else None,
        ),
        checked=check_spec(body),
        served_status=_status(body),
        secret=_secret_ref(spec) if isinstance(spec, Mapping) else None,
        selector=_selector(spec) if isinstance(spec, Mapping) else None,
    )


def only_status_changed(before: PolicyRecord, after: PolicyRecord) -> bool:
    """Nothing the operator acts on changed (its own status write coming back, typically)."""
    return (before.meta.generation, before.meta.deletion_timestamp, before.meta.finalizers,
            before.checked) == (after.meta.generation, after.meta.deletion_timestamp,
                                after.meta.finalizers, after.checked)


def newer_or_same(kept: str, arriving: str) -> bool:
    """Whether a version may replace the kept one: False only when both resourceVersions are
    numbers and the arriving one is older (a watch event overtaken by the response to the
    operator's own write). resourceVersions are opaque; kube-apiserver's are etcd revisions."""
    return not (kept.isdigit() and arriving.isdigit() and int(arriving) < int(kept))


def in_force(policies: Mapping[str, PolicyRecord]) -> dict[str, IPsecPolicySpec]:
    """The specs of the policies that are valid and not being deleted."""
    return {name: spec for name, record in policies.items()
            if (spec := record.valid_spec) is not None and not record.meta.deleting}


def policy_using_issuer(
    policies: Mapping[str, PolicyRecord], issuer: SecretKey
) -> PolicyRecord | None:
    """The first policy in force whose credentials.issuer is that Secret."""
    for name, spec in in_force(policies).items():
        ref = spec.credentials.issuer
        if ref is not None and (ref.secret_ref.namespace, ref.secret_ref.name) == issuer:
            return policies[name]
    return None


@dataclass(frozen=True)
class SecretContents:
    """A referenced Secret, decoded: its keys as text, or why it cannot be decoded."""

    data: Mapping[str, str]
    problem: str = ""  # set: the Secret is unusable as it is (``data`` is then empty)


def parse_secret(body: Mapping[str, Any]) -> SecretContents:
    try:
        return SecretContents(decode_secret(body))
    except ManifestError as error:
        return SecretContents({}, str(error))


def secret_key(body: Mapping[str, Any]) -> SecretKey:
    meta = body["metadata"]
    return str(meta.get("namespace", "")), str(meta["name"])
