"""The lab's long-running processes: ``tcpdump`` on the switch, one charon and one agent per
node (each in its node's network namespace), and where their output goes (``LOGS``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hack.labkit.lab.network import Host
from hack.labkit.lab.paths import LOGS, POLICY_FILE, SHARED
from hack.labkit.lab.static import static_strongswan_conf
from hack.labkit.lab.topology import SWITCH

CHARON = "/usr/lib/ipsec/charon"
AGENT_METRICS_PORT = 9476  # the chart's agent.metricsPort
CAPTURE = f"{SHARED}/capture.pcap"


class Capture:
    """``tcpdump`` on the switch, into ``CAPTURE`` (the host reads it for the report)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["tcpdump", "-i", SWITCH, "-w", CAPTURE, "-U", "-Z", "root",
             "-s", "262", "-n", "ip or ip6"],
            stdout=subprocess.DEVNULL,
            stderr=open(f"{LOGS}/tcpdump.log", "wb"),  # noqa: SIM115 - lives on
        )
        deadline = time.time() + 10
        while time.time() < deadline:  # tcpdump prints "listening on" once capturing
            with open(f"{LOGS}/tcpdump.log", "rb") as f:
                if b"listening" in f.read():
                    return
            time.sleep(0.05)
        raise RuntimeError("tcpdump did not start")

    def stop(self, send: Callable[[bytes], object]) -> None:
        """Stop tcpdump once it wrote everything: a marker datagram (``send`` puts it on the
        switch) must be in the file."""
        if self.process is None:
            return
        marker = f"SMLAB-END-{os.urandom(4).hex()}".encode()
        deadline = time.time() + 5
        with contextlib.suppress(OSError):
            send(marker)
            while time.time() < deadline:
                with open(CAPTURE, "rb") as f:
                    if marker in f.read():
                        break
                time.sleep(0.05)
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=10)
        self.process = None


def cpu_ticks(pid: int) -> int:
    """CPU a process used so far (utime + stime, in clock ticks); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def busy_ticks() -> int:
    """CPU the whole (one-CPU) UML kernel spent on anything but idling, in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


def cpu_snapshot(hosts: Sequence[Host]) -> dict[str, int]:
    """Ticks used so far by the agents, the charons and the machine."""
    return {
        "agents": sum(cpu_ticks(h.agent.pid) for h in hosts if h.agent is not None),
        "charons": sum(cpu_ticks(h.charon.pid) for h in hosts if h.charon is not None),
        "busy": busy_ticks(),
    }


def cpu_seconds_between(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds each part used between two snapshots; ``other``: the lab itself, the
    kernel's own work (packets, crypto in softirq) and everything else."""
    tick = os.sysconf("SC_CLK_TCK")
    spent = {k: (after[k] - before[k]) / tick for k in before}
    spent["other"] = spent["busy"] - spent["agents"] - spent["charons"]
    return {k: round(v, 2) for k, v in spent.items()}


def charon_conf(config: Mapping[str, Any], host: Host) -> str:
    """The project's rendered strongswan.conf (the host renders one per host), or the static
    mode's hand-written one; written to the host's state dir, the path returned."""
    path = f"{host.state_dir}/strongswan.conf"
    rendered = (config.get("strongswan_confs") or {}).get(host.name)
    if rendered is None:
        rendered = static_strongswan_conf(host.vici, f"{LOGS}/{host.name}-charon.log",
                                          int(config.get("charon_log_level", 1)))
    with open(path, "w") as f:
        f.write(rendered)
    return path


def start_charon(config: Mapping[str, Any], host: Host) -> None:
    """charon in the host's network namespace, with a mount namespace of its own (``ip
    netns exec`` makes one) and a private /run for charon.pid; returns once VICI listens."""
    conf = charon_conf(config, host)
    socket_path = host.vici.removeprefix("unix://")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    host.charon = subprocess.Popen(
        ["ip", "netns", "exec", host.name, "sh", "-c",
         f"mount -t tmpfs tmpfs /run && exec {CHARON}"],
        env={"PATH": os.environ["PATH"], "STRONGSWAN_CONF": conf},
        stdout=subprocess.DEVNULL,
        stderr=open(f"{LOGS}/{host.name}-charon.stderr", "ab"),  # noqa: SIM115
    )
    deadline = time.time() + 20
    while not os.path.exists(socket_path):
        if host.charon.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"charon on {host.name} did not start")
        time.sleep(0.05)


def agent_input_args(config: Mapping[str, Any], host: Host) -> list[str]:
    """How an agent gets its inputs: the API (cluster mode, as its node's identity, keeping
    its key and issued certificates in the node's identity dir) or the shared policy file."""
    if config.get("mode") == "cluster":
        return ["--kubeconfig", str(config["api"]["agent_kubeconfigs"][host.name]),
                "--identity-dir", host.identity_dir]
    return ["--policy-file", POLICY_FILE, "--status-file", host.status_file]


def python_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The environment of the product's processes the lab starts (agents, drain)."""
    return {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(config["project"]), "HOME": "/tmp"}


def start_agent(config: Mapping[str, Any], host: Host) -> None:
    """The product's agent for a node, in the node's network namespace (its log in LOGS)."""
    argv = [
        "ip", "netns", "exec", host.name,
        str(config["python"]), "-B", "-m", "controller.cli.agent",
        "--node", host.name,
        *agent_input_args(config, host),
        "--vici", host.vici,
        "--metrics-port", str(AGENT_METRICS_PORT),
        "--resync-seconds", str(config.get("resync_seconds", 5)),
        "--log-level", str(config.get("agent_log_level", "info")),
    ]
    host.agent = subprocess.Popen(
        argv, env=python_env(config), cwd="/tmp", stdin=subprocess.DEVNULL,
        stdout=open(f"{LOGS}/{host.name}-agent.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
