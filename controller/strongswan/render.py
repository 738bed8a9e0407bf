"""Render what charon should hold: per policy a catch-all connection and one connection per
known peer, plus the credentials behind them.

- The catch-all is the PCF add-on's model: one transport-mode connection from the node's
  address to the policy's ``ipsecSubnets``, a trap child (``start_action = trap``) so that SAs
  are negotiated on demand with any peer proving a certificate from the policy's CA bundle. It
  is the safety net for peers the node does not know yet.
- Each peer from the policy's IPsecPeerSlices gets a connection of its own (``sm-<policy>@<node>``,
  exactly that peer's address and /32), which the agent initiates itself when this node has the
  lower address and both ends are ready (``controller.agent.peering``); it has no trap, so the
  peer's first packet never makes both ends initiate at once. A member not ready yet gets its
  connection too: it only answers, and is in place before the member initiates.

strongmesh owns every xfrm policy (``controller.xfrm``), so children say ``policies = no`` and
carry fixed reqids: the catch-all's, which its kernel policies' ACQUIREs point at (and its
trap answers), and one shared by the per-peer children, which no trap answers.

Everything here is pure: the output is plain dicts in the shape ``load-conn`` takes, and bytes.
Certificates are sent to charon as DER blobs inside the connection (``certs``/``cacerts`` are
lists of certificate *data* over VICI; swanctl reads files and sends their contents the same
way), and additionally loaded as credentials: the private key (``load-key``), the instance
certificate and intermediates (``load-cert``: charon finds our chain there when it sends
intermediates), and each trusted CA as a named authority (``load-authority``: the only kind of
certificate VICI can unload one by one).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.facts import NodeCredentials, NodeFacts
from controller.models.common import duration_seconds
from controller.models.peers import Peer
from controller.models.policy import IPsecPolicy, IPsecPolicySpec
from controller.scope import node_address_for, pods_in_scope

CONN_PREFIX = "sm-"
PEER_SEPARATOR = "@"  # cannot appear in a Kubernetes object name
CERT_PREFIX = "sm-cert-"
AUTHORITY_PREFIX = "sm-ca-"


POD_CHILD_SUFFIX = "~pods"  # the pod tunnel child of a per-peer connection


@dataclass(frozen=True)
class PeerLink:
    """One per-peer connection the node holds for a policy."""

    policy: str
    peer: str  # node name
    address: str  # the peer's address
    local: str  # this node's address
    connection: str  # charon connection name (and of its transport child)
    pods: PodTunnel | None = None  # Tunnel mode: the pod networks its second child carries
    # the peer reports the policy (it is expected to have an SA); and this node is listed
    # ready too: both must be before the initiator initiates (the slices' ``ready``)
    peer_ready: bool = True
    self_ready: bool = True

    @property
    def initiable(self) -> bool:
        """Both ends enforce the policy, and have for a round of the operator's publication:
        each has loaded its connection to the other."""
        return self.peer_ready and self.self_ready

    @property
    def all_children(self) -> tuple[str, ...]:
        """The transport child, and the pod tunnel child in Tunnel mode."""
        if self.pods is None:
            return (self.connection,)
        return (self.connection, self.connection + POD_CHILD_SUFFIX)


@dataclass(frozen=True)
class PodTunnel:
    """Tunnel mode: the pod networks a link's tunnel child protects (both in scope)."""

    local: tuple[str, ...]  # this node's
    remote: tuple[str, ...]  # the peer's


@dataclass(frozen=True)
class CharonPolicy:
    """One policy the node enforces, with what its connections need."""

    policy: IPsecPolicy
    credentials: NodeCredentials
    reqid: int  # the catch-all's: ACQUIREs of the subnet-wide kernel policies
    peer_reqid: int = 0  # the per-peer children's (0: none rendered)
    peers: tuple[Peer, ...] = ()
    tunnel_reqid: int = 0  # Tunnel mode: the per-peer pod children's
    pod_space: tuple[str, ...] = ()  # Tunnel mode: ipsecSubnets of pods (``pod_space``)


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
    # the per-peer connections, for initiation and status
    links: tuple[PeerLink, ...] = ()
    # policy name -> the node address its connections use
    addresses: Mapping[str, str] = field(default_factory=dict)
    # connection name -> conn_fingerprint of its body, when render computed it already
    fingerprints: Mapping[str, str] = field(default_factory=dict)


def conn_name(policy_name: str, peer: str | None = None) -> str:
    """The connection (and child) name of a policy's catch-all, or of its connection to
    ``peer`` (a node name): unloading by name is then deterministic."""
    if peer is None:
        return f"{CONN_PREFIX}{policy_name}"
    return f"{CONN_PREFIX}{policy_name}{PEER_SEPARATOR}{peer}"


def is_peer_conn(name: str) -> bool:
    """A per-peer connection (``sm-POLICY@NODE``), not a policy's catch-all."""
    return name.startswith(CONN_PREFIX) and PEER_SEPARATOR in name


