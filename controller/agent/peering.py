"""Who negotiates with whom, when to try again, and which SAs must go. Pure.

Both ends of a pair used to trap the same first packet and initiate at once, which left two
IKE_SAs and two CHILD_SAs per pair. Now every known peer gets a connection of its own, and only
the end with the lower address initiates it, without waiting for traffic; the other end only
answers (but after its own charon restarted, a node initiates every link it lost, since its
peers still believe in their halves). It initiates once both ends are ready: the operator lists
a node in the slices before it enforces the policy and marks it ready when it does, and every
agent loads a connection for each listed node. So the responder's connection is in place when
the initiator's IKE_SA_INIT arrives, and not its catch-all: an SA the catch-all answered would
be closed as superseded moments later, and negotiated again. The agent re-initiates with a
back-off while an SA is missing (the peer may not have loaded its side yet: charon does not
retry a refused exchange); in Tunnel mode each child of a link (transport, pods) on its own.

A connection whose config changed (new proposals, certificates, trusted CAs) makes before it
breaks: its initiator negotiates a new IKE_SA while the old one keeps carrying traffic, and the
old one then goes as a duplicate (``still_outdated`` tracks it until then).

Two kinds of SAs are removed: a second IKE_SA of one per-peer connection that survived two
passes (a rekey briefly has two, a restart of the peer's charon can leave a stale one; both
ends keep the newest, so they agree), and an SA that the policy's catch-all connection made
with a peer that now has a connection of its own (the catch-all only covers peers not yet
known; its SA carries the catch-all's reqid, which the per-peer kernel policy does not use).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.models.node import SecurityAssociation
from controller.strongswan.render import PeerLink

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


def initiates(local: str, peer: str) -> bool:
    """The lower address initiates (IPv4 before IPv6); both ends compute the same answer."""
    return _order(local) < _order(peer)


@functools.lru_cache(maxsize=1 << 14)
def _order(address: str) -> tuple[int, int]:
    """An address's place in the initiator order; parsed once (every pass asks per peer)."""
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)


@dataclass(frozen=True)
class Attempts:
    """Initiation attempts of one connection while its SA is missing."""

    count: int = 0
    next_at: float = 0.0


@dataclass(frozen=True)
class InitiationPlan:
    initiate: tuple[tuple[str, str], ...] = ()  # (connection, child)
    attempts: Mapping[str, Attempts] = field(default_factory=dict)  # by child


def child_installed(sas: Iterable[SecurityAssociation], connection: str, child: str) -> bool:
    return any(
        sa.connection == connection and (sa.child or sa.connection) == child
        and sa.state == "INSTALLED" for sa in sas
    )


def installed(sas: Iterable[SecurityAssociation], connection: str,
              children: Iterable[str] = ()) -> bool:
    """Every child of the connection (default: its transport child) has an installed SA."""
    wanted = tuple(children) or (connection,)
    records = list(sas)
    return all(child_installed(records, connection, child) for child in wanted)


def by_connection(sas: Iterable[SecurityAssociation]) -> dict[str, list[SecurityAssociation]]:
    """The SAs grouped by connection, once per pass: a lookup per link that scanned every SA
    would cost N² in a mesh of N nodes (a quarter second per pass at a thousand)."""
    grouped: dict[str, list[SecurityAssociation]] = {}
    for sa in sas:
        grouped.setdefault(sa.connection, []).append(sa)
    return grouped


def link_installed(grouped: Mapping[str, Sequence[SecurityAssociation]], link: PeerLink) -> bool:
    """Every child of the link has an installed SA (``grouped``: from ``by_connection``)."""
    return installed(grouped.get(link.connection, ()), link.connection, link.all_children)


def negotiating(sas: Iterable[SecurityAssociation], connection: str) -> bool:
    """An exchange for the connection is under way (IKE connecting, CHILD_SA being made)."""
    return any(
        sa.connection == connection
        and (sa.ike_state in ("CONNECTING", "CREATED") or sa.state in ("CREATED", "INSTALLING"))
        for sa in sas
    )


def plan_initiations(
    links: Sequence[PeerLink],
    sas: Sequence[SecurityAssociation],
    attempts: Mapping[str, Attempts],
    now: float,
    every_link: bool = False,
    outdated: Mapping[str, frozenset[str]] | None = None,
) -> InitiationPlan:
    """Initiator links without an installed CHILD_SA whose back-off has run out.

    ``every_link``: this node's charon restarted and lost its SAs while its peers may still
    hold their halves (they would only notice at the next dead-peer check): it initiates every
    missing link itself, whichever address is lower; the peer then holds two IKE_SAs for a
    moment and closes the older one. ``outdated``: per connection, the CHILD_SAs negotiated
    under a config that has changed since: they carry traffic until new ones are up, but do
    not count as the link's SAs (make before break)."""
    initiate: list[tuple[str, str]] = []
    after: dict[str, Attempts] = {}
    grouped = by_connection(sas)
    for link in links:
        if not link.initiable:
            continue  # one end does not enforce the policy yet, or has not for long
        if not every_link and not initiates(link.local, link.address):
            continue  # responders wait
        own = grouped.get(link.connection, [])
        busy = negotiating(own, link.connection)
        old = (outdated or {}).get(link.connection, frozenset())
        current = [sa for sa in own if sa.child_id not in old] if old else own
        for child in link.all_children:
            if child_installed(current, link.connection, child):
                continue  # an installed SA resets the back-off
            previous = attempts.get(child, Attempts())
            if busy or now < previous.next_at:
                after[child] = previous
                continue
            delay = min(BACKOFF_FIRST * 2 ** previous.count, BACKOFF_MAX)
            after[child] = Attempts(count=previous.count + 1, next_at=now + delay)
            initiate.append((link.connection, child))
    return InitiationPlan(initiate=tuple(initiate), attempts=after)


