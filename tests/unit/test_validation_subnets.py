"""CIDR lists: each bad input is reported on its own path with a message that says what to do."""

from __future__ import annotations

import pytest

from controller.validation.findings import Finding
from controller.validation.subnets import CidrError, check_subnets, parse_cidr


def errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


@pytest.mark.parametrize(
    ("ipsec", "bypass", "expected"),
    [
        pytest.param(
            ["10.0.0.0/33"],
            [],
            "spec.ipsecSubnets[0]: '10.0.0.0/33' is not a CIDR: "
            "prefix length 33 is out of range for IPv4 (0-32)",
            id="v4-prefix-too-long",
        ),
        pytest.param(
            ["fd00::/129"],
            [],
            "spec.ipsecSubnets[0]: 'fd00::/129' is not a CIDR: "
            "prefix length 129 is out of range for IPv6 (0-128)",
            id="v6-prefix-too-long",
        ),
        pytest.param(
            ["10.0.0.1/24"],
            [],
            "spec.ipsecSubnets[0]: '10.0.0.1/24' has host bits set; did you mean '10.0.0.0/24'?",
            id="v4-host-bits",
        ),
        pytest.param(
            ["fd00::1/64"],
            [],
            "spec.ipsecSubnets[0]: 'fd00::1/64' has host bits set; did you mean 'fd00::/64'?",
            id="v6-host-bits",
        ),
        pytest.param(
            ["10.0.0.0/16", "10.0.0.0/8", "10.0.0.0/16"],
            [],
            "spec.ipsecSubnets[2]: 10.0.0.0/16 is a duplicate of spec.ipsecSubnets[0]",
            id="duplicate",
        ),
        pytest.param(
            ["fd00:0:0::/48", "fd00::/48"],
            [],
            "spec.ipsecSubnets[1]: fd00::/48 is a duplicate of spec.ipsecSubnets[0]",
            id="duplicate-written-differently",
        ),
        pytest.param(
            ["10.0.0.1"],
            [],
            "spec.ipsecSubnets[0]: '10.0.0.1' has no prefix length; "
            "write '10.0.0.1/32' for a single host",
            id="no-prefix",
        ),
        pytest.param(
            ["10.0.0.256/24"],
            [],
            "spec.ipsecSubnets[0]: '10.0.0.256/24' is not a "
            "CIDR: '10.0.0.256' is not an IPv4 or IPv6 address",
            id="bad-octet",
        ),
        pytest.param(
            ["10.0.0.0/255.255.0.0"],
            [],
            "spec.ipsecSubnets[0]: '10.0.0.0/255.255.0.0' "
            "is not a CIDR: the prefix length must be a number (netmask notation is not "
            "accepted)",
            id="netmask-notation",
        ),
        pytest.param(
            [42],
            [],
            "spec.ipsecSubnets[0]: expected a CIDR string such as 10.0.0.0/16, got 42",
            id="not-a-string",
        ),
        pytest.param(
            [" 10.0.0.0/8"],
            [],
            "spec.ipsecSubnets[0]: ' 10.0.0.0/8' is not a CIDR (empty or surrounded by whitespace)",
            id="whitespace",
        ),
        pytest.param(
            [],
            [],
            "spec.ipsecSubnets: at least one CIDR is required: without "
            "ipsecSubnets the policy protects nothing",
            id="empty",
        ),
        pytest.param(
            ["10.77.0.0/24"],
            ["10.77.0.0/24"],
            "spec.ipsecSubnets[0]: 10.77.0.0/24 "
            "is entirely bypassed: spec.noIpsecSubnets[0] (10.77.0.0/24) equals it, and "
            "bypass always wins, so this entry protects nothing; remove one of the two",
            id="bypass-equals",
        ),
        pytest.param(
            ["10.77.0.0/24", "10.1.0.0/16"],
            ["10.0.0.0/8"],
            "spec.ipsecSubnets[1]: "
            "10.1.0.0/16 is entirely bypassed: spec.noIpsecSubnets[0] (10.0.0.0/8) "
            "contains it, and bypass always wins, so this entry protects nothing; remove "
            "one of the two",
            id="bypass-contains",
        ),
        pytest.param(
            ["10.77.0.0/24"],
            ["10.77.0.200/33"],
            "spec.noIpsecSubnets[0]: "
            "'10.77.0.200/33' is not a CIDR: prefix length 33 is out of range for IPv4 "
            "(0-32)",
            id="bypass-invalid",
        ),
        pytest.param(
            ["10.77.0.0/24"],
            ["10.77.0.5/32", "10.77.0.5/32"],
            "spec.noIpsecSubnets[1]: 10.77.0.5/32 is a duplicate of spec.noIpsecSubnets[0]",
            id="bypass-duplicate",
        ),
    ],
)
def test_bad_subnets_are_errors_naming_the_entry(
    ipsec: list[object], bypass: list[object], expected: str
) -> None:
    assert expected in errors(check_subnets(ipsec, bypass))


@pytest.mark.parametrize(
    ("ipsec", "bypass", "expected"),
    [
        pytest.param(
            ["10.0.0.0/8", "10.77.0.0/24"],
            [],
            "spec.ipsecSubnets[1]: 10.77.0.0/24 "
            "lies inside spec.ipsecSubnets[0] (10.0.0.0/8) and adds nothing",
            id="nested",
        ),
        pytest.param(
            ["10.77.0.0/24"],
            ["192.168.0.0/16"],
            "spec.noIpsecSubnets[0]: "
            "192.168.0.0/16 does not overlap any ipsecSubnets entry and has no effect",
            id="bypass-unused",
        ),
        pytest.param(
            ["0.0.0.0/0"],
            [],
            "spec.ipsecSubnets[0]: 0.0.0.0/0 protects traffic to "
            "every IPv4 address; hosts without IPsec become unreachable under Required "
            "enforcement unless listed in noIpsecSubnets",
            id="everything",
        ),
    ],
)
def test_questionable_subnets_are_warnings(
    ipsec: list[object], bypass: list[object], expected: str
) -> None:
    findings = check_subnets(ipsec, bypass)
    assert [str(f) for f in findings if f.severity == "warning"] == [expected]
    assert not errors(findings)


@pytest.mark.parametrize(
    ("ipsec", "bypass"),
    [
        pytest.param(["10.77.0.0/24"], ["10.77.0.200/32"], id="lab"),
        pytest.param(["10.0.0.0/16", "fd00::/64"], ["10.0.0.10/32", "fd00::10/128"], id="dual"),
        pytest.param(["10.77.0.0/24", "10.78.0.0/24"], ["10.78.0.0/25"], id="partial-bypass"),
        pytest.param(["10.0.0.0/8"], ["::/0"], id="bypass-other-family-is-unused-not-error"),
    ],
)
def test_good_subnets_have_no_errors(ipsec: list[object], bypass: list[object]) -> None:
    assert not errors(check_subnets(ipsec, bypass))


def test_bypass_of_other_family_never_covers_an_entry() -> None:
    findings = check_subnets(["10.0.0.0/8"], ["::/0"])
    assert [f.code for f in findings] == ["subnet.bypass-unused"]


def test_parse_cidr_returns_the_network() -> None:
    assert str(parse_cidr("fd00:0::/16")) == "fd00::/16"
    with pytest.raises(CidrError, match=r"did you mean '192\.168\.1\.0/24'"):
        parse_cidr("192.168.1.7/24")
