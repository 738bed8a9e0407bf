"""Gentle shutdown (the add-on's ``stop_timeout``): charon outlives the node's workloads.

When the node shuts down or the agent pod is deleted, the charon container's preStop hook runs
``strongmesh drain``: it returns once the node's workloads are gone or the timeout passed, and
only then does charon get SIGTERM. Meanwhile workloads keep their SAs and talk ESP while they
drain. The timeout comes from the policies (``shutdownTimeoutSeconds``, the largest one that
applies), which the agent writes next to the VICI socket on every pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_TIMEOUT_SECONDS = 30
TIMEOUT_FILE_NAME = "shutdown-timeout-seconds"

Outcome = Literal["drained", "timeout"]


def workload_pods(pods: Iterable[Mapping[str, Any]], own_pod: str | None) -> list[str]:
    """Pods whose traffic charon must keep protecting: not DaemonSet pods (they live as long
    as the node), not this pod, not already finished. Returns ``namespace/name``."""
    names: list[str] = []
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("name") == own_pod:
            continue
        if any(ref.get("kind") == "DaemonSet" for ref in meta.get("ownerReferences") or []):
            continue
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            continue
        names.append(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
    return names


def alive_pids(pids: Iterable[int], exists: Callable[[int], bool]) -> list[str]:
    """Standalone hosts: workloads are processes (``--wait-pid``)."""
    return [str(pid) for pid in pids if exists(pid)]


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_timeout(policy_timeouts: Sequence[int]) -> int:
    """The largest timeout among the policies that select the node (default without any)."""
    return max(policy_timeouts, default=DEFAULT_TIMEOUT_SECONDS)


def write_timeout(directory: str, seconds: int) -> None:
    path = os.path.join(directory, TIMEOUT_FILE_NAME)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{seconds}\n")
    os.replace(tmp, path)


def read_timeout(directory: str) -> int:
    try:
        with open(os.path.join(directory, TIMEOUT_FILE_NAME), encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return DEFAULT_TIMEOUT_SECONDS


@dataclass
class DrainResult:
    outcome: Outcome
    seconds: float
    remaining: list[str]


def wait_for_drain(
    remaining_workloads: Callable[[], list[str]],
    timeout: float,
    *,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda _: None,
) -> DrainResult:
    """Poll until no workload remains or ``timeout`` seconds passed."""
    start = clock()
    last: list[str] | None = None
    while True:
        try:
            remaining = remaining_workloads()
        except Exception as exc:  # an API outage must not hold charon forever nor end early
            log(f"cannot list workloads ({exc}); still waiting")
            remaining = last if last is not None else ["<unknown>"]
        elapsed = clock() - start
        if not remaining:
            return DrainResult("drained", elapsed, [])
        if elapsed >= timeout:
            return DrainResult("timeout", elapsed, remaining)
        if remaining != last:
            log(f"waiting for {len(remaining)} workload(s): {', '.join(remaining[:5])}")
            last = remaining
        sleep(min(poll, max(0.0, timeout - elapsed)))
