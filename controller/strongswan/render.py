"""Render what charon should hold: one VICI connection per policy, plus the credentials behind it.

The model is the PCF add-on's: per IPsecPolicy one transport-mode connection from the node's
address to the policy's ``ipsecSubnets``; the child is a trap (``start_action = trap``) so SAs
are negotiated on demand, with any peer proving a certificate from the policy's CA bundle.
strongmesh owns every xfrm policy (``controller.xfrm``), so the child says ``policies = no`` and
carries a fixed reqid that the kernel's ACQUIREs (from our policies' templates) point at.

Everything here is pure: the output is plain dicts in the shape ``load-conn`` takes, and bytes.
Certificates are sent to charon as DER blobs inside the connection (``certs``/``cacerts`` are
lists of certificate *data* over VICI; swanctl reads files and sends their contents the same
way), and additionally loaded as credentials: the private key (``load-key``), the instance
certificate and intermediates (``load-cert``: charon finds our chain there when it sends
intermediates), and each trusted CA as a named authority (``load-authority``: the only kind of
certificate VICI can unload one by one).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.dataplane import NodeCredentials, NodeFacts, node_address_for
from controller.models.common import duration_seconds
from controller.models.policy import IPsecPolicy, IPsecPolicySpec

CONN_PREFIX = "sm-"
CERT_PREFIX = "sm-cert-"
AUTHORITY_PREFIX = "sm-ca-"


@dataclass(frozen=True)
class DesiredCharon:
    """Everything strongmesh wants charon to hold on this node."""

    # connection name -> body of the load-conn message (the message is {name: body})
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # cert_name(der) -> DER: instance certificates and their intermediates (load-cert)
    certs: Mapping[str, bytes] = field(default_factory=dict)
    # key_id(der) (charon's own key identifier, as get-keys reports it) -> PKCS#8 DER
    keys: Mapping[str, bytes] = field(default_factory=dict)
    # authority_name(der) -> DER of a trusted CA certificate (load-authority)
    authorities: Mapping[str, bytes] = field(default_factory=dict)
    # policy name -> why it got no connection on this node (reported, never raised)
    problems: Mapping[str, str] = field(default_factory=dict)


def conn_name(policy_name: str) -> str:
    """The connection (and child) name of a policy: unloading by name is then deterministic."""
    return f"{CONN_PREFIX}{policy_name}"


def policy_of_conn(name: str) -> str | None:
    """The policy a connection belongs to, or None when the connection is not strongmesh's."""
    return name[len(CONN_PREFIX) :] if name.startswith(CONN_PREFIX) else None


def _digest(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:24]


def cert_name(der: bytes) -> str:
    """A stable name for a certificate, derived from its content (VICI certs have no names)."""
    return f"{CERT_PREFIX}{_digest(der)}"


def authority_name(der: bytes) -> str:
    """The name a CA certificate is loaded under with load-authority."""
    return f"{AUTHORITY_PREFIX}{_digest(der)}"


def key_id(public_key_der_spki: bytes) -> str:
    """charon's identifier of a private key: SHA-1 over the subjectPublicKey bits (hex).

    It is what ``load-key`` answers and ``get-keys`` lists (KEYID_PUBKEY_SHA1), and equals the
    RFC 5280 method-1 key identifier, so it can be computed here without asking charon.
    """
    public_key = serialization.load_der_public_key(public_key_der_spki)
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest.hex()  # type: ignore[arg-type]


def _cert_der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class _Creds:
    cert: bytes
    chain: tuple[bytes, ...]
    key_id: str
    key: bytes
    cas: tuple[bytes, ...]


def _parse_credentials(creds: NodeCredentials) -> _Creds:
    key = serialization.load_pem_private_key(creds.key_pem.encode(), password=None)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cas = tuple(_cert_der(pem) for pem in creds.ca_pems)
    if not cas:
        raise ValueError("the CA bundle (ca.crt) is empty")
    return _Creds(
        cert=_cert_der(creds.cert_pem),
        chain=tuple(_cert_der(pem) for pem in creds.chain_pems),
        key_id=key_id(spki),
        key=pkcs8,
        cas=cas,
    )


