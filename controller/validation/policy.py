"""An IPsecPolicy body (as the API or a manifest carries it) checked as a whole.

The pydantic models are the first gate (shape, types, enums, ranges); their errors are
translated into findings with camelCase field paths (``spec.ike.version``). The semantic checks
(subnets, proposals, mode, thresholds) then run on whatever parts of the body are usable, so an
operator sees every problem of a manifest at once, not one per attempt.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from controller.models.common import API_VERSION
from controller.models.policy import DEFAULT_ESP_PROPOSALS, KIND, IPsecPolicy, IPsecPolicyStatus
from controller.validation.findings import Finding, error, info, join_path
from controller.validation.proposals import check_proposals
from controller.validation.subnets import check_subnets

# DNS-1123 subdomain, what the API server demands of a cluster-scoped object's name.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path = join_path(path, part)
    return path


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: Mapping[str, Any]) -> str:
    """Pydantic's message, rephrased for operators where it is terse."""
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see the IPsecPolicy reference)"
    if kind == "literal_error":
        return f"got {_show(got)}; expected {ctx.get('expected', '')}"
    if kind == "string_pattern_mismatch" and "(s|m|h)" in str(ctx.get("pattern", "")):
        return f"got {_show(got)}; expected a duration such as 30s, 4h or 1h30m"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} item(s)"
    return f"{err['msg']} (got {_show(got)})"


def _translate(exc: ValidationError) -> list[Finding]:
    findings = []
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if not isinstance(part, str) or "[" not in part]
        findings.append(error(_path(loc), _message(err), f"model.{err['type']}"))
    return findings


def _mtu_advice(proposals: list[Any], udp: bool) -> list[Finding]:
    """Tunnel mode carries whole pod packets inside ESP: the CNI MTU must leave room for it."""
    from controller.mtu import mtu_facts

    try:
        rows = [(mtu, mtu_facts(mtu, [str(p) for p in proposals], True, 4, udp))
                for mtu in (1500, 1460, 1400, 9001)]
    except ValueError:
        return []
    advice = ", ".join(f"{facts.max_inner} on a {mtu} interface" for mtu, facts in rows)
    return [info("spec.mode", f"Tunnel mode adds up to {rows[0][1].overhead} bytes to each pod "
                 f"packet (IPv4{', UDP-encapsulated' if udp else ''}, worst of the ESP "
                 f"proposals): set the pod network's (CNI) MTU to at most {advice}; each "
                 "IPsecNode reports the figure for its own interface", "policy.tunnel-mtu")]


def _get(body: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


def _covered(path: str, failed: Sequence[str]) -> bool:
    """Whether the model already reported on this path or one of its parents/children."""
    return any(p == path or p.startswith(path + ".") or p.startswith(path + "[")
               or path.startswith(p + ".") for p in failed)


def _semantic(body: Mapping[str, Any], failed: Sequence[str]) -> list[Finding]:
    findings: list[Finding] = []
    spec = _get(body, "spec")
    if not isinstance(spec, Mapping):
        return findings

    ipsec = spec.get("ipsecSubnets")
    bypass = spec.get("noIpsecSubnets", [])
    if (isinstance(ipsec, list) and isinstance(bypass, list)
            and not _covered("spec.ipsecSubnets", failed)
            and not _covered("spec.noIpsecSubnets", failed)):
        findings += check_subnets(ipsec, bypass)

    for protocol in ("ike", "esp"):
        path = f"spec.{protocol}.proposals"
        proposals = _get(spec, protocol, "proposals")
        if isinstance(proposals, list) and not _covered(path, failed):
            findings += check_proposals(proposals, protocol, path)

    esp = _get(spec, "esp", "proposals")
    esp = list(DEFAULT_ESP_PROPOSALS) if esp is None else esp
    if spec.get("mode") == "Tunnel" and isinstance(esp, list) and not _covered(
            "spec.esp.proposals", failed):
        findings += _mtu_advice(esp, bool(spec.get("forceUdpEncapsulation")))
        findings.append(info(
            "spec.ipsecSubnets", "Tunnel mode protects the nodes' pod CIDRs (Node "
            "spec.podCIDRs) that lie inside ipsecSubnets: list the cluster's pod network "
            "there as its own entry (e.g. 10.244.0.0/16), apart from the node network, so that "
            "Required also keeps pods from reaching nodes not yet peered in the clear",
            "policy.tunnel-pods"))

    expiry = spec.get("certificateExpiry")
    if isinstance(expiry, Mapping) and not _covered("spec.certificateExpiry", failed):
        defaults = {"infoDays": 30, "warnDays": 14, "errorDays": 7, "criticalDays": 3}
        values = [expiry.get(k, v) for k, v in defaults.items()]
        if all(isinstance(v, int) for v in values) and values != sorted(values, reverse=True):
            findings.append(error(
                "spec.certificateExpiry",
                "thresholds must not increase from info to critical: infoDays >= warnDays >= "
                f"errorDays >= criticalDays (got {', '.join(map(str, values))})",
                "policy.expiry-order",
            ))

    expressions = _get(spec, "nodeSelector", "matchExpressions")
    for index, requirement in enumerate(expressions if isinstance(expressions, list) else []):
        if not isinstance(requirement, Mapping):
            continue
        path = join_path("spec.nodeSelector.matchExpressions", index)
        operator, values = requirement.get("operator"), requirement.get("values") or []
        if operator in ("In", "NotIn") and not values:
            findings.append(error(join_path(path, "values"),
                                  f"operator {operator} needs at least one value",
                                  "policy.selector"))
        if operator in ("Exists", "DoesNotExist") and values:
            findings.append(error(join_path(path, "values"),
                                  f"must be empty for operator {operator}", "policy.selector"))
    return findings


def validate_policy_body(body: Mapping[str, Any]) -> tuple[IPsecPolicy | None, list[Finding]]:
    """Validate a whole IPsecPolicy object; the model is None iff there are errors."""
    if not isinstance(body, Mapping):
        return None, [error("", f"expected an IPsecPolicy object, got {_show(body)}",
                            "policy.type")]
    findings: list[Finding] = []
    if body.get("apiVersion", API_VERSION) != API_VERSION:
        findings.append(error("apiVersion", f"got {_show(body.get('apiVersion'))}; expected "
                              f"{API_VERSION}", "policy.api-version"))
    if body.get("kind", KIND) != KIND:
        findings.append(error("kind", f"got {_show(body.get('kind'))}; expected {KIND}",
                              "policy.kind"))
    name = _get(body, "metadata", "name")
    if isinstance(name, str) and (not _NAME.match(name) or len(name) > 253):
        findings.append(error("metadata.name", f"{name!r} is not a valid object name "
                              "(lower case letters, digits, '-' and '.')", "policy.name"))

    policy: IPsecPolicy | None = None
    model_errors: list[Finding] = []
    try:
        # status is the operator's output, not input: its shape (kopf may add status.kopf)
        # must never make a policy invalid, so it is attached only when it parses
        policy = IPsecPolicy.model_validate({k: v for k, v in body.items() if k != "status"})
    except ValidationError as exc:
        model_errors = _translate(exc)
    if policy is not None and isinstance(body.get("status"), Mapping):
        with contextlib.suppress(ValidationError):
            policy.status = IPsecPolicyStatus.model_validate(body["status"])
    findings += model_errors
    findings += _semantic(body, [f.path for f in model_errors])
    if any(f.severity == "error" for f in findings):
        return None, findings
    return policy, findings


__all__ = ["validate_policy_body"]
