"""One reconcile pass: inputs -> desired -> actual -> diff -> apply -> status.

Deciding is pure (``desired_state``, ``resolve`` in ``state``, the renderers and planners of
``controller.strongswan`` and ``controller.xfrm``); ``NodeReconciler`` does the I/O through two
ports so that tests can replace charon and the kernel with fakes. The kernel side is applied
first: Required traffic is blocked before charon learns anything, and stays blocked if charon
is down. Nothing is torn down except what the desired state no longer contains.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from controller.agent.interfaces import AgentInputs
from controller.agent.peering import (
    Attempts,
    TerminationGate,
    by_connection,
    link_installed,
    negotiated_before,
    plan_initiations,
    still_outdated,
    unwanted_ike_sas,
)
from controller.agent.state import CredentialCheck, GoodPolicy, Resolution, resolve
from controller.facts import NodeCredentials, NodeFacts
from controller.models.node import (
    ESTABLISHED_CHILD_STATES,
    CertificateInfo,
    EnforcedPolicy,
    IPsecNodeStatus,
    SecurityAssociation,
)
from controller.models.peers import Peer
from controller.models.policy import CertificateExpiry, IPsecPolicySpec
from controller.mtu import mtu_facts
from controller.ownership import reqid_for
from controller.pki import certificate_facts, node_identity
from controller.scope import node_address_for, pod_space, pods_in_scope
from controller.strongswan import (
    ActualCharon,
    CharonPlan,
    CharonPolicy,
    DesiredCharon,
    conn_name,
    plan_changes,
    render_charon,
)

# (imported at start, not in the first pass that needs it: inside the lab's kernel, over
# hostfs, importing the validation library and cryptography's x509 made each agent's first
# pass with a policy about 0.4 s longer, on the time from the policy's creation to its SAs)
from controller.validation import validate_credentials
from controller.xfrm import (
    ProtectEntry,
    XfrmApplyError,
    XfrmPlan,
    XfrmPolicy,
    XfrmState,
    acq_expires_for,
    desired_policies,
    plan_policies,
    stale_states,
)

log = logging.getLogger(__name__)


class CharonPort(Protocol):
    """What the pass needs from charon (``controller.strongswan.Charon``)."""

    def read_actual(self) -> ActualCharon: ...
    def apply(self, plan: CharonPlan) -> None: ...
    def list_sas(self) -> list[SecurityAssociation]: ...
    def initiate(self, connection: str, child: str | None = None) -> None: ...
    def terminate_ike(self, ike_id: str) -> None: ...
    def terminate_child(self, child_id: str) -> None: ...
    def charon_id(self) -> str: ...
    def close(self) -> None: ...


class XfrmPort(Protocol):
    """What the pass needs from the kernel (``controller.xfrm.Xfrm``)."""

    def read_policies(self) -> frozenset[XfrmPolicy]: ...
    def apply(self, plan: XfrmPlan) -> None: ...
    def read_states(self) -> list[XfrmState]: ...
    def delete_states(self, states: Iterable[XfrmState]) -> None: ...
    def set_acq_expires(self, seconds: int) -> None: ...
    def get_acq_expires(self) -> int: ...


@dataclass(frozen=True)
class DesiredNode:
    """Everything the node should hold, for the policies it enforces."""

    charon: DesiredCharon
    xfrm: frozenset[XfrmPolicy]
    acq_expires: int | None
    reqids: Mapping[str, tuple[int, int, int]]
    identity: str
    problems: Mapping[str, str] = field(default_factory=dict)


PEERS_SUFFIX = "#peers"  # never part of a policy name
TUNNELS_SUFFIX = "#tunnels"
# after charon restarted, this node initiates every link it lost for this long (its peers'
# halves are stale; they would notice only at their next dead-peer check)
RESTART_WINDOW_SECONDS = 60.0


def assign_reqids(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """Per policy (catch-all, per-peer transport, per-peer pod tunnel) reqids, assigned in name
    order so every pass (and restart) agrees."""
    taken: list[int] = []
    result = {}
    for name in sorted(names):
        three = []
        for key in (name, name + PEERS_SUFFIX, name + TUNNELS_SUFFIX):
            reqid = reqid_for(key, taken)
            taken.append(reqid)
            three.append(reqid)
        result[name] = (three[0], three[1], three[2])
    return result


def desired_state(enforce: Sequence[GoodPolicy], node: NodeFacts) -> DesiredNode:
    """The desired charon and kernel state of the node. Pure."""
    reqids = assign_reqids([g.name for g in enforce])
    spaces = {g.name: pod_space(g.policy.spec, [*node.pod_cidrs, *(c for p in g.peers
                                                                  for c in p.pod_cidrs)],
                                [*node.addresses, *(p.address for p in g.peers)])
              for g in enforce}
    charon = render_charon([
        CharonPolicy(g.policy, g.credentials, reqid=catchall, peer_reqid=per_peer,
                     peers=with_identities(g), tunnel_reqid=tunnel, pod_space=spaces[g.name])
        for g in enforce for catchall, per_peer, tunnel in [reqids[g.name]]
    ], node)
    problems = dict(charon.problems)
    peers: dict[str, list[str]] = {}
    # policy -> (peer address, its pod CIDRs) for every peer with a pod tunnel
    tunnels: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for link in charon.links:
        peers.setdefault(link.policy, []).append(link.address)
        if link.pods:
            tunnels.setdefault(link.policy, []).append((link.address, link.pods.remote))
    by_address: dict[str, list[ProtectEntry]] = {}
    for g in enforce:
        if g.name in problems:
            continue
        address = node_address_for(g.policy.spec, node)
        if address is not None:
            catchall, per_peer, tunnel = reqids[g.name]
            peer_pods = tuple(tunnels.get(g.name, ()))
            by_address.setdefault(address, []).append(ProtectEntry(
                g.policy.spec, catchall, per_peer, peers=tuple(peers.get(g.name, ())),
                # the node's own pods, peers or not: Required blocks their pod space at once
                tunnel_reqid=tunnel, local_pods=pods_in_scope(
                    g.policy.spec, node.pod_cidrs, ipaddress.ip_address(address).version),
                peer_pods=peer_pods, pod_space=spaces[g.name],
            ))
    policies: set[XfrmPolicy] = set()
    for address, entries in by_address.items():
        others = [a for a in node.addresses if a != address]
        policies |= desired_policies(entries, address, local_addresses=others)
    identity = next((g.credentials.subject for g in enforce if g.name not in problems), "")
    return DesiredNode(
        charon=charon,
        xfrm=frozenset(policies),
        acq_expires=acq_expires_for([g.policy.spec for g in enforce]),
        reqids=reqids,
        identity=identity,
        problems=problems,
    )


def with_identities(good: GoodPolicy) -> tuple[Peer, ...]:
    """The policy's peers, each with the identity it will prove. A member that does not
    enforce the policy yet is listed without one; its connection is loaded now all the same,
    with the identity it will report (so that it is not loaded again when it does): with a
    shared Secret every node proves its certificate's subject, in issuer mode the one subject
    the signer certifies for it."""
    if all(p.identity for p in good.peers):
        return good.peers
    issued = good.policy.spec.credentials.issuer is not None
    return tuple(
        p if p.identity else p.model_copy(update={
            "identity": node_identity(p.node) if issued else good.credentials.subject})
        for p in good.peers
    )


def cached_credential_check(
    secret_data: Mapping[str, str], expiry: CertificateExpiry
) -> tuple[NodeCredentials | None, list[str]]:
    """The credential check of ``controller.validation``, as ``resolve`` wants it.

    Every pass checks the same Secret again; the verdict is kept per content for the minute
    (certificate validity depends on the time). Expiry warnings are the operator's to raise
    (it reads the same Secret): a node reports only what refuses the credentials."""
    creds, problems = _checked(
        tuple(sorted(secret_data.items())), expiry.model_dump_json(), int(time.time() // 60))
    return creds, list(problems)


@functools.lru_cache(maxsize=16)
def _checked(
    secret_items: tuple[tuple[str, str], ...], expiry_json: str, minute: int
) -> tuple[NodeCredentials | None, tuple[str, ...]]:
    expiry = CertificateExpiry.model_validate_json(expiry_json)
    creds, findings = validate_credentials(dict(secret_items), expiry)
    problems = tuple(str(f) for f in findings if f.severity == "error")
    return (creds if not problems else None), problems


@dataclass(frozen=True)
class PassResult:
    """What one pass did and found."""

    status: IPsecNodeStatus
    identity: str
    seconds: float
    xfrm_changes: int
    charon_changed: bool
    charon_ok: bool
    stale_deleted: int = 0
    # seconds until an initiation back-off runs out (None: no peer waits for one)
    retry_in: float | None = None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeReconciler:
    """Holds the connections and the last good state across passes."""

    def __init__(
        self,
        charon_factory: Callable[[], CharonPort],
        xfrm: XfrmPort,
        credential_check: CredentialCheck = cached_credential_check,
        plan_charon: Callable[[DesiredCharon, ActualCharon], CharonPlan] = plan_changes,
        clock: Callable[[], float] = time.monotonic,
        verify_seconds: float = 30.0,
    ) -> None:
        """``verify_seconds``: how long charon's configuration, once read back (or loaded),
        is trusted to be unchanged; the agent's drift-repair interval."""
        self._charon_factory = charon_factory
        self._charon: CharonPort | None = None
        self._xfrm = xfrm
        self._check = credential_check
        self._plan_charon = plan_charon
        self.last_good: Mapping[str, GoodPolicy] = {}
        self.charon_id: str | None = None
        self._stale_candidates: frozenset[tuple[str, str, int]] = frozenset()
        self._attempts: Mapping[str, Attempts] = {}
        self._termination = TerminationGate()
        self._restarted_at: float | None = None  # when charon was last seen restarted
        # per connection, its IKE_SAs negotiated before its config changed (make before break)
        self._outdated: Mapping[str, frozenset[str]] = {}
        self._clock = clock
        # what charon held at the last look (its instance and the configuration), and when:
        # a pass re-reads it only when it may have changed (see _apply_charon)
        self._charon_seen: tuple[str, Hashable] | None = None
        self._charon_seen_at = 0.0
        self._verify_seconds = verify_seconds
        self._desired_memo: tuple[tuple[tuple[GoodPolicy, ...], NodeFacts], DesiredNode] | None \
            = None

    def close(self) -> None:
        """Drop connections only; the node keeps everything it enforces."""
        self._charon_seen = None
        if self._charon is not None:
            self._charon.close()
            self._charon = None

    def run_pass(self, inputs: AgentInputs) -> PassResult:
        started = time.monotonic()
        resolution: Resolution = resolve(inputs, self.last_good, self._check)
        self.last_good = resolution.last_good
        desired = self._desired(resolution.enforce, inputs.node)
        errors = list(resolution.errors)
        errors += [f"policy {name}: {why}" for name, why in desired.problems.items()]

        # Unreadable inputs and no good state known (e.g. a restart during an API outage):
        # the node may hold a perfectly good state from before; change nothing.
        hold = bool(inputs.errors) and not resolution.enforce
        xfrm_changes = 0 if hold else self._apply_kernel(desired, errors)
        charon_changed, charon_ok, sas, stale = self._apply_charon(desired, errors, hold)

        certificates = {g.name: certificate_info(g.credentials.cert_pem)
                        for g in resolution.enforce}
        specs = {g.name: g.policy.spec for g in resolution.enforce}
        mtus = dict(inputs.node.mtus)
        # a CHILD_SA negotiated under a config that has changed still carries traffic, but its
        # link is not done until the successor is up: Ready must not come early
        current = [sa for sa in sas
                   if sa.child_id not in self._outdated.get(sa.connection, frozenset())]
        policies = [
            _with_peers(p, desired, sas, current, certificates.get(p.name),
                        _mtu_fields(specs.get(p.name), desired.charon.addresses.get(p.name, ""),
                                    mtus))
            if p.name not in desired.problems
            else p.model_copy(update={"enforcing": False, "message": desired.problems[p.name]})
            for p in resolution.policies
        ]
        status = IPsecNodeStatus(
            policies=policies,
            sas=sas,
            errors=errors,
            established_sas=sum(1 for sa in sas if sa.state == "INSTALLED"),
            last_heartbeat=now_rfc3339(),
        )
        return PassResult(
            status=status,
            identity=desired.identity,
            seconds=time.monotonic() - started,
            xfrm_changes=xfrm_changes,
            charon_changed=charon_changed,
            charon_ok=charon_ok,
            stale_deleted=stale,
            retry_in=self._next_attempt_in(desired, current),
        )

    def _desired(self, enforce: tuple[GoodPolicy, ...], node: NodeFacts) -> DesiredNode:
        """``desired_state``, computed again only when what it depends on changed: with a
        thousand peers, rendering them was 40% of a pass that then found nothing to do, and
        most passes do (resync, SA events). Unchanged inputs are mostly the very same objects,
        so the comparison is cheap."""
        if self._desired_memo is None or self._desired_memo[0] != (enforce, node):
            self._desired_memo = ((enforce, node), desired_state(enforce, node))
        return self._desired_memo[1]

    def _apply_kernel(self, desired: DesiredNode, errors: list[str]) -> int:
        try:
            plan = plan_policies(desired.xfrm, self._xfrm.read_policies())
            if not plan.empty:
                for action, policy in plan.steps():
                    log.info("xfrm %s: %s", action, policy.describe())
                self._xfrm.apply(plan)
            if (
                desired.acq_expires is not None
                and self._xfrm.get_acq_expires() != desired.acq_expires
            ):
                self._xfrm.set_acq_expires(desired.acq_expires)
                log.info("net.core.xfrm_acq_expires = %d", desired.acq_expires)
            return len(plan.steps())
        except XfrmApplyError as exc:
            errors.extend(f"xfrm: {f}" for f in exc.failures)
        except OSError as exc:
            errors.append(f"xfrm: {exc}")
        return 0

    def _apply_charon(
        self, desired: DesiredNode, errors: list[str], hold: bool = False
    ) -> tuple[bool, bool, list[SecurityAssociation], int]:
        try:
            charon = self._connect()
            current = charon.charon_id()
            if self.charon_id is not None and current != self.charon_id:
                log.warning("charon restarted (%s -> %s): loading everything", self.charon_id,
                            current)
                self._restarted_at = self._clock()
                self._attempts = {}  # nothing of the old charon's is under way any more
                self._outdated = {}
            self.charon_id = current
            # Reading charon's configuration back costs four VICI calls (and charon's CPU) on
            # every pass, and most passes (SA events, peers becoming ready, slices that changed
            # nothing for charon) would find it as this agent left it. So it is read when it
            # may differ: another charon process, another desired configuration, or
            # ``verify_seconds`` since the last look (someone unloaded a connection).
            config = charon_config(desired.charon)
            now = self._clock()
            if (self._charon_seen == (current, config)
                    and now - self._charon_seen_at < self._verify_seconds):
                plan = CharonPlan()
            else:
                plan = self._plan_charon(desired.charon, charon.read_actual())
                self._charon_seen_at = now
            changed = not hold and not plan.is_empty
            if changed:
                # The SAs to replace are those negotiated before the new config is loaded:
                # read after it, the list also holds a peer's new SA that the load let in
                # (the initiator was waiting for it), which would then never count.
                if plan.renegotiate_conns:
                    self._outdated = {**self._outdated, **negotiated_before(
                        plan.renegotiate_conns, charon.list_sas())}
                log.info("charon: applying changes (%s)", _describe_plan(plan))
                charon.apply(plan)
            # charon holds ``config`` now, unless this pass held its changes back
            self._charon_seen = None if hold else (current, config)
            states = self._xfrm.read_states()
            sas = charon.list_sas()
            self._outdated = still_outdated(self._outdated, sas)
            if not hold:
                self._negotiate(charon, desired, sas)
        except Exception as exc:  # charon down, restarting, or refusing: retry soon
            errors.append(f"charon: {type(exc).__name__}: {exc}")
            self.close()
            return False, False, [], 0
        return changed, True, sas, 0 if hold else self._remove_stale(states, sas)

    def _negotiate(
        self, charon: CharonPort, desired: DesiredNode, sas: list[SecurityAssociation]
    ) -> None:
        """Initiate the connections this node is the initiator of and that lack an SA; close
        the IKE_SAs that should not exist (``controller.agent.peering``)."""
        links = desired.charon.links
        now = self._clock()
        after_restart = (self._restarted_at is not None
                         and now - self._restarted_at < RESTART_WINDOW_SECONDS)
        plan = plan_initiations(links, sas, self._attempts, now, every_link=after_restart,
                                outdated=self._outdated)
        self._attempts = plan.attempts
        for connection, child in plan.initiate:
            log.info("initiating %s", child)
            try:
                charon.initiate(connection, child)
            except Exception as exc:  # refused now; the back-off retries it
                log.warning("initiating %s failed: %s", child, exc)
        catchall = {conn_name(name): name for name in desired.charon.addresses}
        unwanted = unwanted_ike_sas(sas, links, catchall, self._outdated)
        for ike_id in sorted(self._termination.confirm(unwanted)):
            log.info("closing IKE_SA #%s: a duplicate, or superseded by a per-peer connection",
                     ike_id)
            try:
                charon.terminate_ike(ike_id)
            except Exception as exc:
                log.warning("closing IKE_SA #%s failed: %s", ike_id, exc)
        for child_id in sorted(self._termination.confirm_children(unwanted)):
            log.info("closing CHILD_SA #%s: replaced after a config change", child_id)
            try:
                charon.terminate_child(child_id)
            except Exception as exc:
                log.warning("closing CHILD_SA #%s failed: %s", child_id, exc)

    def _next_attempt_in(
        self, desired: DesiredNode, sas: Sequence[SecurityAssociation]
    ) -> float | None:
        """When the loop should come back for an initiation that is due later."""
        grouped = by_connection(sas)
        waiting = [
            self._attempts[child].next_at
            for link in desired.charon.links if not link_installed(grouped, link)
            for child in link.all_children if child in self._attempts
        ]
        return max(0.0, min(waiting) - self._clock()) if waiting else None

    def _remove_stale(self, states: list[XfrmState], sas: list[SecurityAssociation]) -> int:
        """Delete owned SAs charon does not know, once they were stale on two passes in a row."""
        live = [s for sa in sas for s in (sa.spi_in, sa.spi_out) if s]
        stale = stale_states(states, live)
        keys = frozenset((s.src, s.dst, s.spi) for s in stale)
        confirmed = [s for s in stale if (s.src, s.dst, s.spi) in self._stale_candidates]
        self._stale_candidates = keys
        if confirmed:
            log.info("removing %d stale SAs: %s", len(confirmed),
                     ", ".join(s.describe() for s in confirmed))
            try:
                self._xfrm.delete_states(confirmed)
            except OSError as exc:
                log.warning("removing stale SAs failed: %s", exc)
        return len(confirmed)

    def _connect(self) -> CharonPort:
        if self._charon is None:
            self._charon = self._charon_factory()
        return self._charon