def proposals(configured: Sequence[str]) -> list[str]:
    """ipsec.conf-style proposals (the add-on's, and the API's) in swanctl's terms.

    ipsec.conf marks a strict list with a trailing ``!``; without it charon appends its default
    proposals. swanctl/VICI lists are strict as given and reject the ``!``, and accept the
    keyword ``default`` for the defaults. So: strip every ``!``, and append ``default`` unless
    some entry was marked strict (the flag belongs to the whole list; strict is the safe side).
    """
    strict = any(p.strip().endswith("!") for p in configured)
    out = [p.strip().rstrip("!") for p in configured]
    return out if strict else [*out, "default"]


def _seconds(duration: str) -> str:
    return f"{duration_seconds(duration)}s"


def _host_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def render_connection(
    spec: IPsecPolicySpec, name: str, address: str, cert: bytes, cas: Sequence[bytes], reqid: int
) -> dict[str, Any]:
    """The load-conn body of one policy's connection (option names as in swanctl.conf 5.9.8).

    ``local.id`` is deliberately left out: charon then uses the certificate's exact subject DN
    ("id not specified, defaulting to cert subject"), which no DN string formatting can get
    wrong. ``send_cert = always`` because peers never hold each other's certificates.
    """
    subnets = [str(ipaddress.ip_network(s, strict=False)) for s in spec.ipsec_subnets]
    child: dict[str, Any] = {
        "mode": "transport",
        "start_action": "trap",
        "policies": "no",
        "reqid": str(reqid),
        "esp_proposals": proposals(spec.esp.proposals),
        "rekey_time": _seconds(spec.esp.rekey_time),
        "dpd_action": spec.ike.dpd_action,
        "local_ts": [_host_prefix(address)],
        "remote_ts": subnets,
    }
    return {
        "version": str(spec.ike.version),
        "local_addrs": [address],
        "remote_addrs": subnets,
        "proposals": proposals(spec.ike.proposals),
        "rekey_time": _seconds(spec.ike.rekey_time),
        "dpd_delay": _seconds(spec.ike.dpd_delay),
        "encap": "yes" if spec.force_udp_encapsulation else "no",
        "mobike": "no",
        "send_cert": "always",
        "local": {"auth": "pubkey", "certs": [cert]},
        "remote": {"auth": "pubkey", "id": "%any", "cacerts": list(cas)},
        "children": {name: child},
    }


def render_charon(
    policies: Sequence[tuple[IPsecPolicy, NodeCredentials, int]], node: NodeFacts
) -> DesiredCharon:
    """Desired charon state for the policies selecting this node, each with (creds, reqid).

    A policy whose node address is outside its ipsecSubnets, whose mode is not Transport, or
    whose credentials do not parse gets no connection; the reason lands in ``problems`` so the
    agent can report it while the other policies proceed.
    """
    connections: dict[str, Mapping[str, Any]] = {}
    certs: dict[str, bytes] = {}
    keys: dict[str, bytes] = {}
    authorities: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for policy, creds, reqid in sorted(policies, key=lambda item: item[0].metadata.name):
        pname = policy.metadata.name
        spec = policy.spec
        if spec.mode != "Transport":
            problems[pname] = f"mode {spec.mode} is not supported yet (Transport only)"
            continue
        address = node_address_for(spec, node)
        if address is None:
            problems[pname] = f"node {node.name} has no address inside ipsecSubnets"
            continue
        try:
            parsed = _parse_credentials(creds)
        except (ValueError, TypeError) as exc:  # bad PEM, encrypted or unsupported key
            problems[pname] = f"credentials unusable: {exc}"
            continue
        name = conn_name(pname)
        connections[name] = render_connection(spec, name, address, parsed.cert, parsed.cas, reqid)
        for der in (parsed.cert, *parsed.chain):
            certs[cert_name(der)] = der
        keys[parsed.key_id] = parsed.key
        for der in parsed.cas:
            authorities[authority_name(der)] = der
    return DesiredCharon(
        connections=connections,
        certs=certs,
        keys=keys,
        authorities=authorities,
        problems=problems,
    )
