"""The scenario's basic steps: probe, disturb the nodes (xfrm, charon, agent, policy file), wait
until they recovered, record, measure. Formats: ``hack/labkit/lab/__init__.py``.

Without ``node`` a step acts on every lab node. ``wait_ready`` reads the agents' status files
(standalone mode); the other waits read the kernels, or the statuses either mode reports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hack.labkit.lab import xfrm
from hack.labkit.lab.paths import POLICY_FILE, SHARED
from hack.labkit.lab.processes import cpu_ticks
from hack.labkit.lab.shell import sh
from hack.labkit.lab.status import enforced, status_mtime

if TYPE_CHECKING:
    from hack.labkit.lab.inside import Lab


@dataclass(frozen=True)
class Probe:
    label: str
    timeout: float = 20


def probe(lab: Lab, step: Probe) -> str:
    return str(lab.probe(step.label, step.timeout)["label"])


@dataclass(frozen=True)
class FlushXfrm:
    what: Literal["policy", "state", "all"] = "policy"
    node: str | None = None


def flush_xfrm(lab: Lab, step: FlushXfrm) -> None:
    kinds = ("policy", "state") if step.what == "all" else (step.what,)
    for host in lab.network.targets(step.node):
        for kind in kinds:
            sh("ip", "-n", host.name, "xfrm", kind, "flush")


@dataclass(frozen=True)
class RestartCharon:
    node: str | None = None
    signal: str = "TERM"  # a signal's name without SIG
    down_seconds: float = 0


def restart_charon(lab: Lab, step: RestartCharon) -> None:
    for host in lab.network.targets(step.node):
        stop(host.charon, step.signal)
        time.sleep(step.down_seconds)
        lab.start_charon(host)


@dataclass(frozen=True)
class KillAgent:
    node: str | None = None
    signal: str = "KILL"  # a signal's name without SIG


def kill_agent(lab: Lab, step: KillAgent) -> None:
    for host in lab.network.targets(step.node):
        stop(host.agent, step.signal)


def stop(process: subprocess.Popen[bytes] | None, signal_name: str) -> None:
    """Send a process the signal (``TERM``, ``KILL``, ...) and wait until it exited."""
    assert process is not None
    process.send_signal(signal.Signals["SIG" + signal_name])
    process.wait(timeout=30)


@dataclass(frozen=True)
class StartAgent:
    node: str | None = None


def start_agent(lab: Lab, step: StartAgent) -> None:
    for host in lab.network.targets(step.node):
        lab.start_agent(host)


@dataclass(frozen=True)
class WritePolicy:
    file: str  # a ``--file NAME=PATH`` copied into the lab


def write_policy(lab: Lab, step: WritePolicy) -> None:
    tmp = POLICY_FILE + ".new"
    shutil.copyfile(f"{SHARED}/{step.file}", tmp)
    os.rename(tmp, POLICY_FILE)


@dataclass(frozen=True)
class WaitReady:
    expected: Mapping[str, int]  # policy -> generation
    timeout: float = 60


def wait_ready(lab: Lab, step: WaitReady) -> float:
    """Until every node reports the expected generations, in a status written now."""
    if lab.cluster is not None:
        raise RuntimeError("wait_ready reads status files: use wait_policy in cluster mode")
    nodes = lab.network.nodes
    started = time.time()
    deadline = started + step.timeout
    while time.time() < deadline:
        fresh = all(status_mtime(h) > started for h in nodes)
        if fresh and all(enforced(lab.statuses.read(h), step.expected) for h in nodes):
            return round(time.time() - started, 3)
        time.sleep(0.1)
    raise RuntimeError(f"nodes not ready for {dict(step.expected)} within {step.timeout} s")


@dataclass(frozen=True)
class WaitPolicies:
    timeout: float = 30


def wait_policies(lab: Lab, step: WaitPolicies) -> float:
    """Until every node holds as many owned xfrm policies as after the ``main`` round."""
    started = time.time()
    want = lab.results["owned_policies"]
    deadline = started + step.timeout
    while time.time() < deadline:
        if all(xfrm.owned_policies(h) >= want[h.name] for h in lab.network.nodes):
            return round(time.time() - started, 3)
        time.sleep(0.1)
    raise RuntimeError("owned xfrm policies not restored")


@dataclass(frozen=True)
class WaitSas:
    timeout: float = 20


def wait_sas(lab: Lab, step: WaitSas) -> bool:
    return xfrm.wait_sas(lab.network.nodes, step.timeout)


@dataclass(frozen=True)
class WaitOneSaPerPeer:
    nodes: tuple[str, ...] = ()  # empty: every lab node
    timeout: float = 30


def wait_one_sa_per_peer(lab: Lab, step: WaitOneSaPerPeer) -> float:
    """Until each of those nodes holds exactly one ESP state in and one out with every other
    of them, and none with a node outside the set (a peer that left); returns the seconds."""
    members = ([lab.network.host(n) for n in step.nodes] if step.nodes
               else list(lab.network.nodes))
    started = time.time()
    deadline = started + step.timeout
    gaps: dict[str, Any] = {}
    while time.time() < deadline:
        gaps = xfrm.one_sa_per_peer_gaps(members)
        if not gaps:
            return round(time.time() - started, 3)
        time.sleep(0.2)
    raise RuntimeError(f"not exactly one SA per peer within {step.timeout} s: {gaps}")


@dataclass(frozen=True)
class WaitStatus:
    error_contains: str = ""
    node: str | None = None
    timeout: float = 30


def wait_status(lab: Lab, step: WaitStatus) -> dict[str, Any]:
    """Until the nodes' statuses have an error containing a text; returns those errors."""
    deadline = time.time() + step.timeout
    waiting = lab.network.targets(step.node)
    found: dict[str, Any] = {}
    while waiting and time.time() < deadline:
        for host in list(waiting):
            data = lab.statuses.read(host) or {}
            errors = (data.get("status") or {}).get("errors", [])
            if any(step.error_contains in t for t in errors):
                found[host.name] = errors
                waiting.remove(host)
        time.sleep(0.2)
    if waiting:
        raise RuntimeError(f"no status error containing {step.error_contains!r} on "
                           f"{', '.join(h.name for h in waiting)}")
    return found


