"""CIDR lists of a policy: ``ipsecSubnets`` (protected) and ``noIpsecSubnets`` (bypass).

Bypass always wins over protection in the data plane, so a bypass entry that covers a whole
``ipsecSubnets`` entry silently turns that entry off; that is reported as an error rather than
left for an operator to discover on the wire.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from controller.validation.findings import Finding, error, join_path, warning

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_PREFIX = {4: 32, 6: 128}


class CidrError(ValueError):
    """A CIDR that cannot be used; the message is written for operators."""


def parse_cidr(value: object) -> Network:
    """Parse a CIDR strictly: prefix length required, host bits clear, no netmask notation."""
    if not isinstance(value, str):
        raise CidrError(f"expected a CIDR string such as 10.0.0.0/16, got {value!r}")
    if value != value.strip() or not value:
        raise CidrError(f"{value!r} is not a CIDR (empty or surrounded by whitespace)")
    address_text, slash, prefix_text = value.partition("/")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise CidrError(
            f"{value!r} is not a CIDR: {address_text!r} is not an IPv4 or IPv6 address"
        ) from None
    if "%" in address_text:
        raise CidrError(f"{value!r} is not a CIDR: zone indexes (%...) are not allowed")
    if not slash:
        host = _MAX_PREFIX[address.version]
        raise CidrError(
            f"{value!r} has no prefix length; write '{address}/{host}' for a single host"
        )
    if not prefix_text.isdigit():
        raise CidrError(
            f"{value!r} is not a CIDR: the prefix length must be a number "
            f"(netmask notation is not accepted)"
        )
    prefix = int(prefix_text)
    limit = _MAX_PREFIX[address.version]
    if prefix > limit:
        raise CidrError(
            f"{value!r} is not a CIDR: prefix length {prefix} is out of range for "
            f"IPv{address.version} (0-{limit})"
        )
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    if network.network_address != address:
        raise CidrError(f"{value!r} has host bits set; did you mean '{network}'?")
    return network


def _parse_list(
    values: Sequence[object], path: str
) -> tuple[list[tuple[int, Network]], list[Finding]]:
    """Parse each entry; report invalid ones and duplicates (by value, however written)."""
    parsed: list[tuple[int, Network]] = []
    findings: list[Finding] = []
    seen: dict[Network, int] = {}
    for index, value in enumerate(values):
        entry_path = join_path(path, index)
        try:
            network = parse_cidr(value)
        except CidrError as exc:
            findings.append(error(entry_path, str(exc), "subnet.invalid"))
            continue
        if network in seen:
            first = join_path(path, seen[network])
            findings.append(
                error(entry_path, f"{network} is a duplicate of {first}", "subnet.duplicate")
            )
            continue
        seen[network] = index
        parsed.append((index, network))
    return parsed, findings


def _contains(outer: Network, inner: Network) -> bool:
    return outer.version == inner.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def _overlaps(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)


def check_subnets(
    ipsec_subnets: Sequence[object],
    no_ipsec_subnets: Sequence[object],
    base: str = "spec",
) -> list[Finding]:
    """Findings for both lists and for how they relate."""
    ipsec_path = join_path(base, "ipsecSubnets")
    bypass_path = join_path(base, "noIpsecSubnets")
    if not ipsec_subnets:
        return [
            error(
                ipsec_path,
                "at least one CIDR is required: without ipsecSubnets the policy protects nothing",
                "subnet.empty",
            )
        ]
    protected, findings = _parse_list(ipsec_subnets, ipsec_path)
    bypass, bypass_findings = _parse_list(no_ipsec_subnets, bypass_path)
    findings += bypass_findings

    for index, network in protected:
        path = join_path(ipsec_path, index)
        if network.prefixlen == 0:
            findings.append(
                warning(
                    path,
                    f"{network} protects traffic to every IPv{network.version} address; hosts "
                    "without IPsec become unreachable under Required enforcement unless listed "
                    "in noIpsecSubnets",
                    "subnet.everything",
                )
            )
        for other_index, other in protected:
            if other_index != index and _contains(other, network) and other != network:
                findings.append(
                    warning(
                        path,
                        f"{network} lies inside {join_path(ipsec_path, other_index)} "
                        f"({other}) and adds nothing",
                        "subnet.redundant",
                    )
                )
                break
        for bypass_index, hole in bypass:
            if _contains(hole, network):
                how = "equals" if hole == network else "contains"
                findings.append(
                    error(
                        path,
                        f"{network} is entirely bypassed: {join_path(bypass_path, bypass_index)} "
                        f"({hole}) {how} it, and bypass always wins, so this entry protects "
                        "nothing; remove one of the two",
                        "subnet.bypassed",
                    )
                )
                break

    for bypass_index, hole in bypass:
        if protected and not any(_overlaps(hole, network) for _, network in protected):
            findings.append(
                warning(
                    join_path(bypass_path, bypass_index),
                    f"{hole} does not overlap any ipsecSubnets entry and has no effect",
                    "subnet.bypass-unused",
                )
            )
    return findings
