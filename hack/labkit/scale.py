"""``hack/bench-scale``: the control path at N nodes, on the real control plane.

Starts ``hack/control-plane`` (kube-apiserver + etcd), applies the chart, creates N Node
objects and starts the operator (its own process, the chart's identity) and N simulated
nodes. A simulated node runs the agent's real Kubernetes code path — ``KubeInputSource``
(IPsecPeerSlices, its Node, its Secret), the reconcile pass, ``KubeReporter`` writing its
IPsecNode with the heartbeat, the agent's event loop — with its own client, watches and
identity (a token of the agent ServiceAccount bound to its Node); only the data plane is
replaced, by the in-memory fakes of the unit tests (``tests/fakes.py``: a charon whose
per-peer connections all report an installed SA). Many simulated nodes share a process, as
asyncio tasks, in a few worker processes.

Then, timed from the harness's own watch of the IPsecNodes and polls of the policy:
1. a policy selecting every node is created: per node, until its IPsecNode reports it enforcing
   generation 1 (p50/p99), and until the policy's status shows N/N ready;
2. the policy's spec changes (generation 2): the same;
3. the cluster rests: API writes per node per minute, from kube-apiserver's own
   ``apiserver_request_total`` counters (by verb and resource);
4. one node's SAs change (its status changes), then 10 nodes join and 10 leave (fewer below 20
   nodes: half of them): watch events
   received per agent for each, and per-agent peer updates;
5. the policy is deleted: until the finalizer completed and it is gone;
for each rollout, where its time went (``*_stages``): when the last slice carried the new
generation (the operator's part), each agent's first pass on it and its write of its IPsecNode
(all processes read the same CLOCK_MONOTONIC), the harness's watch seeing that write;
throughout: operator RSS and CPU seconds, kube-apiserver and etcd RSS; for each rollout, the
CPU seconds the simulated agents, the operator and kube-apiserver used (the agents' share is
N passes over N peers on this one machine: in a cluster every node does its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.agent.kube import KubeReporter
from controller.agent.loop import LoopStats
from controller.facts import NodeFacts
from controller.models.node import IPsecNodeStatus

if TYPE_CHECKING:
    from controller.agent.interfaces import AgentInputs

PROJECT = Path(__file__).resolve().parents[2]
NAMESPACE = "strongmesh-system"
POLICY = "scale-mesh"
GROUP_PATH = "/apis/strongmesh.io/v1alpha1"
HEARTBEAT_SECONDS = 300.0
RESYNC_SECONDS = 300.0
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def node_name(index: int) -> str:
    return f"sim-{index:05d}"


def node_address(index: int) -> str:
    return f"10.80.{index // 250}.{index % 250 + 1}"


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)


def raise_file_limit() -> None:
    """Thousands of watch connections: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def process_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def process_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds the processes used so far (those gone count nothing)."""
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


# ------------------------------------------------------------------------------- the worker
@dataclass
class SimulatedNode:
    name: str
    stop: asyncio.Event
    source: Any
    charon: Any
    task: asyncio.Task[None] | None = None
    peer_sets: list[frozenset[str]] = field(default_factory=list)
    # when a pass first ran on each generation of the policy (CLOCK_MONOTONIC: the same
    # clock in every process of the machine, so the harness can compare it with its own)
    seen: dict[int, float] = field(default_factory=dict)
    written: dict[int, float] = field(default_factory=dict)  # its IPsecNode said so
    loop: LoopStats = field(default_factory=LoopStats)  # passes run


class TimedReporter(KubeReporter):
    """The agent's reporter, noting when a write first said each generation is enforced."""

    def __init__(self, written: dict[int, float], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written = written

    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus
                     ) -> float | None:
        writes = self.writes
        again = await super().report(node, identity, status)
        if self.writes > writes:
            for entry in status.policies:
                if entry.enforcing:
                    self.written.setdefault(entry.generation, time.monotonic())
        return again


CHURN = 10  # nodes that join, and that leave, in step 4

# The agent's per-node memos (``functools.lru_cache``), sized for the one node a real agent
# runs on: a connection rendered and its xfrm policies, each keyed by this node's address
# and a peer's.
PER_NODE_CACHES = (("controller.strongswan.render", "_connection"),
                   ("controller.xfrm.desired", "_peer_pair"))