def charon_config(desired: DesiredCharon) -> Hashable:
    """What ``plan_changes`` compares of the desired charon state: every connection's
    fingerprint and the names (content digests) of the credentials. Equal values need the
    same charon configuration; the links and addresses beside it do not count."""
    return (tuple(sorted(desired.fingerprints.items())), frozenset(desired.certs),
            frozenset(desired.keys), frozenset(desired.authorities))


def _with_peers(
    entry: EnforcedPolicy, desired: DesiredNode, sas: Sequence[SecurityAssociation],
    current: Sequence[SecurityAssociation], certificate: CertificateInfo | None,
    mtu: Mapping[str, int] | None = None,
) -> EnforcedPolicy:
    """The policy's status row with its address, how many expected peers (ready ones: the
    others do not enforce the policy yet) have an SA (of the ``current`` config: none that is
    being replaced), the certificate the node authenticates with, and what ESP leaves of the
    interface MTU."""
    links = [link for link in desired.charon.links
             if link.policy == entry.name and link.peer_ready]
    grouped = by_connection(current)
    missing = sorted(link.peer for link in links if not link_installed(grouped, link))
    established = sum(sa.policy == entry.name and sa.state.upper() in ESTABLISHED_CHILD_STATES
                      for sa in sas)
    return entry.model_copy(update={
        "established_sas": established,
        "address": desired.charon.addresses.get(entry.name, ""),
        "expected_peers": len(links),
        "established_peers": len(links) - len(missing),
        "missing_peers": missing,
        "certificate": certificate,
        **(mtu or {}),
    })


