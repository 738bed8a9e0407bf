"""The operator's I/O glue: compute a policy's status, write it, and own the deletion flow.

The watch handlers (``handlers``) only update ``ClusterState`` and mark policies dirty; the
``Coalescer`` then calls ``reconcile(name)`` at most once per second per policy, which:
1. ensures the ``strongmesh.io/teardown`` finalizer (the operator's only metadata write);
2. checks the policy body and its Secret with the shared validation library;
3. computes the status (pure ``status.compute_status``) and writes it to the status
   subresource only when it differs from what the API serves;
4. publishes the policy to the agents in IPsecPeerSlices (``peers``): the last spec that
   passed validation, whether it is being deleted, and its peers; only changed slices are
   written, and an invalid edit leaves them as they are (the nodes keep the last good spec);
5. posts the Events that ``events.decide_events`` asks for;
6. for a deleting policy, removes the finalizer once no existing node's IPsecNode still lists
   the policy (the agents have torn down), or after ``teardown_timeout`` with a Warning; its
   slices go when the policy is gone.
IPsecNodes whose Node is gone are deleted on the Node's deletion event and by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.kubeapi import ApiError, ApiUnavailableError, KubeClient
from controller.models.common import API_VERSION, GROUP, VERSION
from controller.models.peers import IPsecPeerSliceSpec
from controller.models.policy import IPsecPolicy, IPsecPolicySpec, IPsecPolicyStatus
from controller.operator import events as ev
from controller.operator.metrics import OperatorMetrics
from controller.operator.overlap import PolicyScope, find_overlaps
from controller.operator.peers import SlicePlan, plan_removal, plan_slices, policy_peers
from controller.operator.secrets import SecretWatches
from controller.operator.signer import CSRS, CsrSigner
from controller.operator.state import ClusterState, secret_ref
from controller.operator.status import (
    READY,
    CredentialsVerdict,
    OverlapReport,
    PolicyFacts,
    compute_status,
    condition,
    invalid_body_status,
    missing_pairs,
    policies_listed,
    selected_nodes,
)
from controller.operator.throttle import Coalescer
from controller.operator.verdicts import CredentialsCheck, check_credentials, check_policy
from controller.pki import fingerprint
from controller.validation import IssuerCA

log = logging.getLogger(__name__)

FINALIZER = "strongmesh.io/teardown"
POLICIES = f"/apis/{GROUP}/{VERSION}/ipsecpolicies"
IPSECNODES = f"/apis/{GROUP}/{VERSION}/ipsecnodes"
SLICES = f"/apis/{GROUP}/{VERSION}/ipsecpeerslices"
NODES = "/api/v1/nodes"


class SecretUnreadableError(Exception):
    """RBAC does not let the operator read the Secret a policy references."""


@dataclass(frozen=True)
class OperatorConfig:
    """Timings of the operator (seconds)."""

    status_interval: float = 1.0  # at most one status write per policy per interval
    optional_warn_interval: float = 3600.0  # the add-on's optional_warn_interval
    teardown_timeout: float = 300.0  # then the finalizer goes anyway, with a Warning
    resync_interval: float = 30.0  # re-evaluate every policy and sweep orphaned IPsecNodes
    event_namespace: str = "default"  # cluster-scoped objects' Events live here (like kopf)
    peer_grace: float = 60.0  # a pair without an SA for longer makes the policy Degraded
    # whose CSRs may get node certificates: the agent ServiceAccount (issuer mode)
    agent_user: str = "system:serviceaccount:strongmesh-system:strongmesh-agent"


_REMOVAL = "removal:"  # queue key prefix: the slices of a policy that is gone


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _newer_or_same(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """False only when both resourceVersions are numbers and the new one is older."""
    if old is None:
        return True
    a = str(old.get("metadata", {}).get("resourceVersion", ""))
    b = str(new.get("metadata", {}).get("resourceVersion", ""))
    return not (a.isdigit() and b.isdigit() and int(b) < int(a))


class Reconciler:
    def __init__(
        self, client: KubeClient, config: OperatorConfig | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.client = client
        self.config = config or OperatorConfig()
        self.metrics = metrics
        self.state = ClusterState()
        self.status_writes = 0
        self._now = now
        self._monotonic = monotonic
        self._posted: dict[str, dict[str, ev.Posted]] = {}
        self._coalescer = Coalescer(
            self._counted_reconcile, self.config.status_interval,
            expected=(ApiError, ApiUnavailableError),
        )
        self._instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._primed = asyncio.Event()
        self.slice_writes = 0
        self.signer = CsrSigner(
            client, self.config.agent_user, self._valid_policies, lambda: self.state.nodes,
            self._issuer_ca, self._post_about,
        )
        # (policy, node, peer) -> when the operator first saw the pair without an SA
        self._missing_since: dict[tuple[str, str, str], float] = {}
        self.secret_watches = SecretWatches(client, self.on_secret)

    # ---- called by the watch handlers -------------------------------------------------------
    def mark(self, names: set[str]) -> None:
        for name in names:
            self._coalescer.mark(name)

    def on_policy(self, kind: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if kind != "DELETED" and not _newer_or_same(self.state.policies.get(name), body):
            return
        affected = self.state.apply_policy(kind, body)
        if self.state.referenced() != self.secret_watches.keys():
            self.secret_watches.follow(self.state.referenced())
        if kind == "DELETED":
            self._coalescer.forget(name)
            self._posted.pop(name, None)
            affected.discard(name)
            self._missing_since = {k: v for k, v in self._missing_since.items() if k[0] != name}
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
        nodes = await self.client.get(NODES)
        existing = {item["metadata"]["name"] for item in nodes.get("items") or []}
        ipsec_nodes = await self.client.get(IPSECNODES)
        collected = []
        for item in ipsec_nodes.get("items") or []:
            name = item["metadata"]["name"]
            if name not in existing and await self.collect(name):
                collected.append(name)
        return collected

    # ---- one policy --------------------------------------------------------------------------
    async def _secret(self, policy_body: dict[str, Any]) -> dict[str, Any] | None:
        """The referenced Secret (None: not found); ``SecretUnreadableError`` when RBAC
        refuses it (not cached: the Secret's watch keeps retrying and reports it once
        readable, e.g. after the chart's ``credentials.secretNames`` was extended)."""
        ref = secret_ref(policy_body)
        if ref is None:
            return None
        if ref not in self.state.secrets:
            namespace, name = ref
            try:
                self.state.secrets[ref] = await self.client.get(
                    f"/api/v1/namespaces/{namespace}/secrets/{name}"
                )
            except ApiError as error:
                if error.status == 403:
                    raise SecretUnreadableError(
                        f"Secret {namespace}/{name} may not be read by the operator: the "
                        "chart's credentials.secretNames (and credentials.namespace) must name "
                        f"it ({error.message})"
                    ) from error
                if error.status != 404:
                    raise
                self.state.secrets[ref] = None
        return self.state.secrets[ref]

    def _overlaps(self, name: str) -> list[OverlapReport]:
        scopes = []
        for other, body in self.state.policies.items():
            checked = check_policy(body)
            if checked.policy is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            spec = checked.policy.spec
            scopes.append(PolicyScope(other, spec.node_selector, tuple(spec.ipsec_subnets)))
        return find_overlaps(scopes, self.state.nodes).get(name, [])

    async def _counted_reconcile(self, name: str) -> None:
        try:
            await self.reconcile(name)
        except Exception:
            if self.metrics is not None:
                self.metrics.reconcile_errors.inc()
            raise

    async def reconcile(self, name: str) -> None:
        await self._primed.wait()
        if name.startswith(_REMOVAL):
            policy = name.removeprefix(_REMOVAL)
            if policy not in self.state.policies:
                await self._write_slices(plan_removal(self.state.slices_of(policy)), None)
            return
        body = self.state.policies.get(name)
        if body is None:
            return
        meta = body["metadata"]
        deleting = bool(meta.get("deletionTimestamp"))
        if not deleting and FINALIZER not in (meta.get("finalizers") or []):
            await self._add_finalizer(body)
        generation = int(meta.get("generation") or 1)
        try:
            previous = IPsecPolicyStatus.model_validate(body.get("status") or {})
        except ValueError:
            previous = None
        now = self._now()
        checked = check_policy(body)
        creds: CredentialsCheck | None = None
        overlaps: list[OverlapReport] = []
        if checked.policy is None:
            status = invalid_body_status(
                name, generation, "; ".join(checked.errors), previous, rfc3339(now)
            )
        else:
            spec = checked.policy.spec
            try:
                creds = check_credentials(spec, await self._secret(body), now)
            except SecretUnreadableError as error:
                creds = CredentialsCheck(CredentialsVerdict(False, "SecretUnreadable", str(error)))
            overlaps = self._overlaps(name)
            facts = PolicyFacts(
                name=name, generation=generation, selector=spec.node_selector,
                deleting=deleting, spec_errors=checked.errors,
            )
            status = compute_status(
                facts, creds.verdict, self.state.nodes, self.state.ipsec_nodes, overlaps,
                previous, rfc3339(now),
            )
        if self.metrics is not None:
            self.metrics.observe(name, status, creds.not_after if creds else None, now)
        if status != previous:
            await self._write_status(name, status)
        valid = checked.policy if checked.policy is not None and not checked.errors else None
        await self._publish(name, body, generation, valid.spec if valid else None, deleting,
                            creds.issuer if creds is not None else None)
        await self._post_events(body, previous, status, creds, overlaps, checked.policy)
        if deleting:
            await self._finish_deletion(body, now)

    def _overdue_pairs(self, name: str, spec: IPsecPolicySpec) -> tuple[tuple[str, str], ...]:
        """Pairs a node has reported without an SA for longer than ``peer_grace``."""
        selected = selected_nodes(spec.node_selector, self.state.nodes)
        now = self._monotonic()
        current = {(name, node, peer) for node, peer in
                   missing_pairs(name, self.state.ipsec_nodes, selected)}
        kept = {k: v for k, v in self._missing_since.items() if k[0] != name or k in current}
        self._missing_since = kept | {k: now for k in current if k not in kept}
        return tuple(sorted((node, peer) for (_, node, peer) in current
                            if now - self._missing_since[(name, node, peer)]
                            > self.config.peer_grace))

    # ---- the CSR signer's view ---------------------------------------------------------------
    def _valid_policies(self) -> dict[str, IPsecPolicy]:
        out = {}
        for name, body in self.state.policies.items():
            checked = check_policy(body)
            if checked.policy is not None and not checked.errors and not (
                    body.get("metadata") or {}).get("deletionTimestamp"):
                out[name] = checked.policy
        return out

    async def _issuer_ca(self, issuer: str) -> IssuerCA | None:
        """The issuing CA of a Secret ``ns/name`` some policy references, if it validates."""
        namespace, _, name = issuer.partition("/")
        for policy in self._valid_policies().values():
            ref = policy.spec.credentials.issuer
            if ref is not None and (ref.secret_ref.namespace, ref.secret_ref.name) == (
                    namespace, name):
                secret = await self._secret(self.state.policies[policy.metadata.name])
                check = check_credentials(policy.spec, secret, self._now())
                return check.issuer
        return None

    async def _post_about(self, obj: Mapping[str, Any], type_: str, reason: str,
                          message: str) -> None:
        """An Event about any cluster-scoped object (a CSR)."""
        meta = obj.get("metadata") or {}
        await self._post_event(
            {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
             "name": meta.get("name", ""), "uid": meta.get("uid", ""),
             "resourceVersion": meta.get("resourceVersion", "")},
            ev.EventSpec("Warning" if type_ == "Warning" else "Normal", reason, message),
            str(meta.get("name", "")))

    # ---- IPsecPeerSlices ---------------------------------------------------------------------
    async def _publish(self, name: str, body: dict[str, Any], generation: int,
                       valid: IPsecPolicySpec | None, deleting: bool,
                       issuer: IssuerCA | None) -> None:
        """Bring the policy's slices in line: the spec (the current one if valid, else the
        one already published), the deletion flag, the peers, and in issuer mode the CAs to
        trust and the one that signs (kept as published while the issuer Secret is bad)."""
        existing = self.state.slices_of(name)
        published = max(existing.values(), key=lambda s: s.policy_generation, default=None)
        if valid is None:
            if published is None or published.policy_spec is None:
                return  # never valid: nothing reaches the agents
            generation, valid = published.policy_generation, published.policy_spec
        trust, signer = "", ""
        if valid.credentials.issuer is not None:
            if issuer is not None:
                trust, signer = "".join(issuer.bundle_pems), fingerprint(issuer.cert_pem)
            elif published is not None:
                trust, signer = published.trust_bundle, published.signer
        peers = policy_peers(name, valid.node_selector, self.state.nodes, self.state.ipsec_nodes,
                             self.state.pod_cidrs)
        plan = plan_slices(name, generation, valid, deleting, peers, existing,
                           trust_bundle=trust, signer=signer)
        await self._write_slices(plan, body)

    async def _write_slices(self, plan: SlicePlan, owner: dict[str, Any] | None) -> None:
        for slice_name, spec in plan.upserts.items():
            content = spec.to_api()
            if slice_name in self.state.slices:
                ops = [{"op": "replace", "path": "/spec", "value": content}]
                await self._slice_call(slice_name, self.client.json_patch(
                    f"{SLICES}/{slice_name}", ops), spec)
            else:
                meta: dict[str, Any] = {"name": slice_name,
                                        "labels": {"app.kubernetes.io/part-of": "strongmesh"}}
                if owner is not None:  # the garbage collector of a real cluster cleans up too
                    meta["ownerReferences"] = [{
                        "apiVersion": API_VERSION, "kind": "IPsecPolicy",
                        "name": owner["metadata"]["name"], "uid": owner["metadata"].get("uid"),
                    }]
                await self._slice_call(slice_name, self.client.create(SLICES, {
                    "apiVersion": API_VERSION, "kind": "IPsecPeerSlice", "metadata": meta,
                    "spec": content}), spec)
        for slice_name in plan.deletes:
            await self._slice_call(slice_name, self.client.delete(f"{SLICES}/{slice_name}"),
                                   None)

    async def _slice_call(self, name: str, call: Any, spec: IPsecPeerSliceSpec | None) -> None:
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

    async def _write_status(self, name: str, status: IPsecPolicyStatus) -> None:
        try:
            served = await self.client.merge_patch(
                f"{POLICIES}/{name}/status", {"status": status.to_api()}
            )
        except ApiError as error:
            if error.status == 404:
                return  # deleted meanwhile
            raise
        self.status_writes += 1
        if self.metrics is not None:
            self.metrics.status_writes.inc()
        current = self.state.policies.get(name)
        if isinstance(served, dict) and current is not None and _newer_or_same(current, served):
            self.state.policies[name] = served

    async def _add_finalizer(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        name = meta["name"]
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        ]
        if meta.get("finalizers"):
            ops.append({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
        else:
            ops.append({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]})
        try:
            served = await self.client.json_patch(f"{POLICIES}/{name}", ops)
        except ApiError as error:
            if error.status in (404, 409, 422):
                log.info("finalizer of %s: %s; retrying with the next version", name, error)
                self._coalescer.mark(name)
                return
            raise
        if isinstance(served, dict) and _newer_or_same(self.state.policies.get(name), served):
            self.state.policies[name] = served

    def still_enforcing(self, name: str) -> list[str]:
        """Existing nodes whose IPsecNode still lists the policy (they have not torn down)."""
        return sorted(
            node for node, ipsec_node in self.state.ipsec_nodes.items()
            if node in self.state.nodes and name in policies_listed(ipsec_node)
        )

    async def _finish_deletion(self, body: dict[str, Any], now: datetime) -> None:
        meta = body["metadata"]
        name = meta["name"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        waiting = self.still_enforcing(name)
        if waiting:
            elapsed = (now - parse_time(meta["deletionTimestamp"])).total_seconds()
            if elapsed < self.config.teardown_timeout:
                return
            await self._post(body, ev.EventSpec(
                "Warning", "TeardownTimeout",
                f"nodes {', '.join(waiting)} did not confirm teardown within "
                f"{self.config.teardown_timeout:.0f}s; removing the finalizer anyway",
            ))
        index = finalizers.index(FINALIZER)
        ops = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        try:
            served = await self.client.json_patch(f"{POLICIES}/{name}", ops)
        except ApiError as error:
            if error.status in (409, 422):
                self._coalescer.mark(name)
            elif error.status != 404:
                raise
            return
        # The API deletes the object now; until its DELETED event arrives, remember that the
        # finalizer is gone so that a resync does not act (or warn) twice.
        if isinstance(served, dict) and name in self.state.policies:
            self.state.policies[name] = served

    # ---- events ------------------------------------------------------------------------------
    async def _post_events(
        self, body: dict[str, Any], previous: IPsecPolicyStatus | None,
        status: IPsecPolicyStatus, creds: CredentialsCheck | None,
        overlaps: list[OverlapReport],
        policy: IPsecPolicy | None,
    ) -> None:
        verdict: CredentialsVerdict | None = creds.verdict if creds else None
        was_ready = condition(previous, READY)
        is_ready = condition(status, READY)
        facts = ev.EventFacts(
            credentials_error=verdict.message if verdict and not verdict.valid else None,
            expiry_level=creds.expiry_level if creds else None,
            expiry_message=creds.expiry_message if creds else "",
            optional=bool(policy is not None and policy.spec.enforcement == "Optional"),
            overlaps=tuple(o.describe() for o in overlaps),
            became_ready=bool(
                is_ready and is_ready.status == "True"
                and (was_ready is None or was_ready.status != "True")
            ),
            ready_message=is_ready.message if is_ready else "",
        )
        name = body["metadata"]["name"]
        todo, memory = ev.decide_events(
            facts, self._posted.get(name, {}), self._monotonic(),
            self.config.optional_warn_interval,
        )
        self._posted[name] = memory
        for spec in todo:
            await self._post(body, spec)

    async def _post(self, body: dict[str, Any], spec: ev.EventSpec) -> None:
        meta = body["metadata"]
        await self._post_event({
            "apiVersion": API_VERSION, "kind": "IPsecPolicy", "name": meta["name"],
            "uid": meta.get("uid", ""), "resourceVersion": meta.get("resourceVersion", ""),
        }, spec, meta["name"])

    async def _post_event(self, involved: Mapping[str, Any], spec: ev.EventSpec,
                          name: str) -> None:
        stamp = rfc3339(self._now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace":
                         self.config.event_namespace},
            "involvedObject": dict(involved),
            "type": spec.type,
            "reason": spec.reason,
            "message": spec.message[:1024],
            "source": {"component": "strongmesh-operator"},
            "reportingComponent": "strongmesh.io/operator",
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        log.log(
            logging.WARNING if spec.type == "Warning" else logging.INFO,
            "%s %s: %s", name, spec.reason, spec.message,
        )
        try:
            await self.client.create(
                f"/api/v1/namespaces/{self.config.event_namespace}/events", event
            )
        except (ApiError, ApiUnavailableError) as error:
            log.warning("could not post event %s for %s: %s", spec.reason, name, error)
