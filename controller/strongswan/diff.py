"""Desired vs. actual charon state -> the smallest set of VICI calls (pure).

Connections: ``list-conns`` answers in a different shape than ``load-conn`` takes (certificates
come back as subjects, times as numbers, defaults filled in), so comparing the two is lossy.
Instead every connection strongmesh loads is fingerprinted (SHA-256 of its canonical load-conn
body) and the adapter remembers, per charon instance, which fingerprint it loaded under each
name (in memory and in a small state file beside the VICI socket, so that a restarted agent
adopts charon's state without reloading anything). A connection is reloaded only when its
fingerprint differs, or is unknown (charon holds a connection strongmesh has no record of, or
charon restarted: then it holds nothing). Connections not named ``sm-*`` are never touched.
Even an unneeded reload is gentle: charon merges an identical config ("updated vici
connection") without touching its trap or SAs, which the integration tests check.

Credentials: keys (by charon's key id) and CA authorities (by name) can be unloaded one by one.
Certificates cannot: VICI 5.9 has no unload-cert, only ``clear-creds`` (which drops every
certificate and key loaded over VICI, but not ``load-authority`` authorities). So when a
certificate strongmesh put into charon is no longer wanted (instance certificate rotated, CA
dropped from the bundle), the plan clears all credentials once and loads the desired ones
again. Established SAs do not depend on loaded credentials; a connection keeps references to
its own certificates, and its trust anchors stay loaded as authorities.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.strongswan.render import (
    AUTHORITY_PREFIX,
    CONN_PREFIX,
    DesiredCharon,
    cert_name,
    is_peer_conn,
)


@dataclass(frozen=True)
class ActualCharon:
    """What charon holds, as far as strongmesh is concerned."""

    # changes whenever charon restarts; the agent re-applies everything when it does
    charon_id: str
    # every sm-* connection charon holds -> fingerprint strongmesh loaded it with (None: unknown)
    conns: Mapping[str, str | None] = field(default_factory=dict)
    # cert_name() of every X.509 certificate charon holds, whoever loaded it
    certs: frozenset[str] = frozenset()
    # ids of every private key loaded over VICI
    keys: frozenset[str] = frozenset()
    # sm-ca-* authorities
    authorities: frozenset[str] = frozenset()
    # what strongmesh itself put into this charon instance (the adapter's ledger): only these
    # are ever removed, so credentials somebody else loaded are left alone
    owned_certs: frozenset[str] = frozenset()
    owned_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CharonPlan:
    """VICI calls to make, in the order of the fields."""

    clear_creds: bool = False
    unload_conns: tuple[str, ...] = ()
    unload_keys: tuple[str, ...] = ()
    unload_authorities: tuple[str, ...] = ()
    load_authorities: Mapping[str, bytes] = field(default_factory=dict)
    load_certs: Mapping[str, bytes] = field(default_factory=dict)
    load_keys: Mapping[str, bytes] = field(default_factory=dict)
    load_conns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # fingerprint of every desired connection (loaded now or already in place)
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    # Connections reloaded because what they negotiate with CHANGED (proposals, lifetimes,
    # identities, certificates, trusted CAs; not merely the addresses a catch-all answers, nor
    # a connection unknown to the ledger). Their SAs were negotiated under the old config and
    # charon keeps rekeying them with it, so they must be replaced:
    # - per-peer connections make before they break: the agent initiates a new IKE_SA (the
    #   link's initiator does), and the old one goes as a duplicate once the new one is up;
    renegotiate_conns: tuple[str, ...] = ()
    # - catch-all connections (peers not known yet, trap-driven) are closed right after the
    #   reload; the trap negotiates anew on the next packet (Required drops, never leaks).
    reset_conns: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (
            self.clear_creds
            or self.unload_conns
            or self.unload_keys
            or self.unload_authorities
            or self.load_authorities
            or self.load_certs
            or self.load_keys
            or self.load_conns
        )

    def summary(self) -> str:
        """One line for logs and events (names only, never key material)."""
        parts = []
        if self.clear_creds:
            parts.append("clear-creds")
        for label, names in (
            ("unload-conn", self.unload_conns),
            ("unload-key", self.unload_keys),
            ("unload-authority", self.unload_authorities),
            ("load-authority", tuple(self.load_authorities)),
            ("load-cert", tuple(self.load_certs)),
            ("load-key", tuple(self.load_keys)),
            ("load-conn", tuple(self.load_conns)),
            ("renegotiate", self.renegotiate_conns),
            ("reset", self.reset_conns),
        ):
            if names:
                parts.append(f"{label} {','.join(names)}")
        return "; ".join(parts) or "nothing to do"


@functools.lru_cache(maxsize=256)
def _sha256(value: bytes) -> str:
    """Certificates recur in every connection of a policy (one per peer): hash each once."""
    return hashlib.sha256(value).hexdigest()


def _bytes_digest(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"sha256": _sha256(bytes(value))}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def conn_fingerprint(body: Mapping[str, Any]) -> str:
    """``NEGOTIATION.ADDRESSES``: SHA-256 of a load-conn body in canonical form (key order does
    not matter; certificates count by their digest) without its ``remote_addrs``, and of those
    addresses. A catch-all's addresses change whenever a peer becomes known, which needs a
    reload but no new SAs. json's C encoder walks the body: an agent with a thousand peers
    fingerprints a thousand connections on every pass."""
    rest = {k: v for k, v in body.items() if k != "remote_addrs"}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"), default=_bytes_digest)
    addresses = json.dumps(body.get("remote_addrs"), separators=(",", ":"))
    return (f"{hashlib.sha256(text.encode()).hexdigest()}."
            f"{hashlib.sha256(addresses.encode()).hexdigest()[:16]}")


def negotiation_changed(before: str | None, after: str) -> bool:
    """Whether a connection with ledger fingerprint ``before`` now negotiates differently
    (a ledger written before fingerprints had two parts counts as changed)."""
    return before is not None and before.split(".")[0] != after.split(".")[0]


def embedded_certs(body: Mapping[str, Any]) -> frozenset[str]:
    """cert_name() of the certificates a load-conn body carries (charon keeps them loaded)."""
    names: set[str] = set()
    for side in ("local", "remote"):
        auth = body.get(side, {})
        for key in ("certs", "cacerts"):
            for der in auth.get(key, ()):
                if isinstance(der, bytes):
                    names.add(cert_name(der))
    return frozenset(names)


def _wanted_cert_names(desired: DesiredCharon) -> frozenset[str]:
    wanted = set(desired.certs)
    wanted.update(cert_name(der) for der in desired.authorities.values())
    for body in desired.connections.values():
        wanted |= embedded_certs(body)
    return frozenset(wanted)


def plan_changes(desired: DesiredCharon, actual: ActualCharon) -> CharonPlan:
    """The difference, and nothing else: an empty plan when charon already holds ``desired``."""
    fingerprints = {
        name: desired.fingerprints.get(name) or conn_fingerprint(body)
        for name, body in desired.connections.items()
    }
    # per-peer connections first: a catch-all reloaded to leave a newly known peer out must
    # not leave that peer without any config while its own connection is still to come
    load_conns = {
        name: desired.connections[name]
        for name in sorted(desired.connections, key=lambda n: (not is_peer_conn(n), n))
        if actual.conns.get(name) != fingerprints[name]
    }
    changed = [n for n in load_conns if negotiation_changed(actual.conns.get(n), fingerprints[n])]
    unload_conns = tuple(
        sorted(n for n in actual.conns if n.startswith(CONN_PREFIX) and n not in fingerprints)
    )

    stale_certs = (actual.owned_certs & actual.certs) - _wanted_cert_names(desired)
    clear = bool(stale_certs)
    if clear:
        load_certs = dict(sorted(desired.certs.items()))
        load_keys = dict(sorted(desired.keys.items()))
        unload_keys: tuple[str, ...] = ()
    else:
        load_certs = {n: d for n, d in sorted(desired.certs.items()) if n not in actual.certs}
        load_keys = {k: d for k, d in sorted(desired.keys.items()) if k not in actual.keys}
        unload_keys = tuple(sorted((actual.owned_keys & actual.keys) - set(desired.keys)))

    ours = {a for a in actual.authorities if a.startswith(AUTHORITY_PREFIX)}
    load_authorities = {
        n: d for n, d in sorted(desired.authorities.items()) if n not in actual.authorities
    }
    unload_authorities = tuple(sorted(ours - set(desired.authorities)))
    return CharonPlan(
        clear_creds=clear,
        unload_conns=unload_conns,
        unload_keys=unload_keys,
        unload_authorities=unload_authorities,
        load_authorities=load_authorities,
        load_certs=load_certs,
        load_keys=load_keys,
        load_conns=load_conns,
        fingerprints=fingerprints,
        renegotiate_conns=tuple(n for n in changed if is_peer_conn(n)),
        reset_conns=tuple(n for n in changed if not is_peer_conn(n)),
    )


def owned_after(plan: CharonPlan, actual: ActualCharon) -> tuple[frozenset[str], frozenset[str]]:
    """The ledger (owned certs, owned keys) once ``plan`` has been applied to ``actual``."""
    certs = set() if plan.clear_creds else set(actual.owned_certs)
    certs.update(plan.load_certs)
    certs.update(cert_name(der) for der in plan.load_authorities.values())
    for body in plan.load_conns.values():
        certs |= embedded_certs(body)
    keys = set() if plan.clear_creds else set(actual.owned_keys) - set(plan.unload_keys)
    keys.update(plan.load_keys)
    return frozenset(certs), frozenset(keys)