def _mtu_fields(spec: IPsecPolicySpec | None, address: str,
                mtus: Mapping[str, int]) -> dict[str, int]:
    """The status's MTU fields for a policy protecting ``address`` (none when its interface's
    MTU is unknown; no sizes when a proposal cannot be sized). Without forced UDP
    encapsulation this assumes no NAT between nodes (NAT adds 8 bytes)."""
    interface_mtu = mtus.get(address)
    if spec is None or interface_mtu is None:
        return {}
    try:
        facts = mtu_facts(interface_mtu, tuple(spec.esp.proposals), spec.mode == "Tunnel",
                          6 if ":" in address else 4, spec.force_udp_encapsulation)
    except ValueError:
        return {"interface_mtu": interface_mtu}
    return {"interface_mtu": interface_mtu, "esp_overhead": facts.overhead,
            "max_inner_packet": facts.max_inner}


@functools.lru_cache(maxsize=32)
def certificate_info(cert_pem: str) -> CertificateInfo:
    facts = certificate_facts(cert_pem)
    return CertificateInfo(subject=facts.subject, issuer=facts.issuer,
                           not_after=facts.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _describe_plan(plan: CharonPlan) -> str:
    """Connection names and credential counts only: a plan holds private keys, never logged."""
    parts = []
    if plan.clear_creds:
        parts.append("clear credentials")
    if plan.unload_conns:
        parts.append(f"unload {', '.join(plan.unload_conns)}")
    if plan.load_conns:
        parts.append(f"load {', '.join(sorted(plan.load_conns))}")
    for label, items in (
        ("certificates", plan.load_certs), ("keys", plan.load_keys),
        ("CAs", plan.load_authorities), ("unloaded keys", plan.unload_keys),
        ("unloaded CAs", plan.unload_authorities),
    ):
        if items:
            parts.append(f"{len(items)} {label}")
    return "; ".join(parts) or "nothing"