def give_caches_room(nodes: int) -> None:
    """A worker runs hundreds of nodes in one process, where a real agent runs one: the
    memos, shared by the process and sized for one node, thrashed, and every pass of every
    simulated node re-rendered all its connections, which a real agent does only after a
    change (``hack/bench-pass``: about 2x the pass). Each gets the room of ``nodes`` agents'
    memos, what ``nodes`` real agents hold between them."""
    import importlib

    for module_name, name in PER_NODE_CACHES:
        module = importlib.import_module(module_name)
        memo = getattr(module, name)
        size = memo.cache_parameters()["maxsize"]
        setattr(module, name, functools.lru_cache(maxsize=size * nodes)(memo.__wrapped__))


def _report_end(name: str, task: asyncio.Task[None]) -> None:
    """A simulated node's loop ends only when stopped: any other end is a finding, logged
    with its traceback (a real agent would exit and be restarted by its DaemonSet)."""
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        print(f"simulated node {name} stopped by an error:", file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)


async def _run_worker() -> None:
    """A worker process: simulated nodes, commanded by JSON lines on stdin."""
    from controller.agent.kube import KubeInputSource
    from controller.agent.loop import run_loop
    from controller.agent.reconcile import NodeReconciler, PassResult
    from controller.kubeapi import KubeClient, KubeConfig
    from controller.models.node import SecurityAssociation
    from tests.fakes import FakeCharon, FakeXfrm

    raise_file_limit()
    # One pass at a time per process: each real agent has a node of its own, while here a
    # pool of threads made the passes of a process take turns at one GIL and held every
    # agent's status write (on the event loop) until all their passes were done.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=1))
    config = json.loads(sys.stdin.readline())
    give_caches_room(len(config["nodes"]) + CHURN)  # and the nodes that join later
    ca = config["ca"].encode()
    nodes: dict[str, SimulatedNode] = {}

    def start(name: str, token: str) -> None:
        client = KubeClient(KubeConfig(server=config["server"], ca_data=ca, token=token))
        stop = asyncio.Event()
        source = KubeInputSource(client, name, owns_client=True)
        charon = FakeCharon(establish=True)
        reconciler = NodeReconciler(lambda: charon, FakeXfrm())
        node = SimulatedNode(name, stop, source, charon)
        reporter = TimedReporter(node.written, client, name, heartbeat=HEARTBEAT_SECONDS)

        def run_pass(inputs: AgentInputs) -> PassResult:
            for item in inputs.policies:
                node.seen.setdefault(item.generation, time.monotonic())
            charon.up = links_up(name, inputs)
            result = reconciler.run_pass(inputs)
            peers = frozenset(p.node for item in inputs.policies for p in item.peers)
            if not node.peer_sets or node.peer_sets[-1] != peers:
                node.peer_sets.append(peers)
            return result

        async def run() -> None:
            try:
                await run_loop(source, reporter, run_pass, resync_seconds=RESYNC_SECONDS,
                               stop=stop, stats=node.loop, handle_signals=False)
            finally:
                await source.close()

        node.task = asyncio.create_task(run())
        node.task.add_done_callback(functools.partial(_report_end, name))
        nodes[name] = node

    async def stop_node(name: str) -> None:
        node = nodes.pop(name, None)
        if node is not None and node.task is not None:
            node.stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(node.task, 30)

    def stats() -> dict[str, Any]:
        return {name: {
            "events": sum(r.events for r in node.source._reflectors()),
            "peer_updates": max(0, len(node.peer_sets) - 1),
            "peers": len(node.peer_sets[-1]) if node.peer_sets else 0,
            "seen": node.seen,
            "written": node.written,
            "passes": node.loop.passes,
        } for name, node in nodes.items()}

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    for name, token in config["nodes"]:
        start(name, token)
    print(json.dumps({"started": len(nodes)}), flush=True)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["do"] == "stats":
            print(json.dumps(stats()), flush=True)
        elif command["do"] == "start":
            for name, token in command["nodes"]:
                start(name, token)
            print(json.dumps({"started": len(command["nodes"])}), flush=True)
        elif command["do"] == "stop":
            await asyncio.gather(*(stop_node(name) for name in command["nodes"]))
            print(json.dumps({"stopped": len(command["nodes"])}), flush=True)
        elif command["do"] == "flap":  # one node's SAs change: a status change
            node = nodes[command["node"]]
            node.charon.establish = False
            node.charon.sas = [SecurityAssociation(policy=POLICY, peer="0.0.0.0",
                                                   state="REKEYING")]
            node.source._changed.set()
            print(json.dumps({"flapped": command["node"]}), flush=True)
        elif command["do"] == "exit":
            break
    await asyncio.gather(*(stop_node(name) for name in list(nodes)))
    print(json.dumps({"exited": True}), flush=True)


