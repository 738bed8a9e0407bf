"""What the agents report, and when the lab counts as ready.

Standalone: each agent writes a status file in its node's state dir. Cluster: each agent
writes its IPsecNode, read here in the shape of a status file (``cluster.status_document``),
and ready means what the operator says: the policies' Ready condition for their generation.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hack.labkit.lab.cluster import Cluster
from hack.labkit.lab.network import Host


def status_mtime(host: Host) -> float:
    try:
        return os.stat(host.status_file).st_mtime
    except OSError:
        return 0.0


def enforced(data: Mapping[str, Any] | None, expected: Mapping[str, int]) -> bool:
    """A node's status says: no errors, every expected policy enforced at its generation
    with an SA to every peer (ready as the operator judges it)."""
    if data is None:
        return False
    status = data.get("status") or {}
    if status.get("errors"):
        return False
    policies = {
        p.get("name"): p for p in status.get("policies", []) if p.get("enforcing", True)
    }
    return all(
        name in policies and policies[name].get("generation") == generation
        and policies[name].get("establishedPeers", 0) == policies[name].get("expectedPeers", 0)
        for name, generation in expected.items()
    )


class Statuses:
    """The nodes' statuses: status files, or IPsecNodes with a ``cluster``."""

    def __init__(self, nodes: Sequence[Host], cluster: Cluster | None) -> None:
        self.nodes = nodes
        self.cluster = cluster

    def read(self, host: Host) -> dict[str, Any] | None:
        if self.cluster is not None:
            return self.cluster.node_status(host.name)
        try:
            with open(host.status_file) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError):
            return None

    def node_ready(self, host: Host, expected: Mapping[str, int]) -> bool:
        return enforced(self.read(host), expected)

    def wait_ready(self, expected: dict[str, int], timeout: float) -> float | None:
        """Seconds until ready (cluster: the policies Ready; else every node's status file
        says ``enforced``), None if not within ``timeout``; an agent that exits fails it."""
        start = time.time()
        while time.time() - start < timeout:
            if self.cluster is not None:
                if self.cluster.policies_ready(sorted(expected)):
                    return time.time() - start
            elif all(self.node_ready(h, expected) for h in self.nodes):
                return time.time() - start
            for h in self.nodes:
                if h.agent is not None and h.agent.poll() is not None:
                    raise RuntimeError(f"agent on {h.name} exited with {h.agent.returncode}")
            time.sleep(0.1)
        return None

    def collect(self, refresh: bool) -> dict[str, Any]:
        """Each node's status; with refresh, ask running agents for a pass first (SIGHUP)."""
        before = {h.name: self.read(h) for h in self.nodes}
        if refresh and self.cluster is not None:
            self.cluster.refresh()
        elif refresh:
            waiting = []
            for h in self.nodes:
                if h.agent is not None and h.agent.poll() is None:
                    h.agent.send_signal(signal.SIGHUP)
                    waiting.append(h)
            deadline = time.time() + 15
            while waiting and time.time() < deadline:
                waiting = [h for h in waiting if self.read(h) == before[h.name]]
                time.sleep(0.1)
        return {h.name: self.read(h) for h in self.nodes}