@dataclass(frozen=True)
class Snapshot:
    label: str


def snapshot(lab: Lab, step: Snapshot) -> None:
    """The nodes' ESP states and (refreshed) statuses, kept under the label."""
    lab.results["states"][step.label] = {h.name: xfrm.esp_states(h) for h in lab.network.nodes}
    lab.results.setdefault("snapshots", {})[step.label] = lab.statuses.collect(refresh=True)


@dataclass(frozen=True)
class Sleep:
    seconds: float


def sleep(lab: Lab, step: Sleep) -> None:
    time.sleep(step.seconds)


@dataclass(frozen=True)
class MeasureAgents:
    seconds: float = 10


def measure_agents(lab: Lab, step: MeasureAgents) -> dict[str, Any]:
    """Each agent's RSS and CPU share over a window at rest (no input changes)."""
    tick = os.sysconf("SC_CLK_TCK")

    def rss_kib(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    agents = {h.name: h.agent.pid for h in lab.network.nodes if h.agent is not None}
    before = {name: cpu_ticks(pid) for name, pid in agents.items()}
    time.sleep(step.seconds)
    return {
        name: {
            "rss_mib": round(rss_kib(pid) / 1024, 1),
            "cpu_percent": round(100 * (cpu_ticks(pid) - before[name]) / tick / step.seconds,
                                 2),
        }
        for name, pid in agents.items()
    }


@dataclass(frozen=True)
class MeasurePass:
    repeat: int = 5
    node: str | None = None  # default: the first lab node


def measure_pass(lab: Lab, step: MeasurePass) -> list[float]:
    """SIGHUP -> status file rewritten: one whole pass with nothing to change, timed."""
    host = lab.network.host(step.node) if step.node else lab.network.nodes[0]
    assert host.agent is not None
    durations = []
    for _ in range(step.repeat):
        before = status_mtime(host)
        time.sleep(0.3)
        started = time.time()
        host.agent.send_signal(signal.SIGHUP)
        while status_mtime(host) == before and time.time() - started < 10:
            time.sleep(0.002)
        durations.append(round(time.time() - started, 4))
    return durations