def links_up(node: str, inputs: AgentInputs) -> frozenset[str]:
    """The simulated node's per-peer connections that have their SA: those whose both ends
    are listed ready (in a real mesh one of them has initiated by then)."""
    from controller.strongswan import conn_name

    up: set[str] = set()
    for item in inputs.policies:
        if not all(p.ready for p in item.peers if p.node == node):
            continue
        policy = item.policy.metadata.name
        up.update(conn_name(policy, p.node) for p in item.peers if p.ready and p.node != node)
    return frozenset(up)


def worker_main() -> int:
    asyncio.run(_run_worker())
    return 0


class Worker:
    """A worker process and its JSON-lines channel."""

    def __init__(self, server: str, ca: str, nodes: list[tuple[str, str]], log: Path) -> None:
        env = os.environ | {"PYTHONPATH": str(PROJECT), "PYTHONDONTWRITEBYTECODE": "1"}
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(PROJECT / "hack" / "bench-scale"), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=env, cwd=PROJECT)
        self.names = [n for n, _ in nodes]
        self.send({"server": server, "ca": ca, "nodes": nodes})

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker exited ({self.proc.poll()}); see its log")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        """Ask the worker to stop its nodes; kill it after a minute (a starved API server
        must not hold the harness)."""
        with contextlib.suppress(Exception):
            self.send({"do": "exit"})
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# ------------------------------------------------------------------------------ the harness
class Admin:
    """The harness's own API access: admin credentials, a lean async client."""

    def __init__(self, plane: Any) -> None:
        from controller.kubeapi import KubeClient, load_config

        self.client = KubeClient(load_config(str(plane.kubeconfig)), timeout=60)
        self.plane = plane

    async def nodes(self, indices: Iterable[int], concurrency: int = 32) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await self.client.create("/api/v1/nodes", {
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node_name(i), "labels": {"scale": "yes"}}})
                await self.client.merge_patch(f"/api/v1/nodes/{node_name(i)}/status", {
                    "status": {"addresses": [{"type": "InternalIP", "address": node_address(i)}]}})

        await asyncio.gather(*(one(i) for i in indices))

    async def tokens(self, indices: Iterable[int], concurrency: int = 32) -> dict[str, str]:
        gate = asyncio.Semaphore(concurrency)
        out: dict[str, str] = {}

        async def one(i: int) -> None:
            name = node_name(i)
            async with gate:
                node = await self.client.get(f"/api/v1/nodes/{name}")
                answer = await self.client.create(
                    f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/strongmesh-agent/token",
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                     "spec": {"expirationSeconds": 24 * 3600, "boundObjectRef": {
                         "kind": "Node", "apiVersion": "v1", "name": name,
                         "uid": node["metadata"]["uid"]}}})
                out[name] = answer["status"]["token"]

        await asyncio.gather(*(one(i) for i in indices))
        return out

    async def metrics(self) -> dict[tuple[str, str], float]:
        """kube-apiserver's apiserver_request_total, summed by (verb, resource)."""
        context = ssl.create_default_context(cafile=str(self.plane.ca_cert))
        pki = self.plane.directory / "pki"
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        text = await asyncio.to_thread(_fetch, self.plane.server + "/metrics", context)
        totals: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            parts = dict(p.split("=", 1) for p in labels[len("apiserver_request_total{"):-1]
                         .split(",") if "=" in p)
            key = (parts.get("verb", "").strip('"'), parts.get("resource", "").strip('"'))
            totals[key] = totals.get(key, 0.0) + float(value)
        return totals


def _fetch(url: str, context: ssl.SSLContext) -> str:
    import urllib.request

    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        return str(response.read().decode())


