"""``list-sas`` events -> typed SA records (pure).

Each ``list-sa`` event is ``{ike_sa_name: {..., "child-sas": {"<child>-<id>": {...}}}}`` with
every value as bytes (vici's wire format). One record per CHILD_SA, carrying its IKE_SA's facts
(peer, identity, IKE algorithms). An IKE_SA of ours without any CHILD_SA (negotiation under way,
or the CHILD_SA failed while IKE succeeded) yields one record with an empty ``state`` so that a
peer that authenticated but carries no traffic is visible too. IKE_SAs of connections not named
``sm-*`` are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.models.node import SecurityAssociation
from controller.strongswan.render import policy_of_conn


def _text(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key, b"")
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value) if isinstance(value, str | int) else ""


def _int(section: Mapping[str, Any], key: str) -> int | None:
    text = _text(section, key)
    try:
        return int(text)
    except ValueError:
        return None


def _algorithm(section: Mapping[str, Any], kind: str) -> str:
    """``AES_GCM_16-128`` from ``encr-alg``/``encr-keysize`` (the same for ``integ``)."""
    name = _text(section, f"{kind}-alg")
    size = _text(section, f"{kind}-keysize")
    return f"{name}-{size}" if name and size else name


def ike_algorithms(ike: Mapping[str, Any]) -> str:
    """The IKE_SA's proposal: ``AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048``."""
    parts = [
        _algorithm(ike, "encr"),
        _algorithm(ike, "integ"),
        _text(ike, "prf-alg"),
        _text(ike, "dh-group"),
    ]
    return "/".join(p for p in parts if p)


def _record(
    policy: str, connection: str, ike: Mapping[str, Any], child: Mapping[str, Any] | None
) -> SecurityAssociation:
    common: dict[str, Any] = {
        "policy": policy,
        "connection": connection,
        "ike_id": _text(ike, "uniqueid"),
        "peer": _text(ike, "remote-host"),
        "peer_identity": _text(ike, "remote-id"),
        "ike_state": _text(ike, "state"),
        "dh_group": _text(ike, "dh-group"),
        "ike_algorithms": ike_algorithms(ike),
        "encapsulated": _text(ike, "nat-any") == "yes" or _text(ike, "encap") == "yes",
    }
    if child is None:
        return SecurityAssociation(
            **common,
            state="",
            established_seconds=_int(ike, "established") or 0,
            rekey_seconds=_int(ike, "rekey-time"),
        )
    protocol = _text(child, "protocol") or "ESP"
    return SecurityAssociation(
        **{**common, "encapsulated": _text(child, "encap") == "yes"},
        child=_text(child, "name"),
        child_id=_text(child, "uniqueid"),
        state=_text(child, "state"),
        protocol="AH" if protocol == "AH" else "ESP",
        mode=_text(child, "mode") or "TRANSPORT",
        encryption=_algorithm(child, "encr"),
        integrity=_algorithm(child, "integ"),
        bytes_in=_int(child, "bytes-in") or 0,
        bytes_out=_int(child, "bytes-out") or 0,
        packets_in=_int(child, "packets-in") or 0,
        packets_out=_int(child, "packets-out") or 0,
        established_seconds=_int(child, "install-time") or 0,
        rekey_seconds=_int(child, "rekey-time"),
        spi_in=_text(child, "spi-in"),
        spi_out=_text(child, "spi-out"),
    )


def parse_sas(events: Iterable[Mapping[str, Any]]) -> list[SecurityAssociation]:
    """Records for strongmesh's SAs, ordered by policy, peer and SPI for stable reports."""
    records: list[SecurityAssociation] = []
    for event in events:
        for ike_name, ike in event.items():
            policy = policy_of_conn(ike_name)
            if policy is None or not isinstance(ike, Mapping):
                continue
            children = ike.get("child-sas") or {}
            ours = [
                c
                for c in children.values()
                if isinstance(c, Mapping) and policy_of_conn(_text(c, "name")) is not None
            ]
            if not ours:
                records.append(_record(policy, ike_name, ike, None))
            records.extend(_record(policy, ike_name, ike, child) for child in ours)
    records.sort(key=lambda r: (r.policy, r.peer, r.spi_in, r.state))
    return records
