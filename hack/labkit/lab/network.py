"""The lab's hosts and the network between them: the switch, the nodes, the bystander and,
with pods, a pod host behind every node (names and addresses: ``topology``)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from hack.labkit.lab.netns import bridge_port, in_netns, ip_batch
from hack.labkit.lab.paths import STATE
from hack.labkit.lab.shell import sh
from hack.labkit.lab.topology import (
    BYSTANDER,
    BYSTANDER_ADDRESS,
    POD_LINK,
    SWITCH,
    node_address,
    node_name,
    node_pod_cidr,
    pod_address,
    pod_name,
    pod_network_commands,
)


class Host:
    """A lab host: a network namespace with one veth on the switch, or (a pod host) one veth
    to the node that carries it (``carrier``), through which it reaches everything else. A
    node runs a charon and an agent (their processes are kept here)."""

    def __init__(self, name: str, address: str, node: bool,
                 carrier: Host | None = None, pod_cidr: str | None = None) -> None:
        self.name = name
        self.address = address
        self.node = node
        self.carrier = carrier
        self.pod_cidr = pod_cidr  # a pod host's: its node's pod CIDR
        self.charon: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.state_dir = f"{STATE}/{name}"

    @property
    def vici(self) -> str:
        return f"unix://{self.state_dir}/charon.vici"

    @property
    def status_file(self) -> str:
        return f"{self.state_dir}/status.json"

    @property
    def identity_dir(self) -> str:
        """Where a cluster-mode agent keeps its key and certificates (``--identity-dir``)."""
        return f"{self.state_dir}/identity"

    @property
    def role(self) -> str:
        if self.carrier is not None:
            return "pod"
        return "node" if self.node else "bystander"

    def describe(self) -> dict[str, Any]:
        """The host as ``results["hosts"]`` records it: ``carrier`` is the address its traffic
        wears on the switch when a node wraps it in ESP (a pod's node; else its own)."""
        carrier = self.carrier or self
        return {"name": self.name, "address": self.address, "role": self.role,
                "node": carrier.name if carrier.node else None,
                "carrier": carrier.address, "podCIDR": self.pod_cidr}


class Network:
    """The hosts of a lab of ``count`` nodes (and their pod hosts with ``pods``), and how
    they are wired."""

    def __init__(self, count: int, pods: bool) -> None:
        self.nodes = [Host(node_name(i), node_address(i), True) for i in range(1, count + 1)]
        self.pods = [
            Host(pod_name(i), pod_address(i), False, carrier=node, pod_cidr=node_pod_cidr(i))
            for i, node in enumerate(self.nodes, start=1)
        ] if pods else []
        self.bystander = Host(BYSTANDER, BYSTANDER_ADDRESS, False)
        self.on_switch = [*self.nodes, self.bystander]
        self.hosts = [*self.nodes, *self.pods, self.bystander]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def targets(self, node: str | None) -> list[Host]:
        """A step's hosts: the node it names, else every lab node."""
        return [self.host(node)] if node is not None else list(self.nodes)

    def build(self) -> dict[str, Any] | None:
        """The switch with every host on it; with pods, the pod hosts (what was set up for
        them is returned: ``results["pods"]``)."""
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", SWITCH, "type", "bridge")
        sh("ip", "link", "set", SWITCH, "up")
        for host in self.on_switch:
            sh("ip", "netns", "add", host.name)
            bridge_port(SWITCH, host.name, f"v-{host.name}", "eth0", f"{host.address}/24")
            sh("ip", "-n", host.name, "link", "set", "lo", "up")
            os.makedirs(host.state_dir)
        return self.build_pods() if self.pods else None

    def build_pods(self) -> dict[str, Any]:
        """Each node's pod host (``pod_network_commands``), IP forwarding on in the nodes,
        reverse-path filtering checked everywhere; returns what was set."""
        batches: dict[str, list[str]] = {}
        for pod in self.pods:
            sh("ip", "netns", "add", pod.name)
        for index in range(1, len(self.nodes) + 1):
            for namespace, lines in pod_network_commands(index, len(self.nodes)).items():
                batches.setdefault(namespace, []).extend(lines)
        # the nodes first: their veths create the pods' eth0
        for namespace in sorted(batches, key=lambda n: n not in {h.name for h in self.nodes}):
            ip_batch(namespace, batches[namespace])
        sysctls: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            links = ("eth0", POD_LINK) if host.node else ("eth0",)
            sysctls[host.name] = pod_sysctls(host.name, links, forward=host.node)
        return {
            "commands": batches,
            "routes": {h.name: sh("ip", "-n", h.name, "-4", "route").splitlines()
                       for h in self.hosts},
            "sysctls": sysctls,
        }


def pod_sysctls(namespace: str, links: tuple[str, ...], forward: bool) -> dict[str, Any]:
    """In one namespace: ``ip_forward=1`` on a node; rp_filter as found, and strict (1)
    made loose (2) so that no forwarded packet is dropped for its source (every host has
    a route back to every pod CIDR, so loose mode passes everything the lab sends)."""
    keys = [f"net/ipv4/conf/{c}/rp_filter" for c in ("all", "default", *links)]
    if forward:
        keys.insert(0, "net/ipv4/ip_forward")
    found: dict[str, Any] = {}
    with in_netns(namespace):
        for key in keys:
            path = f"/proc/sys/{key}"
            with open(path) as f:
                before = f.read().strip()
            want = before
            if key.endswith("ip_forward"):
                want = "1"
            elif before == "1":
                want = "2"
            if want != before:
                with open(path, "w") as f:
                    f.write(want)
            with open(path) as f:
                after = f.read().strip()
            found[key.replace("/", ".")] = {"found": int(before), "now": int(after)}
    return found
