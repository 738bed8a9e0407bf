"""A node's charon as the lab sees it: swanctl's listings and the lines of its log (the
parsers are pure)."""

from __future__ import annotations

import re
from typing import Any

from hack.labkit.lab.network import Host
from hack.labkit.lab.paths import LOGS
from hack.labkit.lab.shell import sh

# ``swanctl --list-sas``: an IKE_SA's first line, its remote line, an installed CHILD_SA
LIST_SAS_IKE = re.compile(r"^(\S[^:]*): #(\d+), (\w+), IKEv(\d)")
LIST_SAS_ENDPOINT = re.compile(r"^\s+(local|remote)\s+'([^']*)' @ (\S+)\[(\d+)\]")
LIST_SAS_CHILD = re.compile(r"^\s+\S[^:]*: #\d+, reqid \d+, (\w+),")
# charon's log (ike_name = yes): "<conn|id>" once an IKE_SA has a config, "<id>" before
LOG_IKE_SA = re.compile(r" <(?:([^|>]*)\|)?(\d+)> ")
TRUSTED_CA = re.compile(r'using trusted ca certificate "([^"]*)"')
PEER_CERT = re.compile(r'using certificate "([^"]*)"')
AUTHORITY = re.compile(r"^\s+cacert:\s+(.*\S)\s*$", re.M)


def charon_log_path(name: str) -> str:
    return f"{LOGS}/{name}-charon.log"


def parse_list_sas(text: str) -> list[dict[str, Any]]:
    """The IKE_SAs of ``swanctl --list-sas`` output: name, unique id, state, both endpoints'
    identities and addresses, and how many of its CHILD_SAs are INSTALLED."""
    sas: list[dict[str, Any]] = []
    for line in text.splitlines():
        ike = LIST_SAS_IKE.match(line)
        if ike:
            sas.append({"name": ike.group(1), "id": ike.group(2), "state": ike.group(3),
                        "local_id": "", "local": "", "remote_id": "", "remote": "",
                        "remote_port": 0, "children_installed": 0})
            continue
        if not sas:
            continue
        end = LIST_SAS_ENDPOINT.match(line)
        if end:
            side = end.group(1)
            sas[-1][f"{side}_id"] = end.group(2)
            sas[-1][side] = end.group(3)
            if side == "remote":
                sas[-1]["remote_port"] = int(end.group(4))
            continue
        child = LIST_SAS_CHILD.match(line)
        if child and child.group(1) == "INSTALLED":
            sas[-1]["children_installed"] += 1
    return sas


def log_lines_of_ike_sas(lines: list[str], ids: set[str]) -> list[str]:
    """The charon log lines logged for one of the IKE_SAs (unique ids) ``ids``."""
    out = []
    for line in lines:
        match = LOG_IKE_SA.search(line)
        if match and match.group(2) in ids:
            out.append(line)
    return out


def peer_authentication(lines: list[str], ike_id: str) -> dict[str, Any]:
    """What a node's charon log says about how it verified the peer of IKE_SA ``ike_id``: the
    peer's end-entity certificate (``using certificate``) and the CA that verified it (``using
    trusted ca certificate``), the last of each, and every such line."""
    own = log_lines_of_ike_sas(lines, {ike_id})
    cas = [m.group(1) for line in own if (m := TRUSTED_CA.search(line))]
    certs = [m.group(1) for line in own if (m := PEER_CERT.search(line))]
    return {"ca": cas[-1] if cas else None, "cert": certs[-1] if certs else None,
            "lines": [line for line in own if TRUSTED_CA.search(line) or PEER_CERT.search(line)
                      or "authentication of" in line]}


def list_sas(host: Host, check: bool = True) -> list[dict[str, Any]]:
    """The IKE_SAs the host's charon holds (``parse_list_sas``)."""
    return parse_list_sas(sh("swanctl", "--list-sas", "--uri", host.vici, check=check))


def authorities(host: Host) -> list[str]:
    """The CA subjects of the authorities loaded into a node's charon."""
    return AUTHORITY.findall(sh("swanctl", "--list-authorities", "--uri", host.vici))


def charon_log(host: Host) -> list[str]:
    with open(charon_log_path(host.name), errors="replace") as f:
        return f.read().splitlines()