def policy_of_conn(name: str) -> str | None:
    """The policy a connection belongs to, or None when the connection is not strongmesh's."""
    if not name.startswith(CONN_PREFIX):
        return None
    return name[len(CONN_PREFIX) :].split(PEER_SEPARATOR, 1)[0]


@functools.lru_cache(maxsize=256)
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


@functools.lru_cache(maxsize=32)
def _parse_credentials(creds: NodeCredentials) -> _Creds:
    """Parsed once per distinct Secret content (a pass re-renders with the same one).

    Without RSA's consistency check (primality tests: 35 ms for a 2048-bit key, on every
    node's first pass with a policy, all at once): the credentials passed validation, which
    matched the key's public half with the certificate, and charon does the signing."""
    key = serialization.load_pem_private_key(creds.key_pem.encode(), password=None,
                                             unsafe_skip_rsa_key_validation=True)
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


@functools.lru_cache(maxsize=4096)
def _host_prefix(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


@dataclass(frozen=True)
class _Template:
    """Everything of a policy's connections but the peer: the same for all of them."""

    version: str
    address: str
    subnets: tuple[str, ...]
    ike_proposals: tuple[str, ...]
    esp_proposals: tuple[str, ...]
    ike_rekey: str
    esp_rekey: str
    dpd_delay: str
    dpd_action: str
    encap: str
    cert: bytes
    cas: tuple[bytes, ...]
    reqid: int
    tunnel_reqid: int = 0  # Tunnel mode: the pod child's
    local_pods: tuple[str, ...] = ()  # Tunnel mode: this node's pod CIDRs


def _template(spec: IPsecPolicySpec, address: str, cert: bytes, cas: Sequence[bytes],
              reqid: int, tunnel_reqid: int = 0, local_pods: Sequence[str] = (),
              pod_space: Sequence[str] = ()) -> _Template:
    subnets = (str(ipaddress.ip_network(s, strict=False)) for s in spec.ipsec_subnets)
    return _Template(
        version=str(spec.ike.version),
        address=address,
        subnets=tuple(s for s in subnets if s not in pod_space),  # no IKE peer lives there
        ike_proposals=tuple(proposals(spec.ike.proposals)),
        esp_proposals=tuple(proposals(spec.esp.proposals)),
        ike_rekey=_seconds(spec.ike.rekey_time),
        esp_rekey=_seconds(spec.esp.rekey_time),
        dpd_delay=_seconds(spec.ike.dpd_delay),
        dpd_action=spec.ike.dpd_action,
        encap="yes" if spec.force_udp_encapsulation else "no",
        cert=cert,
        cas=tuple(cas),
        reqid=reqid,
        tunnel_reqid=tunnel_reqid,
        local_pods=tuple(local_pods),
    )


def render_connection(
    spec: IPsecPolicySpec, name: str, address: str, cert: bytes, cas: Sequence[bytes], reqid: int,
    peer: Peer | None = None,
) -> dict[str, Any]:
    """The load-conn body of a policy's catch-all connection, or of its connection to ``peer``
    (option names as in swanctl.conf 5.9.8).

    ``local.id`` is deliberately left out: charon then uses the certificate's exact subject DN
    ("id not specified, defaulting to cert subject"), which no DN string formatting can get
    wrong. ``send_cert = always`` because peers never hold each other's certificates. A peer's
    connection has no trap and no start action: the agent initiates it (or waits for the peer
    to), and charon prefers it for that peer's IKE_SA_INIT because its address matches exactly.
    """
    template = _template(spec, address, cert, cas, reqid)
    body, _ = _connection(template, name, peer.address if peer is not None else None)
    return body


def remote_ranges(subnets: Sequence[str], excluded: Sequence[str]) -> list[str]:
    """``subnets`` without the ``excluded`` addresses, as swanctl remote_addrs entries (CIDRs
    and ``a-b`` ranges): the catch-all answers no known peer's address, so an IKE_SA from a
    known peer's address can only match that peer's own connection and its identity."""
    out: list[str] = []
    points = sorted({ipaddress.ip_address(a) for a in excluded},
                    key=lambda p: (p.version, int(p)))
    for text in subnets:
        net = ipaddress.ip_network(text, strict=False)
        inside = [int(p) for p in points if p.version == net.version and p in net]
        if not inside:
            out.append(str(net))
            continue
        make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        start = int(net.network_address)
        for point in [*inside, int(net.broadcast_address) + 1]:
            end = point - 1
            if start == end:
                out.append(str(make(start)))
            elif start < end:
                out.append(f"{make(start)}-{make(end)}")
            start = point + 1
    return out


@functools.lru_cache(maxsize=16384)
def _connection(
    template: _Template, name: str, peer: str | None, peer_id: str = "",
    excluded: tuple[str, ...] = (), peer_pods: tuple[str, ...] = (),
) -> tuple[dict[str, Any], str]:
    """A connection's body and fingerprint, computed once per distinct input: an agent with a
    thousand peers re-renders them on every pass, nearly always to the same result. Callers
    must not change the body (it is shared with later passes). ``peer_id``: the identity the
    peer must prove (its certificate subject); ``excluded``: known peers' addresses the
    catch-all must not answer; ``peer_pods``: Tunnel mode, the peer's pod CIDRs, protected
    with this node's by a second, tunnel-mode child between the two node addresses."""
    if peer is None:
        remote = list(template.subnets)
        remote_addrs = remote_ranges(template.subnets, excluded) if excluded else remote
        start_action = "trap"
    else:
        remote = [_host_prefix(peer)]
        remote_addrs = [peer]
        start_action = "none"
    child: dict[str, Any] = {
        "mode": "transport",
        "start_action": start_action,
        "policies": "no",
        "reqid": str(template.reqid),
        "esp_proposals": list(template.esp_proposals),
        "rekey_time": template.esp_rekey,
        "dpd_action": template.dpd_action,
        "local_ts": [_host_prefix(template.address)],
        "remote_ts": remote,
    }
    children: dict[str, Any] = {name: child}
    if peer_pods and template.local_pods:
        children[name + POD_CHILD_SUFFIX] = {
            **child, "mode": "tunnel", "reqid": str(template.tunnel_reqid),
            "local_ts": list(template.local_pods), "remote_ts": list(peer_pods),
        }
    body = {
        "version": template.version,
        "local_addrs": [template.address],
        "remote_addrs": remote_addrs,
        "proposals": list(template.ike_proposals),
        "rekey_time": template.ike_rekey,
        "dpd_delay": template.dpd_delay,
        "encap": template.encap,
        "mobike": "no",
        # Never INITIAL_CONTACT: with it, charon deletes every other IKE_SA of the same peer
        # identity, and with one shared certificate every node is that identity: node-2's
        # first contact with node-3 made node-3 drop its SA with node-1. Duplicates of one
        # peer are the agent's to close (controller.agent.peering).
        "unique": "never",
        "send_cert": "always",
        "local": {"auth": "pubkey", "certs": [template.cert]},
        "remote": {"auth": "pubkey", "id": peer_id or "%any", "cacerts": list(template.cas)},
        "children": children,
    }
    from controller.strongswan.diff import conn_fingerprint  # diff imports this module

    return body, conn_fingerprint(body)


def render_charon(policies: Sequence[CharonPolicy], node: NodeFacts) -> DesiredCharon:
    """Desired charon state for the policies selecting this node.

    A policy whose node address is outside its ipsecSubnets, whose mode is not Transport, or
    whose credentials do not parse gets no connection; the reason lands in ``problems`` so the
    agent can report it while the other policies proceed. Peers at the node's own address or
    in another address family get no connection.
    """
    connections: dict[str, Mapping[str, Any]] = {}
    certs: dict[str, bytes] = {}
    keys: dict[str, bytes] = {}
    authorities: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    links: list[PeerLink] = []
    addresses: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for item in sorted(policies, key=lambda item: item.policy.metadata.name):
        pname = item.policy.metadata.name
        spec = item.policy.spec
        address = node_address_for(spec, node)
        if address is None:
            problems[pname] = f"node {node.name} has no address inside ipsecSubnets"
            continue
        try:
            parsed = _parse_credentials(item.credentials)
        except (ValueError, TypeError) as exc:  # bad PEM, encrypted or unsupported key
            problems[pname] = f"credentials unusable: {exc}"
            continue
        addresses[pname] = address
        known: list[str] = []
        if item.peer_reqid:
            tunnel = spec.mode == "Tunnel" and bool(item.tunnel_reqid)
            version = _version(address)
            local_pods = pods_in_scope(spec, node.pod_cidrs, version) if tunnel else ()
            per_peer = _template(spec, address, parsed.cert, parsed.cas, item.peer_reqid,
                                 item.tunnel_reqid, local_pods)
            # absent from the list: a standalone file or an earlier operator, which list
            # ready peers only
            self_ready = all(p.ready for p in item.peers if p.node == node.name)
            for peer in sorted(item.peers, key=lambda p: p.node):
                if not _peer_usable(address, peer, node.name):
                    continue
                name = conn_name(pname, peer.node)
                peer_pods = pods_in_scope(spec, peer.pod_cidrs, version) if local_pods else ()
                connections[name], fingerprints[name] = _connection(
                    per_peer, name, peer.address, peer.identity, peer_pods=peer_pods)
                pods = PodTunnel(local_pods, peer_pods) if peer_pods else None
                links.append(PeerLink(pname, peer.node, peer.address, address, name, pods,
                                      peer_ready=peer.ready, self_ready=self_ready))
                known.append(peer.address)
        name = conn_name(pname)
        catchall = _template(spec, address, parsed.cert, parsed.cas, item.reqid,
                             pod_space=item.pod_space)
        connections[name], fingerprints[name] = _connection(
            catchall, name, None, excluded=tuple(sorted({address, *known})) if known else ())
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
        links=tuple(links),
        addresses=addresses,
        fingerprints=fingerprints,
    )


def _peer_usable(address: str, peer: Peer, node_name: str) -> bool:
    if peer.node == node_name or peer.address == address:
        return False
    return _version(peer.address) == _version(address) != 0


@functools.lru_cache(maxsize=4096)
def _version(address: str) -> int:
    """4 or 6; 0 for text that is no address."""
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0
