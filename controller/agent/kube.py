"""Cluster mode: the agent's inputs from, and its status to, the Kubernetes API.

What an agent watches, and why it stays O(N) for the cluster:
- IPsecPeerSlices, cluster-wide, never IPsecPolicies: the operator publishes in slices the
  last valid spec of each policy and its peers (see ``controller.models.peers``), and rewrites
  a slice only when those change. A policy's status, which changes with every aggregation,
  never reaches an agent; a node joining rewrites one slice (one event per agent).
- its OWN Node only (``fieldSelector=metadata.name=NODE``): labels and addresses.
- only the Secrets its policies reference, each by ``fieldSelector=metadata.name=...`` in its
  namespace, so the chart's RBAC can grant get/list/watch by ``resourceNames``.
- never IPsecNodes: one agent's status update reaches the operator, not the other N-1 agents.
It writes only its own IPsecNode, and only when something meaningful changed (SA counters do
not count) or the slow heartbeat is due.

Through an API outage the reflectors keep their last content, so the agent keeps enforcing what
it last knew; they resume (or re-list) when the API returns, and the reporter writes again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controller.agent.addresses import interface_mtus
from controller.agent.identity import NodeIdentity
from controller.agent.interfaces import AgentInputs, InputSource, PolicyInput, Reporter
from controller.agent.slices import PublishedPolicy, published_policies
from controller.facts import NodeFacts
from controller.kubeapi import (
    ApiError,
    ApiUnavailableError,
    KubeClient,
    Reflector,
    load_config,
    selector,
)
from controller.manifests import node_pod_cidrs
from controller.models.common import GROUP, VERSION, ObjectMeta
from controller.models.node import IPsecNodeStatus
from controller.models.peers import IPsecPeerSlice
from controller.models.policy import IPsecPolicy

log = logging.getLogger(__name__)

SLICES = f"/apis/{GROUP}/{VERSION}/ipsecpeerslices"
IPSECNODES = f"/apis/{GROUP}/{VERSION}/ipsecnodes"
NODES = "/api/v1/nodes"
HEARTBEAT_SECONDS = 300.0
# Fields of an SA that change all the time: reported with the heartbeat, never a reason to write.
VOLATILE_SA_FIELDS = frozenset({
    "bytesIn", "bytesOut", "packetsIn", "packetsOut", "establishedSeconds", "rekeySeconds",
})


def slice_view(obj: Mapping[str, Any]) -> Any:
    """What the agent acts on: the slice's content, not its metadata."""
    return obj.get("spec")


def node_view(obj: Mapping[str, Any]) -> Any:
    """Labels, addresses and pod networks; not the kubelet's heartbeats and conditions."""
    return ((obj.get("metadata") or {}).get("labels"), (obj.get("status") or {}).get("addresses"),
            (obj.get("spec") or {}).get("podCIDRs"))


def secret_view(obj: Mapping[str, Any]) -> Any:
    return obj.get("data")


def node_facts(name: str, node: Mapping[str, Any] | None) -> tuple[NodeFacts, dict[str, str]]:
    """Addresses (InternalIP first, then ExternalIP, no duplicates), pod networks and labels
    of a Node."""
    if node is None:
        return NodeFacts(name=name, addresses=()), {}
    entries = (node.get("status") or {}).get("addresses") or []
    order = {"InternalIP": 0, "ExternalIP": 1}
    addresses: list[str] = []
    for entry in sorted(entries, key=lambda e: order.get(e.get("type", ""), 9)):
        if entry.get("type") in order and entry.get("address") not in addresses:
            addresses.append(entry["address"])
    labels = dict((node.get("metadata") or {}).get("labels") or {})
    pod_cidrs = tuple(node_pod_cidrs(node))
    return NodeFacts(name=name, addresses=tuple(addresses), pod_cidrs=pod_cidrs), labels



def secret_text(secret: Mapping[str, Any]) -> dict[str, str]:
    """The Secret's data as text (the shared decoder); undecodable data reads as empty, so
    that the credentials check names the keys it misses."""
    from controller.manifests import ManifestError, decode_secret

    try:
        return decode_secret(secret)
    except ManifestError as error:
        log.warning("cannot decode Secret %s: %s", secret.get("metadata", {}).get("name"), error)
        return {}


def secret_key(policy: IPsecPolicy) -> tuple[str, str] | None:
    """The Secret the node reads for a policy (None in issuer mode: it has its own key)."""
    ref = policy.spec.credentials.secret_ref
    return None if ref is None else (ref.namespace, ref.name)


def unreadable_secret(key: tuple[str, str], refusal: str) -> str:
    namespace, name = key
    return (
        f"Secret {namespace}/{name} may not be read by this agent: the chart's "
        f"credentials.secretNames (and credentials.namespace) must name it ({refusal})"
    )