@dataclass
class Watcher:
    """The harness's watch of IPsecNodes: when each node first reported each generation."""

    reached: dict[int, dict[str, float]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        for entry in (obj.get("status") or {}).get("policies") or []:
            if entry.get("name") == POLICY and entry.get("enforcing", True):
                self.reached.setdefault(int(entry["generation"]), {}).setdefault(name, now)


@dataclass
class SliceWatcher:
    """The harness's watch of the policy's IPsecPeerSlices: when each slice first carried
    each generation (the operator's half of a rollout)."""

    reached: dict[int, dict[str, float]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, obj: dict[str, Any], now: float) -> None:
        spec = obj.get("spec") or {}
        if spec.get("policy") == POLICY:
            self.reached.setdefault(int(spec.get("policyGeneration", 0)), {}).setdefault(
                obj["metadata"]["name"], now)

    def published(self, generation: int) -> float | None:
        """When the last slice carried ``generation``."""
        return max(self.reached.get(generation, {}).values(), default=None)


async def watch_objects(admin: Admin, path: str, watcher: Watcher | SliceWatcher,
                        stop: asyncio.Event) -> None:
    """List then watch ``path``, handing every object to ``watcher.observe`` with the time."""
    from controller.kubeapi import ApiError, ApiUnavailableError

    version = ""
    while not stop.is_set():
        try:
            if not version:
                listing = await admin.client.get(path)
                for item in listing.get("items") or []:
                    watcher.observe(item, time.monotonic())
                version = listing["metadata"]["resourceVersion"]
                watcher.synced.set()
            async for kind, obj in admin.client.watch(path, {
                    "resourceVersion": version, "timeoutSeconds": "60",
                    "allowWatchBookmarks": "true"}):
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    watcher.observe(obj, time.monotonic())
                elif kind == "ERROR":
                    version = ""
                    break
        except (ApiError, ApiUnavailableError):  # e.g. 429 while a new CRD's storage starts
            version = ""
            await asyncio.sleep(0.5)


async def wait_policy(admin: Admin, check: Any, timeout: float) -> float | None:
    """Seconds until ``check(policy or None)`` holds (polled every 0.25 s), None on timeout.
    An overloaded API server's timeout is a poll that saw nothing yet."""
    from controller.kubeapi import ApiError, ApiUnavailableError

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            body = await admin.client.get(f"{GROUP_PATH}/ipsecpolicies/{POLICY}")
        except ApiError as error:
            body = None if error.status == 404 else {}
        except ApiUnavailableError:
            body = {}
        if check(body):
            return round(time.monotonic() - started, 3)
        await asyncio.sleep(0.25)
    return None


def summary_ready(n: int, generation: int) -> Any:
    def check(body: Any) -> bool:
        status = (body or {}).get("status") or {}
        return bool(status.get("observedGeneration") == generation
                    and (status.get("summary") or {}).get("ready") == f"{n}/{n}")
    return check


def times_to(watcher: Watcher, generation: int, since: float, names: list[str]) -> list[float]:
    reached = watcher.reached.get(generation, {})
    return [reached[n] - since for n in names if n in reached]


def writes_since(before: dict[tuple[str, str], float],
                 after: dict[tuple[str, str], float]) -> dict[str, float]:
    """API writes by "VERB resource" between two readings of kube-apiserver's counters."""
    return {f"{verb} {res}": after[(verb, res)] - before.get((verb, res), 0.0)
            for (verb, res) in sorted(after) if verb in WRITE_VERBS
            and after[(verb, res)] - before.get((verb, res), 0.0) > 0}


def stages(slices: SliceWatcher, workers: list[Worker], before: dict[str, dict[str, Any]],
           generation: int, since: float, reported: list[float]) -> dict[str, Any]:
    """Where a rollout's time went, each from its start: the operator publishing the
    generation in every slice; each agent's first pass on it and its write of its
    IPsecNode saying so (p50/p99); the harness's watch seeing that (p50/p99); and the passes
    each agent ran meanwhile (``before``: the workers' stats at the start)."""
    published = slices.published(generation)
    after = worker_stats(workers)
    seen = [t - since for s in after.values()
            if (t := s["seen"].get(str(generation))) is not None]
    written = [t - since for s in after.values()
               if (t := s["written"].get(str(generation))) is not None]
    passes = deltas(before, after, "passes")
    return {
        "slices_published_seconds": round(published - since, 3) if published else None,
        "agents_passed_p50_seconds": percentile(seen, 0.50),
        "agents_passed_p99_seconds": percentile(seen, 0.99),
        "agents_wrote_p50_seconds": percentile(written, 0.50),
        "agents_wrote_p99_seconds": percentile(written, 0.99),
        "reported_p50_seconds": percentile(reported, 0.50),
        "reported_p99_seconds": percentile(reported, 0.99),
        "passes_per_agent": round(sum(passes) / max(1, len(passes)), 2),
    }


def policy_body(secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "nodeSelector": {"matchLabels": {"scale": "yes"}},
            "ipsecSubnets": ["10.80.0.0/16"],
            "credentials": {"secretRef": {"name": secret, "namespace": NAMESPACE}},
        },
    }