def negotiated_before(
    connections: Iterable[str], sas: Iterable[SecurityAssociation]
) -> dict[str, frozenset[str]]:
    """The CHILD_SAs of ``connections`` (whose config just changed) as they are now: all of
    them predate the new config."""
    wanted = set(connections)
    found: dict[str, set[str]] = {}
    for sa in sas:
        if sa.connection in wanted and sa.child_id:
            found.setdefault(sa.connection, set()).add(sa.child_id)
    return {conn: frozenset(ids) for conn, ids in found.items()}


def still_outdated(
    outdated: Mapping[str, frozenset[str]], sas: Iterable[SecurityAssociation]
) -> dict[str, frozenset[str]]:
    """The outdated CHILD_SAs that still exist (each goes once its successor is up: with its
    IKE_SA as a duplicate, or on its own when the new one shares the IKE_SA)."""
    present: dict[str, set[str]] = {}
    for sa in sas:
        present.setdefault(sa.connection, set()).add(sa.child_id)
    kept = {conn: ids & frozenset(present.get(conn, ())) for conn, ids in outdated.items()}
    return {conn: ids for conn, ids in kept.items() if ids}


@dataclass(frozen=True)
class IkeSa:
    """What the termination rules need of one IKE_SA."""

    ike_id: str
    connection: str
    peer: str  # address
    established: bool


def ike_sas(sas: Iterable[SecurityAssociation]) -> list[IkeSa]:
    """The IKE_SAs behind the CHILD_SA records (one per ike_id)."""
    seen: dict[str, IkeSa] = {}
    for sa in sas:
        if sa.ike_id and sa.ike_id not in seen:
            seen[sa.ike_id] = IkeSa(sa.ike_id, sa.connection, sa.peer,
                                    sa.ike_state == "ESTABLISHED")
    return list(seen.values())


def _newest_first(ids: Iterable[str]) -> list[str]:
    """charon numbers IKE_SAs in creation order: the highest id is the newest."""
    return sorted(ids, key=lambda i: (len(i), i), reverse=True)


@dataclass(frozen=True)
class Unwanted:
    """SAs to terminate, by why."""

    duplicates: frozenset[str] = frozenset()  # older established IKE_SAs of one connection
    superseded: frozenset[str] = frozenset()  # catch-all IKE_SAs with a now known peer
    # outdated CHILD_SAs (child ids) whose successor is installed in the same IKE_SA (charon
    # reuses an IKE_SA whose config did not change: a change of ESP settings only)
    replaced: frozenset[str] = frozenset()


def replaced_children(
    sas: Sequence[SecurityAssociation], outdated: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """Outdated CHILD_SAs with an installed successor (same child) in their own IKE_SA. One
    whose successor lives in a new IKE_SA goes with its IKE_SA, as a duplicate."""
    fresh = {(sa.connection, sa.ike_id, sa.child) for sa in sas
             if sa.state == "INSTALLED" and sa.child_id
             and sa.child_id not in outdated.get(sa.connection, frozenset())}
    return frozenset(sa.child_id for sa in sas
                     if sa.child_id in outdated.get(sa.connection, frozenset())
                     and (sa.connection, sa.ike_id, sa.child) in fresh)


def unwanted_ike_sas(
    sas: Sequence[SecurityAssociation],
    links: Sequence[PeerLink],
    catchall: Mapping[str, str],
    outdated: Mapping[str, frozenset[str]] | None = None,
) -> Unwanted:
    """SAs that should not exist. ``catchall``: catch-all connection name -> policy;
    ``outdated``: as for ``plan_initiations``."""
    superseded: set[str] = set()
    duplicates: set[str] = set()
    per_peer = {link.connection for link in links}
    known = {(link.policy, link.address) for link in links}
    by_connection: dict[str, list[IkeSa]] = {}
    for ike in ike_sas(sas):
        if ike.connection in per_peer:
            by_connection.setdefault(ike.connection, []).append(ike)
        elif ike.connection in catchall and (catchall[ike.connection], ike.peer) in known:
            superseded.add(ike.ike_id)
    for found in by_connection.values():
        established = _newest_first(i.ike_id for i in found if i.established)
        duplicates.update(established[1:])
    return Unwanted(frozenset(duplicates), frozenset(superseded),
                    replaced_children(sas, outdated or {}))


@dataclass
class TerminationGate:
    """A duplicate IKE_SA or a replaced CHILD_SA must be seen on two passes in a row before it
    goes (rekeying overlaps; packets still in flight on the old SA arrive meanwhile);
    catch-all SAs with known peers go at once (they only hurt)."""

    _candidates: frozenset[str] = frozenset()
    _children: frozenset[str] = frozenset()

    def confirm(self, unwanted: Unwanted) -> set[str]:
        """IKE_SA ids to close now."""
        confirmed = {i for i in unwanted.duplicates if i in self._candidates}
        self._candidates = unwanted.duplicates
        return confirmed | set(unwanted.superseded)

    def confirm_children(self, unwanted: Unwanted) -> set[str]:
        """CHILD_SA ids to close now."""
        confirmed = {i for i in unwanted.replaced if i in self._children}
        self._children = unwanted.replaced
        return confirmed