def _with_refusal(item: PolicyInput, refused: Mapping[tuple[str, str], str]) -> PolicyInput:
    key = secret_key(item.policy)
    if key is None or key not in refused:
        return item
    return dataclasses.replace(
        item, input_errors=(*item.input_errors, unreadable_secret(key, refused[key]))
    )


Issued = Mapping[str, tuple[Mapping[str, str] | None, str | None]]


def select_policies(
    published: Mapping[str, PublishedPolicy],
    labels: Mapping[str, str],
    secrets: Mapping[tuple[str, str], Mapping[str, str] | None],
    issued: Issued | None = None,
) -> tuple[PolicyInput, ...]:
    """The published policies that select a node with these labels, in name order, with their
    credentials: the referenced Secret's data, or (issuer mode, ``issued``: policy name ->
    (data, why not)) the node's own key and certificate. PURE."""
    inputs: list[PolicyInput] = []
    for name in sorted(published):
        item = published[name]
        if not item.spec.node_selector.matches(dict(labels)):
            continue
        policy = IPsecPolicy(
            metadata=ObjectMeta(name=name, generation=item.generation), spec=item.spec)
        key = secret_key(policy)
        data, why = (secrets.get(key), None) if key is not None else \
            (issued or {}).get(name, (None, "no certificate for this node yet"))
        inputs.append(PolicyInput(
            policy=policy,
            generation=item.generation,
            secret_data=data,
            deleting=item.deleting,
            input_errors=(why,) if why else (),
            peers=item.peers,
        ))
    return tuple(inputs)


def selecting(published: Mapping[str, PublishedPolicy],
              labels: Mapping[str, str]) -> dict[str, PublishedPolicy]:
    return {name: item for name, item in published.items()
            if item.spec.node_selector.matches(dict(labels))}


