"""The operator's I/O for IPsecPolicies: read the state, ask the pure modules, write, log.

The watch handlers (``handlers``) feed ``ClusterState``, which parses every object once and
says which policies to look at again; the ``Coalescer`` then calls ``reconcile(name)`` at most
once per interval per policy, which:
1. adds the ``strongmesh.io/teardown`` finalizer when ``finalizer`` says it is missing (the
   operator's only metadata write);
2. reads the policy's Secret, judged by ``verdicts``;
3. evaluates the policy (``evaluation``: status, status patch, what Events should say);
4. publishes the policy to the agents in IPsecPeerSlices (``peers.plan_publication``): the
   last spec that passed validation, whether it is being deleted, and its peers; only changed
   slices are written;
5. writes the status subresource when it differs from what the API serves: at once when a
   condition turns, progress no more often than ``schedule.StatusPacing`` allows;
6. posts the Events that ``events.decide_events`` asks for;
7. for a deleting policy, removes the finalizer when ``finalizer.decide_teardown`` says so;
   its slices go when the policy is gone.
IPsecNodes whose Node is gone are deleted on the Node's deletion event and by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.kubeapi import ApiError, ApiUnavailableError, KubeClient
from controller.models.common import GROUP, VERSION
from controller.models.peers import IPsecPeerSliceSpec
from controller.models.policy import IPsecPolicySpec, IPsecPolicyStatus
from controller.operator import events as ev
from controller.operator.evaluation import evaluate_policy
from controller.operator.finalizer import (
    JsonPatch,
    decide_teardown,
    finalizer_to_add,
    nodes_still_enforcing,
)
from controller.operator.metrics import OperatorMetrics
from controller.operator.overlap import overlaps_of
from controller.operator.peers import (
    SlicePlan,
    new_slice,
    plan_publication,
    plan_removal,
    policy_peers,
    replace_slice_spec,
)
from controller.operator.records import (
    PolicyMeta,
    PolicyRecord,
    SecretContents,
    SecretKey,
    in_force,
    policy_using_issuer,
)
from controller.operator.schedule import StatusPacing, reconcile_spacing
from controller.operator.secrets import SecretWatches
from controller.operator.signer import CSRS, CsrSigner
from controller.operator.state import ClusterState
from controller.operator.status import (
    OverduePairs,
    missing_pairs,
    rfc3339,
    selected_nodes,
    status_news,
)
from controller.operator.throttle import Coalescer
from controller.operator.verdicts import SecretAssessment, assess_secret, unreadable_secret
from controller.validation import IssuerCA

log = logging.getLogger(__name__)

POLICIES = f"/apis/{GROUP}/{VERSION}/ipsecpolicies"
IPSECNODES = f"/apis/{GROUP}/{VERSION}/ipsecnodes"
SLICES = f"/apis/{GROUP}/{VERSION}/ipsecpeerslices"
NODES = "/api/v1/nodes"


@dataclass(frozen=True)
class OperatorConfig:
    """Timings of the operator (seconds)."""

    # a policy is looked at (its slices published) at most every selected nodes/250 s within
    # [0.2 s, this], and its status progress written at most every max(this, nodes/250) s
    status_interval: float = 1.0
    optional_warn_interval: float = 3600.0  # the add-on's optional_warn_interval
    teardown_timeout: float = 300.0  # then the finalizer goes anyway, with a Warning
    resync_interval: float = 30.0  # re-evaluate every policy and sweep orphaned IPsecNodes
    event_namespace: str = "default"  # cluster-scoped objects' Events live here (like kopf)
    peer_grace: float = 60.0  # a pair without an SA for longer makes the policy Degraded
    # whose CSRs may get node certificates: the agent ServiceAccount (issuer mode)
    agent_user: str = "system:serviceaccount:strongmesh-system:strongmesh-agent"


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clocks:
    """The operator's clocks (tests bring their own): wall time for timestamps and the
    teardown timeout; monotonic seconds for the status throttle and repeated Events."""

    wall: Callable[[], datetime] = _wall_clock
    monotonic: Callable[[], float] = time.monotonic


_REMOVAL = "removal:"  # queue key prefix: the slices of a policy that is gone


class PolicyReconciler:
    """Brings each IPsecPolicy's status, slices, Events and finalizer in line with the cluster."""

    def __init__(
        self, client: KubeClient, config: OperatorConfig | None = None,
        clocks: Clocks | None = None, metrics: OperatorMetrics | None = None,
    ) -> None:
        self.client = client
        self.config = config or OperatorConfig()
        self.clocks = clocks or Clocks()
        self.metrics = metrics
        self.state = ClusterState()
        self.status_writes = 0
        self.slice_writes = 0
        self._posted: dict[str, dict[str, ev.Posted]] = {}
        self._overdue = OverduePairs()
        self._pacing = StatusPacing(self.config.status_interval)
        self._deferred: dict[str, asyncio.TimerHandle] = {}  # progress writes waiting
        self._rows: dict[str, int] = {}  # selected nodes per policy, at its last reconcile
        self._coalescer = Coalescer(
            self._counted_reconcile, self.config.status_interval, self.clocks.monotonic,
            expected=(ApiError, ApiUnavailableError),
            interval_of=lambda key: reconcile_spacing(
                self._rows.get(key, 0), self.config.status_interval),
        )
        self._instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._primed = asyncio.Event()
        self.signer = CsrSigner(
            client, self.config.agent_user, lambda: in_force(self.state.policies),
            lambda: self.state.nodes, self._issuer_ca, self._post_about,
        )
        self.secret_watches = SecretWatches(client, self.on_secret)

    # ---- called by the watch handlers -------------------------------------------------------
    def mark(self, names: set[str]) -> None:
        for name in names:
            self._coalescer.mark(name)

    def pending(self) -> set[str]:
        """Policies (and removals) waiting for their next pass."""
        return self._coalescer.pending()

    def on_policy(self, kind: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        affected = self.state.apply_policy(kind, body)
        if self.state.referenced() != self.secret_watches.keys():
            self.secret_watches.follow(self.state.referenced())
        if kind == "DELETED":
            self._coalescer.forget(name)
            self._posted.pop(name, None)
            self._overdue.forget(name)
            self._pacing.forget(name)
            self._rows.pop(name, None)
            if (timer := self._deferred.pop(name, None)) is not None:
                timer.cancel()
            affected.discard(name)
            if self.metrics is not None:
                self.metrics.forget(name)
            self._coalescer.mark(_REMOVAL + name)  # its slices go, through the same queue
        self.mark(affected)

    def on_node(self, kind: str | None, body: dict[str, Any]) -> None:
        self.mark(self.state.apply_node(kind, body))

    def on_ipsec_node(self, kind: str | None, body: dict[str, Any]) -> None:
        self.mark(self.state.apply_ipsec_node(kind, body))

    def on_secret(self, kind: str | None, body: dict[str, Any]) -> None:
        self.mark(self.state.apply_secret(kind, body))

    def on_slice(self, kind: str | None, body: dict[str, Any]) -> None:
        self.mark(self.state.apply_slice(kind, body))

    # ---- background work ---------------------------------------------------------------------
    async def prime(self) -> None:
        """List everything once, so the first status writes see the whole cluster."""
        for path, apply in (
            (NODES, self.state.apply_node),
            (IPSECNODES, self.state.apply_ipsec_node),
            (SLICES, self.state.apply_slice),
            (POLICIES, self.state.apply_policy),
        ):
            doc = await self.client.get(path)
            for item in doc.get("items") or []:
                apply("ADDED", item)
        self.secret_watches.follow(self.state.referenced())
        self.mark(set(self.state.policies))
        with contextlib.suppress(ApiError):  # no CSR API access: issuer mode stays unserved
            self.signer.requeue_pending((await self.client.get(CSRS)).get("items") or [])
        orphaned = {s.policy for s in self.state.slices.values()} - set(self.state.policies)
        self.mark({_REMOVAL + name for name in orphaned})

    async def run(self) -> None:
        """Prime, then write statuses and sweep periodically, until cancelled.

        The status writer starts at once (so that ``run`` creates no task later: kopf, which
        shares the loop, treats tasks created after its start as its own and waits for them
        at shutdown) but writes nothing before the caches are primed.
        """
        writer = asyncio.create_task(self._coalescer.run())
        signer = asyncio.create_task(self.signer.run())
        try:
            delay = 0.5
            while True:
                try:
                    await self.prime()
                    break
                except (ApiError, ApiUnavailableError) as error:
                    log.warning("cannot list the cluster yet: %s", error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            self._primed.set()
            while True:
                await asyncio.sleep(self.config.resync_interval)
                self.mark(set(self.state.policies))
                with contextlib.suppress(ApiError, ApiUnavailableError):
                    await self.sweep_orphans()
                    self.signer.requeue_pending((await self.client.get(CSRS)).get("items") or [])
        finally:
            for task in (writer, signer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.secret_watches.close()

    # ---- garbage collection ------------------------------------------------------------------
    async def collect(self, node_name: str) -> bool:
        """Delete the IPsecNode of a Node that no longer exists (checked against the API)."""
        try:
            await self.client.get(f"{NODES}/{node_name}")
            return False  # the Node exists (again): keep its IPsecNode
        except ApiError as error:
            if error.status != 404:
                raise
        try:
            await self.client.delete(f"{IPSECNODES}/{node_name}")
        except ApiError as error:
            if error.status != 404:
                raise
            return False
        log.info("deleted IPsecNode %s: its Node is gone", node_name)
        return True

    async def sweep_orphans(self) -> list[str]:
        """Collect the IPsecNodes whose Node the watches say is gone (``collect`` asks the API
        before deleting). From the watches' cache, not a list: at a thousand nodes listing
        every IPsecNode each resync cost the operator most of its CPU at rest."""
        collected = []
        for name in sorted(self.state.ipsec_node_names - set(self.state.nodes)):
            if await self.collect(name):
                collected.append(name)
        return collected

    # ---- one policy --------------------------------------------------------------------------
    async def _counted_reconcile(self, key: str) -> None:
        try:
            await self.reconcile(key)
        except Exception:
            if self.metrics is not None:
                self.metrics.reconcile_errors.inc()
            raise

    async def reconcile(self, key: str) -> None:
        await self._primed.wait()
        if key.startswith(_REMOVAL):
            policy = key.removeprefix(_REMOVAL)
            if policy not in self.state.policies:
                await self._write_slices(plan_removal(self.state.slices_of(policy)), None)
            return
        record = self.state.policies.get(key)
        if record is None:
            return
        if (patch := finalizer_to_add(record.meta)) is not None:
            await self._add_finalizer(key, patch)
        now = self.clocks.wall()
        spec = record.checked.spec
        secret = None if spec is None else await self._assess_secret(spec, record.secret, now)
        overlaps = [] if spec is None else overlaps_of(key, self.state.policies, self.state.nodes)
        overdue: tuple[tuple[str, str], ...] = ()
        if spec is not None:
            selected = selected_nodes(spec.node_selector, self.state.nodes)
            published = {p.node: p.address for p in policy_peers(
                key, spec.node_selector, self.state.nodes, self.state.ipsec_nodes)}
            overdue, due_in = self._overdue.update(
                key, missing_pairs(key, self.state.ipsec_nodes, selected, published),
                self.clocks.monotonic(), self.config.peer_grace)
            if due_in is not None:  # look again when the next missing pair becomes overdue
                asyncio.get_running_loop().call_later(due_in + 0.1, self.mark, {key})
        evaluation = evaluate_policy(
            record, secret, overlaps, self.state.nodes, self.state.ipsec_nodes, now, overdue
        )
        self._rows[key] = len(evaluation.status.nodes)
        if self.metrics is not None:
            self.metrics.observe(key, evaluation.status, secret.not_after if secret else None, now)
        # the agents' inputs first: a status with a row per node is the larger write, and
        # nothing waits for it but people
        await self._write_slices(plan_publication(
            record, secret.issuer if secret else None, self.state.slices_of(key),
            self.state.nodes, self.state.ipsec_nodes, self.state.pod_cidrs,
        ), record.meta)
        if evaluation.status_patch is not None:
            await self._paced_status(key, record.served_status, evaluation.status,
                                     evaluation.status_patch)
        await self._post_events(record.meta, evaluation.events)
        await self._finish_deletion(record, now)

    async def _secret(self, key: SecretKey) -> SecretContents | None:
        """The Secret (None: not found): read once, then kept current by its watch."""
        if key in self.state.secrets:
            return self.state.secrets[key]
        namespace, name = key
        try:
            body = await self.client.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as error:
            if error.status != 404:
                raise
            body = None
        return self.state.keep_secret(key, body)

    async def _assess_secret(
        self, spec: IPsecPolicySpec, key: SecretKey | None, now: datetime
    ) -> SecretAssessment:
        try:
            secret = None if key is None else await self._secret(key)
        except ApiError as error:
            # Not cached: the Secret's watch keeps retrying and reports it once readable,
            # e.g. after the chart's credentials.secretNames was extended.
            if error.status != 403 or key is None:
                raise
            return unreadable_secret(key, error.message)
        return assess_secret(spec, secret, now)

    async def _paced_status(
        self, key: str, served: IPsecPolicyStatus | None, status: IPsecPolicyStatus,
        patch: dict[str, Any],
    ) -> None:
        """Write the status now, or (progress only) when its pacing allows: then look again."""
        now = self.clocks.monotonic()
        news = status_news(served) != status_news(status)
        wait = self._pacing.wait(key, news, len(status.nodes), now)
        if wait > 0:
            if key not in self._deferred:
                self._deferred[key] = asyncio.get_running_loop().call_later(
                    wait, self._deferred_due, key)
            return
        await self._write_status(key, patch)
        self._pacing.written(key, now)

    def _deferred_due(self, key: str) -> None:
        self._deferred.pop(key, None)
        self._coalescer.mark(key)

    async def _write_status(self, name: str, patch: dict[str, Any]) -> None:
        try:
            served = await self.client.merge_patch(f"{POLICIES}/{name}/status", patch)
        except ApiError as error:
            if error.status == 404:
                return  # deleted meanwhile
            raise
        self.status_writes += 1
        if self.metrics is not None:
            self.metrics.status_writes.inc()
        if isinstance(served, dict):
            self.state.apply_own_write(served)

    async def _add_finalizer(self, name: str, patch: JsonPatch) -> None:
        try:
            served = await self.client.json_patch(f"{POLICIES}/{name}", patch)
        except ApiError as error:
            if error.status in (404, 409, 422):
                log.info("finalizer of %s: %s; retrying with the next version", name, error)
                self._coalescer.mark(name)
                return
            raise
        if isinstance(served, dict):
            self.state.apply_own_write(served)

    async def _finish_deletion(self, record: PolicyRecord, now: datetime) -> None:
        teardown = decide_teardown(
            record.meta,
            nodes_still_enforcing(record.name, self.state.ipsec_nodes, self.state.nodes),
            now, self.config.teardown_timeout,
        )
        if teardown.warning is not None:
            await self._post(record.meta, teardown.warning)
        if teardown.removal is None:
            return
        try:
            served = await self.client.json_patch(f"{POLICIES}/{record.name}", teardown.removal)
        except ApiError as error:
            if error.status in (409, 422):
                self._coalescer.mark(record.name)
            elif error.status != 404:
                raise
            return
        # The API deletes the object now; until its DELETED event arrives, remember that the
        # finalizer is gone so that a resync does not act (or warn) twice.
        if isinstance(served, dict):
            self.state.apply_own_write(served)

    # ---- the CSR signer's view ---------------------------------------------------------------
    async def _issuer_ca(self, issuer: str) -> IssuerCA | None:
        """The issuing CA of a Secret ``ns/name`` some policy in force uses, if it validates."""
        namespace, _, name = issuer.partition("/")
        record = policy_using_issuer(self.state.policies, (namespace, name))
        if record is None or record.valid_spec is None:
            return None
        return (await self._assess_secret(record.valid_spec, record.secret,
                                          self.clocks.wall())).issuer

    async def _post_about(self, obj: Mapping[str, Any], spec: ev.EventSpec) -> None:
        """An Event about any cluster-scoped object (a CSR)."""
        await self._post_event(ev.object_reference(obj), spec)

    # ---- IPsecPeerSlices ---------------------------------------------------------------------
    async def _write_slices(self, plan: SlicePlan, owner: PolicyMeta | None) -> None:
        for name, spec in plan.upserts.items():
            if name in self.state.slices:
                call = self.client.json_patch(f"{SLICES}/{name}", replace_slice_spec(spec))
            else:
                call = self.client.create(SLICES, new_slice(name, spec, owner))
            await self._slice_call(name, call, spec)
        for name in plan.deletes:
            await self._slice_call(name, self.client.delete(f"{SLICES}/{name}"), None)

    async def _slice_call(
        self, name: str, call: Awaitable[Any], spec: IPsecPeerSliceSpec | None
    ) -> None:
        """One slice write; the state follows at once (the watch event then changes nothing)."""
        try:
            await call
        except ApiError as error:
            if error.status == 409 and spec is not None:  # created meanwhile: patch next time
                self.state.slices[name] = spec.model_copy(update={"peers": []})
            elif error.status != 404:
                raise
            if spec is not None:
                self._coalescer.mark(spec.policy)
            return
        self.slice_writes += 1
        if spec is None:
            self.state.slices.pop(name, None)
        else:
            self.state.slices[name] = spec

    # ---- events ------------------------------------------------------------------------------
    async def _post_events(self, meta: PolicyMeta, facts: ev.EventFacts) -> None:
        todo, self._posted[meta.name] = ev.decide_events(
            facts, self._posted.get(meta.name, {}), self.clocks.monotonic(),
            self.config.optional_warn_interval,
        )
        for spec in todo:
            await self._post(meta, spec)

    async def _post(self, meta: PolicyMeta, spec: ev.EventSpec) -> None:
        await self._post_event(ev.policy_reference(meta), spec)

    async def _post_event(self, involved: Mapping[str, str], spec: ev.EventSpec) -> None:
        name = involved["name"]
        log.log(
            logging.WARNING if spec.type == "Warning" else logging.INFO,
            "%s %s: %s", name, spec.reason, spec.message,
        )
        event = ev.event_body(involved, spec, self.config.event_namespace, self._instance,
                              rfc3339(self.clocks.wall()))
        try:
            await self.client.create(
                f"/api/v1/namespaces/{self.config.event_namespace}/events", event
            )
        except (ApiError, ApiUnavailableError) as error:
            log.warning("could not post event %s for %s: %s", spec.reason, name, error)