def worker_stats(workers: list[Worker]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for worker in workers:
        merged.update(worker.ask({"do": "stats"}))
    return merged


def deltas(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
           key: str) -> list[float]:
    return [after[n][key] - before[n][key] for n in after if n in before]


async def run_benchmark(n: int, workers_count: int, rest_seconds: float, timeout: float,
                        keep: Path | None, progress: Any) -> dict[str, Any]:
    from hack.labkit import controlplane, identities
    from tests.certs import make_ca, make_cert, secret_data, secret_manifest

    raise_file_limit()
    workdir = Path(tempfile.mkdtemp(prefix="strongmesh-scale-"))
    plane = None
    operator: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = []
    stop_watch = asyncio.Event()
    admin: Admin | None = None
    result: dict[str, Any] = {"nodes": n}
    try:
        plane = controlplane.up(workdir / "control-plane", progress=progress)
        result["control_plane"] = plane.version
        identities.install_chart(plane)
        admin = Admin(plane)
        progress(f"creating {n} Nodes and their agents' tokens")
        await admin.nodes(range(n))
        tokens = await admin.tokens(range(n))
        ca = make_ca("scale CA")
        plane.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest(
            secret_data(make_cert(ca, "strongmesh-node"), [ca]), "ipsec-credentials",
            NAMESPACE)))
        operator_config = identities.operator_kubeconfig(plane, workdir / "operator.kubeconfig")
        with (workdir / "operator.log").open("ab") as log:
            operator = subprocess.Popen(
                [sys.executable, "-B", "-m", "controller", "operator", "--kubeconfig",
                 str(operator_config)], stdout=log, stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
        cpu_start = process_cpu_seconds(operator.pid) or 0.0
        names = [node_name(i) for i in range(n)]
        shares = [names[k::workers_count] for k in range(workers_count)]
        progress(f"starting {n} simulated nodes in {workers_count} processes")
        started = time.monotonic()
        for k, share in enumerate(shares):
            workers.append(Worker(plane.server, plane.ca_cert.read_text(),
                                  [(name, tokens[name]) for name in share],
                                  workdir / f"worker-{k}.log"))
        for worker in workers:
            worker.receive()
        watcher, slices = Watcher(), SliceWatcher()
        watches = [asyncio.create_task(watch_objects(admin, path, w, stop_watch))
                   for path, w in ((f"{GROUP_PATH}/ipsecnodes", watcher),
                                   (f"{GROUP_PATH}/ipsecpeerslices", slices))]
        result["agents_started_seconds"] = round(time.monotonic() - started, 3)
        peak: dict[str, float] = {}

        def sample() -> None:
            for what, pid in (("operator", operator.pid if operator else 0),
                              ("kube_apiserver", plane.pids["kube-apiserver"] if plane else 0),
                              ("etcd", plane.pids["etcd"] if plane else 0)):
                rss = process_rss_mib(pid)
                if rss is not None:
                    peak[what] = max(peak.get(what, 0.0), rss)

        await asyncio.wait_for(watcher.synced.wait(), timeout)
        await asyncio.wait_for(slices.synced.wait(), timeout)
        # Where the machine's CPU goes in a rollout: the simulated agents' own work is N
        # passes over N peers on this one machine (in a cluster, each on its own node).
        def cpu_now() -> dict[str, float]:
            return {"agents": cpu_seconds(w.proc.pid for w in workers),
                    "operator": cpu_seconds([operator.pid] if operator else []),
                    "kube_apiserver": cpu_seconds([plane.pids["kube-apiserver"]] if plane
                                                  else [])}

        def cpu_since(before: dict[str, float]) -> dict[str, float]:
            return {k: round(v - before[k], 1) for k, v in cpu_now().items()}

        async def steps() -> None:
            async def rollout(step: str, what: str, prefix: str, generation: int,
                              status_key: str, change: Callable[[], Awaitable[Any]]) -> None:
                """Apply ``change`` (making ``generation``) and measure its rollout."""
                progress(f"{step}: {what}")
                cpu, requests, agents = cpu_now(), await admin.metrics(), worker_stats(workers)
                started = time.monotonic()
                await change()
                result[status_key] = await wait_policy(
                    admin, summary_ready(n, generation), timeout)
                await _until(lambda: len(watcher.reached.get(generation, {})) >= n, timeout,
                             f"{step}: every node enforcing generation {generation}")
                sample()
                times = times_to(watcher, generation, started, names)
                result[f"{prefix}_p50_seconds"] = percentile(times, 0.50)
                result[f"{prefix}_p99_seconds"] = percentile(times, 0.99)
                if prefix == "create":
                    result["create_enforcing_nodes"] = len(times)
                result[f"{prefix}_cpu_seconds"] = cpu_since(cpu)
                result[f"{prefix}_stages"] = stages(slices, workers, agents, generation,
                                                    started, times)
                result[f"{prefix}_writes"] = writes_since(requests, await admin.metrics())

            await rollout("1/5", "creating the policy", "create", 1, "status_complete_seconds",
                          lambda: admin.client.create(f"{GROUP_PATH}/ipsecpolicies",
                                                      policy_body("ipsec-credentials")))
            await rollout("2/5", "changing the policy (generation 2)", "update", 2,
                          "update_status_complete_seconds",
                          lambda: admin.client.merge_patch(
                              f"{GROUP_PATH}/ipsecpolicies/{POLICY}",
                              {"spec": {"esp": {"rekeyTime": "2h"}}}))
            # 3. rest
            progress(f"3/5: resting {rest_seconds:.0f} s")
            await asyncio.sleep(5)  # the tail of the rollout's writes
            before = await admin.metrics()
            await asyncio.sleep(rest_seconds)
            after = await admin.metrics()
            sample()
            writes = writes_since(before, after)
            result["writes_at_rest_by_verb_and_resource"] = writes
            result["writes_per_node_per_minute_at_rest"] = round(
                sum(writes.values()) / n / (rest_seconds / 60), 4)
            # 4. a status change, then joins and leaves
            churn = min(CHURN, n // 2)
            progress(f"4/5: one node's status changes, then {churn} nodes join and {churn} leave")
            stats0 = worker_stats(workers)
            flapped = names[0]
            next(w for w in workers if flapped in w.names).ask({"do": "flap", "node": flapped})
            await _until_async(lambda: _reports_rekeying(admin, flapped), timeout,
                               "4/5: the changed node's status")
            # the operator aggregates it into the policy's status (at most once a second)
            await _until_async(lambda: _row_rekeying(admin, flapped), timeout,
                               "4/5: the changed node's row")
            stats1 = worker_stats(workers)
            others = deltas(stats0, stats1, "events")
            result["watch_events_per_agent_per_status_change"] = {
                "mean": round(sum(others) / max(1, len(others)), 3), "max": max(others, default=0)}
            joiners = list(range(n, n + churn))
            await admin.nodes(joiners)
            join_tokens = await admin.tokens(joiners)
            joined = time.monotonic()
            workers[0].ask({"do": "start", "nodes": [(node_name(i), join_tokens[node_name(i)])
                                                     for i in joiners]})
            workers[0].names += [node_name(i) for i in joiners]
            await _until(lambda: all(node_name(i) in watcher.reached.get(2, {}) for i in joiners),
                         timeout, "4/5: the joined nodes enforcing")
            await _until(lambda: _all_peers(workers, names, n + churn), timeout,
                         "4/5: every agent knowing the joined peers", every=2.0)
            result["join_seconds"] = round(time.monotonic() - joined, 3)
            stats2 = worker_stats(workers)
            join_events = deltas(stats1, stats2, "events")
            join_updates = deltas(stats1, stats2, "peer_updates")
            result["watch_events_per_agent_per_join"] = round(
                sum(join_events) / max(1, len(join_events)) / max(1, churn), 3)
            result["peer_updates_per_agent_per_join"] = round(
                sum(join_updates) / max(1, len(join_updates)) / max(1, churn), 3)
            leavers = [node_name(i) for i in range(n - churn, n)]
            for worker in workers:
                mine = [x for x in leavers if x in worker.names]
                if mine:
                    worker.ask({"do": "stop", "nodes": mine})
                    worker.names = [x for x in worker.names if x not in mine]
            for name in leavers:
                await admin.client.delete(f"/api/v1/nodes/{name}")
            stayers = [x for x in names if x not in leavers]
            await _until(lambda: _all_peers(workers, stayers, n), timeout,
                         "4/5: every agent forgetting the left peers", every=2.0)
            stats3 = worker_stats(workers)
            leave_events = deltas(stats2, stats3, "events")
            result["watch_events_per_agent_per_leave"] = round(
                sum(leave_events) / max(1, len(leave_events)) / max(1, churn), 3)
            sample()
            # 5. delete
            progress("5/5: deleting the policy")
            deleted = time.monotonic()
            await admin.client.delete(f"{GROUP_PATH}/ipsecpolicies/{POLICY}")
            gone = await wait_policy(admin, lambda body: body is None, timeout)
            result["delete_seconds"] = round(time.monotonic() - deleted, 3) if gone is not None \
                else None
            sample()
        try:
            await steps()
        except StageTimeoutError as error:  # the figures so far, and where it stopped
            result["incomplete"] = str(error)
            result["enforcing_nodes_by_generation"] = {
                str(g): len(reached) for g, reached in sorted(watcher.reached.items())}
            sample()
        cpu = process_cpu_seconds(operator.pid)
        result["operator_cpu_seconds"] = round(cpu - cpu_start, 2) if cpu is not None else None
        result["operator_rss_mib"] = peak.get("operator")
        result["kube_apiserver_rss_mib"] = peak.get("kube_apiserver")
        result["etcd_rss_mib"] = peak.get("etcd")
        stop_watch.set()
        for watch in watches:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        return result
    finally:
        if admin is not None:
            await admin.client.close()
        for worker in workers:
            worker.close()
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        if plane is not None:
            plane.down()
        if keep is not None:
            shutil.copytree(workdir, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("etcd"))
        shutil.rmtree(workdir, ignore_errors=True)


async def _reports_rekeying(admin: Admin, name: str) -> bool:
    body = await admin.client.get(f"{GROUP_PATH}/ipsecnodes/{name}")
    return any(sa.get("state") == "REKEYING" for sa in (body.get("status") or {}).get("sas")
               or [])


async def _row_rekeying(admin: Admin, name: str) -> bool:
    """The policy's row of the node shows the change (its established peers dropped)."""
    body = await admin.client.get(f"{GROUP_PATH}/ipsecpolicies/{POLICY}")
    rows = ((body.get("status") or {}).get("nodes")) or []
    return any(r.get("name") == name and r.get("establishedPeers", 0) == 0 for r in rows)


def _all_peers(workers: list[Worker], names: list[str], expected: int) -> bool:
    """Every named agent holds ``expected`` peers. Asks every worker for its agents' stats,
    which competes with the agents: poll it every few seconds, not four times a second."""
    stats = worker_stats(workers)
    return all(stats[x]["peers"] == expected for x in names if x in stats)


class StageTimeoutError(RuntimeError):
    """A step did not finish within --timeout: the run reports how far it got."""


async def _until(check: Any, timeout: float, what: str, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(every)
    raise StageTimeoutError(f"{what}: not within {timeout:.0f} s")


async def _until_async(check: Any, timeout: float, what: str) -> None:
    from controller.kubeapi import ApiUnavailableError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiUnavailableError):  # overloaded: not yet
            if await check():
                return
        await asyncio.sleep(0.25)
    raise StageTimeoutError(f"{what}: not within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="hack/bench-scale",
        description="The control path at N nodes on the real control plane (see "
        "hack/labkit/scale.py): create/update rollout times, API writes at rest, watch "
        "events per agent, deletion time, operator and control-plane memory.")
    parser.add_argument("--nodes", type=int, default=250)
    parser.add_argument("--workers", type=int, default=4,
                        help="processes holding the simulated nodes (default 4)")
    parser.add_argument("--rest-seconds", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="for each wait (default 600)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()

    def progress(line: str) -> None:
        print(f"[bench-scale {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    result = asyncio.run(run_benchmark(args.nodes, args.workers, args.rest_seconds,
                                       args.timeout, args.keep_logs, progress))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 1 if "incomplete" in result else 0