class KubeInputSource:
    """InputSource backed by reflectors; secret watches follow the policies' references."""

    def __init__(
        self, client: KubeClient, node_name: str, owns_client: bool = False,
        sync_wait: float = 5.0, identity_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self._owns_client = owns_client
        self._sync_wait = sync_wait
        self._changed = asyncio.Event()
        self._slices = Reflector(client, SLICES, self._changed.set, relevant=slice_view)
        self._node = Reflector(
            client, NODES, self._changed.set,
            field_selector=selector(**{"metadata.name": node_name}), relevant=node_view,
        )
        self._secrets: dict[tuple[str, str], Reflector] = {}
        self._tasks: dict[object, asyncio.Task[None]] = {}
        self._reported: frozenset[str] = frozenset()
        # the slices' (name, resourceVersion) -> what they publish, and each slice parsed once
        # per version: a slice of 100 peers changes while the others do not
        self._parsed: tuple[tuple[tuple[str, str], ...], dict[str, PublishedPolicy]] = ((), {})
        self._parsed_slices: dict[str, tuple[str, IPsecPeerSlice]] = {}
        self.identity = (
            NodeIdentity(client, node_name, identity_dir, self._changed.set)
            if identity_dir is not None else None
        )

    def start(self) -> None:
        """Start the watches (inside the running loop)."""
        for reflector in (self._slices, self._node):
            if reflector not in self._tasks:
                self._tasks[reflector] = asyncio.create_task(reflector.run())

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self.identity is not None:
            await self.identity.close()
        if self._owns_client:
            await self.client.close()

    def _follow_secrets(self, wanted: set[tuple[str, str]]) -> None:
        """Watch exactly the Secrets the selecting policies reference."""
        for key in set(self._secrets) - wanted:
            reflector = self._secrets.pop(key)
            task = self._tasks.pop(reflector, None)
            if task is not None:
                task.cancel()
        for key in wanted - set(self._secrets):
            namespace, name = key
            reflector = Reflector(
                self.client, f"/api/v1/namespaces/{namespace}/secrets", self._changed.set,
                field_selector=selector(**{"metadata.name": name}), relevant=secret_view,
            )
            self._secrets[key] = reflector
            self._tasks[reflector] = asyncio.create_task(reflector.run())

    def _secret_data(self) -> dict[tuple[str, str], Mapping[str, str] | None]:
        out: dict[tuple[str, str], Mapping[str, str] | None] = {}
        for (namespace, name), reflector in self._secrets.items():
            secret = reflector.items.get(name)
            out[(namespace, name)] = secret_text(secret) if secret is not None else None
        return out

    def _reflectors(self) -> list[Reflector]:
        return [self._slices, self._node, *self._secrets.values()]

    async def _settle(self) -> None:
        """Give the first list of a new watch a moment (at start, or a newly referenced
        Secret), so that a pass does not run on half-read inputs when waiting is cheap.
        A watch the server refused (403) is answered: waiting would not change it."""
        deadline = asyncio.get_running_loop().time() + self._sync_wait
        while not all(r.synced or r.refused for r in self._reflectors()):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(0.05, left))

    async def snapshot(self) -> AgentInputs:
        self.start()
        await self._settle()
        node, labels = node_facts(self.node_name, self._node.items.get(self.node_name))
        node = dataclasses.replace(node, mtus=interface_mtus(node.addresses))
        errors: list[str] = []
        if not self._slices.synced or not self._node.synced:
            errors.append(
                "not yet synced with the Kubernetes API"
                + (f": {self._slices.last_error or self._node.last_error}"
                   if self._slices.last_error or self._node.last_error else "")
            )
            return AgentInputs(node=node, node_labels=labels, errors=tuple(errors))
        if self._node.synced and not self._node.items:
            errors.append(f"Node {self.node_name} not found")
        published = self._published()
        issued = self._issued(selecting(published, labels))
        inputs = select_policies(published, labels, self._secret_data(), issued)
        wanted = {key for p in inputs if (key := secret_key(p.policy)) is not None}
        if wanted != set(self._secrets):
            self._follow_secrets(wanted)
            await self._settle()
            inputs = select_policies(published, labels, self._secret_data(), issued)
        # A freshly followed Secret is not listed yet: report it as not-yet-read, not missing.
        pending = [
            f"{ns}/{n}" for (ns, n), r in self._secrets.items() if not r.synced and not r.refused
        ]
        if pending:
            errors.append(f"waiting for Secret(s) {', '.join(sorted(pending))}")
            return AgentInputs(node=node, node_labels=labels, errors=tuple(errors))
        # A Secret RBAC does not let this agent read fails its own policies only.
        refused = {key: r.refused for key, r in self._secrets.items() if not r.synced and r.refused}
        if refused:
            inputs = tuple(_with_refusal(p, refused) for p in inputs)
        return AgentInputs(node=node, node_labels=labels, policies=inputs, errors=tuple(errors))

    def _issued(self, policies: Mapping[str, PublishedPolicy]) -> dict[
            str, tuple[Mapping[str, str] | None, str | None]]:
        """Issuer-mode policies: this node's own credentials (or why there are none yet)."""
        out: dict[str, tuple[Mapping[str, str] | None, str | None]] = {}
        for name, item in policies.items():
            if item.spec.credentials.issuer is None or item.deleting:
                continue
            if self.identity is None:
                out[name] = (None, "issuer mode needs the agent's --identity-dir")
            else:
                out[name] = self.identity.credentials(item)
        return out

    def _published(self) -> dict[str, PublishedPolicy]:
        """The policies the slices publish; an unreadable slice is logged once (the operator,
        their only writer, rewrites it) and the others still count."""
        versions = tuple(sorted(
            (name, str(obj.get("metadata", {}).get("resourceVersion", "")))
            for name, obj in self._slices.items.items()))
        if versions and versions == self._parsed[0]:
            return self._parsed[1]  # a pass per event: a thousand peers parsed once, not each
        self._parsed_slices = {n: p for n, p in self._parsed_slices.items()
                               if n in self._slices.items}
        published, problems = published_policies(self._slices.items.values(), self._parse_slice)
        for problem in sorted(set(problems) - self._reported):
            log.warning("%s", problem)
        self._reported = frozenset(problems)
        self._parsed = (versions, published)
        return published

    def _parse_slice(self, body: Mapping[str, Any]) -> IPsecPeerSlice:
        meta = body.get("metadata") or {}
        name, version = str(meta.get("name", "")), str(meta.get("resourceVersion", ""))
        kept = self._parsed_slices.get(name)
        if kept is not None and version and kept[0] == version:
            return kept[1]
        item = IPsecPeerSlice.model_validate(body)
        self._parsed_slices[name] = (version, item)
        return item

    async def wait_changed(self, timeout: float) -> bool:
        self.start()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    def connected(self) -> bool:
        """Whether every watch is live (False during an API outage)."""
        return all(r.connected for r in self._reflectors())


