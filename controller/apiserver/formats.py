"""String formats that kube-apiserver checks in CRD schemas (``format: cidr`` and friends).

The real server validates the formats of kube-openapi's registry and ignores unknown ones;
these are the ones a CRD here is likely to use. Each check is what Go's parser accepts (e.g.
``net.ParseCIDR`` accepts host bits, ``10.0.0.1/24``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
    r"[0-9a-fA-F]{12}$"
)
_HOSTNAME = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$"
)
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")


def _ip(version: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            return ipaddress.ip_address(value).version == version
        except ValueError:
            return False

    return check


def _cidr(value: str) -> bool:
    if "/" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _byte(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


CHECKS: dict[str, Callable[[str], bool]] = {
    "cidr": _cidr,
    "ipv4": _ip(4),
    "ipv6": _ip(6),
    "date-time": lambda v: bool(_DATE_TIME.match(v)),
    "datetime": lambda v: bool(_DATE_TIME.match(v)),
    "date": lambda v: bool(_DATE.match(v)),
    "uuid": lambda v: bool(_UUID.match(v)),
    "hostname": lambda v: bool(_HOSTNAME.match(v)) and len(v) <= 253,
    "mac": lambda v: bool(_MAC.match(v)),
    "byte": _byte,
}


def valid(fmt: str, value: object) -> bool:
    """Whether ``value`` has format ``fmt`` (non-strings and unknown formats pass)."""
    check = CHECKS.get(fmt)
    return check is None or not isinstance(value, str) or check(value)