def significant(status: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a reported status whose change is worth a write (no counters, no clock)."""
    out = {k: v for k, v in status.items() if k != "lastHeartbeat"}
    out["sas"] = [
        {k: v for k, v in sa.items() if k not in VOLATILE_SA_FIELDS}
        for sa in status.get("sas") or []
    ]
    return out


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Progress is paced so that a whole cluster writes about this many IPsecNode statuses a second
# at most: a node with N peers writes a change of its SAs at most once every N/25 s (and once a
# second). What the operator waits for goes out at once: a new generation, enforcing or not,
# and a policy's peers becoming all established (or no longer). Each write of a status costs
# kube-apiserver a decode, a merge, a schema validation and a fan-out (about 25 ms of CPU at
# 250 peers on the benchmark's machine): 100 a second was more than two cores.
CLUSTER_STATUS_WRITES_PER_SECOND = 25.0
STATUS_WRITE_MIN_SECONDS = 1.0
# A status the API did not take is offered again after 2, 4, 8 ... 60 s, each shortened by
# up to half at random: an overloaded API server refuses many agents at once, and they must
# not all come back at once.
REPORT_RETRY_FIRST = 2.0
REPORT_RETRY_MAX = 60.0


def report_retry_seconds(failures: int, fraction: float) -> float:
    """When to offer the status again after ``failures`` refusals in a row; ``fraction`` in
    [0, 1) (random) spreads the agents."""
    backoff = REPORT_RETRY_FIRST * 2.0 ** min(failures - 1, 16)
    return min(backoff, REPORT_RETRY_MAX) * (1 - fraction / 2)


def status_write_interval(peers: int) -> float:
    """The least time between two status writes of a node with ``peers`` peers."""
    return max(STATUS_WRITE_MIN_SECONDS, peers / CLUSTER_STATUS_WRITES_PER_SECOND)


class KubeReporter:
    """Writes this node's IPsecNode: spec on change, status on change (paced) or heartbeat."""

    def __init__(
        self, client: KubeClient, node_name: str, heartbeat: float = HEARTBEAT_SECONDS,
        clock: Any = None, jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.node_name = node_name
        self.heartbeat = heartbeat
        self.writes = 0
        self.failures = 0  # writes refused in a row
        self._jitter = jitter
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._spec: dict[str, Any] | None = None
        self._status: dict[str, Any] | None = None
        self._written_at: float | None = None

    def _due(self, spec: dict[str, Any], status: dict[str, Any]) -> bool:
        if self._spec != spec or self._status is None:
            return True
        if significant(self._status) != significant(status):
            return True
        return self._written_at is None or self._clock() - self._written_at >= self.heartbeat

    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus
                     ) -> float | None:
        spec = {"addresses": list(node.addresses), "identity": identity}
        body = status.listed().model_copy(update={"last_heartbeat": None}).to_api()
        if not self._due(spec, body):
            return None
        if self._status is not None and self._written_at is not None and \
                self._spec == spec and self._news(self._status) == self._news(body):
            # progress of SAs, not a change of the node, of what it enforces or of whether
            # the mesh is complete: paced
            wait = (self._written_at + status_write_interval(_peers(status))) - self._clock()
            if wait > 0:
                return wait
        path = f"{IPSECNODES}/{self.node_name}"
        try:
            if self._spec != spec:
                await self._ensure(path, spec)
            await self.client.merge_patch(
                path + "/status", {"status": body | {"lastHeartbeat": now_rfc3339()}}
            )
        except ApiError as error:
            if error.status == 404:
                self._spec = None  # deleted behind our back (GC, admin): create it again
            return self._refused(error)
        except ApiUnavailableError as error:
            return self._refused(error)
        self.writes += 1
        self.failures = 0
        self._spec, self._status, self._written_at = spec, body, self._clock()
        return None

    def _refused(self, error: Exception) -> float:
        self.failures += 1
        log.warning("could not write IPsecNode %s: %s", self.node_name, error)
        return report_retry_seconds(self.failures, self._jitter())

    @staticmethod
    def _news(body: Mapping[str, Any]) -> list[tuple[Any, Any, Any, bool]]:
        """What the operator waits for, never held back: per policy, the generation the node
        enforces (or fails to), and whether it holds SAs with all its expected peers."""
        return [(p.get("name"), p.get("generation"), p.get("enforcing"),
                 p.get("establishedPeers", 0) >= p.get("expectedPeers", 0))
                for p in body.get("policies") or []]

    async def _ensure(self, path: str, spec: dict[str, Any]) -> None:
        try:
            current = await self.client.get(path)
        except ApiError as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "IPsecNode",
                "metadata": {"name": self.node_name, "labels": {"app.kubernetes.io/part-of":
                                                                 "strongmesh"}},
                "spec": spec,
            }
            try:
                await self.client.create(IPSECNODES, body)
                return
            except ApiError as conflict:
                if conflict.status != 409:
                    raise
                current = await self.client.get(path)
        if current.get("spec") != spec:
            await self.client.merge_patch(path, {"spec": spec})


def _peers(status: IPsecNodeStatus) -> int:
    return sum(p.expected_peers for p in status.policies)


def make_kube_io(
    node_name: str, kubeconfig: str | None, identity_dir: Path | None = None
) -> tuple[InputSource, Reporter]:
    """The cluster-mode InputSource and Reporter of ``strongmesh agent --node NAME``."""
    client = KubeClient(load_config(kubeconfig))
    source = KubeInputSource(client, node_name, owns_client=True, identity_dir=identity_dir)
    return source, KubeReporter(client, node_name)
