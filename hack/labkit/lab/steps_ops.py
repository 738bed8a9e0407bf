"""Operations scenario steps of the kernel lab: metrics and gentle shutdown.

Standard library only: it runs in the lab's PID 1 inside user-mode-linux (every import goes
through hostfs). The steps only record; ``hack.labkit.lab.ops_report`` (pure,
host side) judges what they recorded together with the switch capture.

``{"do": "metrics", "node"?, "rekey"?: NODE}``: per node, ``swanctl --list-sas``, then a
reconcile pass (SIGHUP, waiting until the agent's pass counter moved), then ``curl`` of the
agent's ``/metrics`` inside the node's network namespace, then ``swanctl --list-sas`` again:
the SA counts of the metrics must match what charon lists (the two listings show whether the SAs
were stable meanwhile). With ``rekey``, that node's IKE_SA and CHILD_SA are then rekeyed
(``swanctl --rekey``) and every node's ``strongmesh_rekeys_total`` is recorded before and after:
the agents count rekeys from charon's VICI events.

``{"do": "gentle_shutdown", "label": L, "node"?: "node-1", "peer"?: "node-2",
"workload_seconds": W, "timeout"?: T, "restart"?: true}``: the chart's shutdown sequence on
one node. A workload process in the node sends a UDP datagram with a token to the peer every
0.2 s for W seconds, then exits. Meanwhile ``strongmesh drain --wait-pid <workload>`` runs
(with ``--timeout T``, or without it: then the timeout is the policies'
``shutdownTimeoutSeconds``, as the agent recorded it in the node's state directory), and only
when it returns does charon get SIGTERM, exactly like the preStop hook and the kubelet. After
charon left, the node sends datagrams to every other node (in-scope traffic without charon).
Recorded: the timestamps of every phase, every datagram sent and received, the node's owned
xfrm policies before and after, the drain's log. ``restart`` starts charon again at the end
(the agent re-applies everything; SAs come back with the next traffic).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hack.labkit.lab.network import Host
from hack.labkit.lab.probes import PROBE_PORT
from hack.labkit.lab.processes import AGENT_METRICS_PORT, python_env
from hack.labkit.lab.xfrm import owned_policies

if TYPE_CHECKING:
    from hack.labkit.lab.inside import Lab

WORKLOAD_INTERVAL = 0.2
TOKEN_PREFIXES = (b"SMWORK:", b"SMAFTER:")

PASS_COUNT = re.compile(r"^strongmesh_reconcile_duration_seconds_count\s+(\S+)$", re.M)
REKEYS = re.compile(r'^strongmesh_rekeys_total\{kind="(\w+)"\}\s+(\S+)$', re.M)
IKE_NAME = re.compile(r"^(\S[^:]*): #\d+, ESTABLISHED", re.M)
CHILD_INSTALLED = re.compile(r"^\s+\S[^:]*: #\d+, reqid \d+, INSTALLED", re.M)

# The workload: a datagram with a sequence number every INTERVAL s for SECONDS s, then exit.
# Each send is logged as "seq time ok" (ok 0: the kernel refused it, e.g. no SA in Required).
WORKLOAD = """\
import socket, sys, time
dst, port, seconds, label, interval = sys.argv[1:6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + float(seconds)
seq = 0
while time.time() < end:
    now = time.time()
    try:
        s.sendto(f"SMWORK:{label}:{seq}".encode(), (dst, int(port)))
        ok = 1
    except OSError:
        ok = 0
    print(seq, repr(now), ok, flush=True)
    seq += 1
    time.sleep(float(interval))
"""


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


def pass_count(metrics_text: str) -> float | None:
    """How many reconcile passes the agent's metrics have seen (None: not in the text)."""
    match = PASS_COUNT.search(metrics_text)
    return float(match.group(1)) if match else None


def rekey_counts(metrics_text: str) -> dict[str, float]:
    """Rekeyings the agent counted from charon's events, by kind (``ike``, ``child``)."""
    return {kind: float(value) for kind, value in REKEYS.findall(metrics_text)}


class _Receiver:
    """Collects the step's datagrams (token prefixes above) arriving at the lab's receivers."""

    def __init__(self, sockets: dict[str, socket.socket]) -> None:
        self._sockets = sockets
        self.received: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        fds = {s.fileno(): name for name, s in self._sockets.items()}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(fds), [], [], 0.1)
            for fd in ready:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data, _ = self._sockets[fds[fd]].recvfrom(2048)
                        if data.startswith(TOKEN_PREFIXES):
                            self.received[data.decode(errors="replace")] = {
                                "at": time.time(), "host": fds[fd]
                            }


def scrape_metrics(node: Host) -> str:
    out = _run("ip", "netns", "exec", node.name, "curl", "-sS", "--max-time", "5",
               f"http://127.0.0.1:{AGENT_METRICS_PORT}/metrics")
    if out.returncode != 0:
        raise RuntimeError(f"curl on {node.name}: {out.stderr.strip() or out.returncode}")
    return out.stdout


def list_sas_text(node: Host) -> str:
    """``swanctl --list-sas`` as it prints it, run in the node."""
    out = _run("ip", "netns", "exec", node.name, "swanctl", "--list-sas", "--uri", node.vici)
    if out.returncode != 0:
        raise RuntimeError(f"swanctl on {node.name}: {out.stderr.strip() or out.returncode}")
    return out.stdout


# ----------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metrics:
    node: str | None = None
    rekey: str | None = None  # a node whose SAs are rekeyed after the scrape
    timeout: float = 20


def metrics(lab: Lab, step: Metrics) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for node in lab.network.targets(step.node):
        before = list_sas_text(node)
        passes = pass_count(scrape_metrics(node))
        if node.agent is not None and node.agent.poll() is None:
            node.agent.send_signal(signal.SIGHUP)
        deadline = time.time() + step.timeout
        while True:
            text = scrape_metrics(node)
            now = pass_count(text)
            if now is not None and (passes is None or now > passes):
                break
            if time.time() > deadline:
                raise RuntimeError(f"no reconcile pass on {node.name} after SIGHUP")
            time.sleep(0.1)
        found[node.name] = {
            "swanctl_before": before,
            "metrics": text,
            "swanctl": list_sas_text(node),
            "passes_before": passes,
            "passes": now,
        }
    if step.rekey is not None:
        found["rekey"] = rekey_and_count(lab.network.nodes, lab.network.host(step.rekey),
                                         step.timeout)
    return found


def rekey_and_count(nodes: list[Host], node: Host, timeout: float) -> dict[str, Any]:
    """Rekey the node's IKE and CHILD_SAs with swanctl; wait until its agent counted both
    (from charon's ``ike-rekey``/``child-rekey`` events, not from a pass)."""
    listing = list_sas_text(node)
    names = sorted(set(IKE_NAME.findall(listing)))
    if not names:
        raise RuntimeError(f"no established IKE_SA on {node.name} to rekey")
    # swanctl rekeys every SA of a connection name; the node holds one connection per peer
    expected = {"ike": len(IKE_NAME.findall(listing)),
                "child": len(CHILD_INSTALLED.findall(listing))}
    before = {n.name: rekey_counts(scrape_metrics(n)) for n in nodes}
    commands = []
    for name in names:
        for kind in ("child", "ike"):
            out = _run("ip", "netns", "exec", node.name, "swanctl", "--rekey", f"--{kind}",
                       name, "--uri", node.vici)
            commands.append({"argv": f"swanctl --rekey --{kind} {name}",
                             "rc": out.returncode,
                             "output": (out.stdout + out.stderr)[-500:]})
    deadline = time.time() + timeout
    while True:
        after = {n.name: rekey_counts(scrape_metrics(n)) for n in nodes}
        mine, was = after[node.name], before[node.name]
        rekeyed = all(mine.get(k, 0) >= was.get(k, 0) + n for k, n in expected.items())
        if rekeyed or time.time() > deadline:
            break  # recorded as is: the test says what is missing
        time.sleep(0.2)
    return {"node": node.name, "swanctl": listing, "commands": commands, "before": before,
            "after": after, "expected": expected, "rekeyed": rekeyed}


# --------------------------------------------------------------------- gentle shutdown
@dataclass(frozen=True)
class GentleShutdown:
    workload_seconds: float
    label: str = "shutdown"
    node: str | None = None  # default: the first lab node
    peer: str | None = None  # default: the second lab node
    timeout: float | None = None  # None: the policies' shutdownTimeoutSeconds
    restart: bool = True


def gentle_shutdown(lab: Lab, step: GentleShutdown) -> dict[str, Any]:
    nodes = lab.network.nodes
    node = lab.network.host(step.node) if step.node is not None else nodes[0]
    peer = lab.network.host(step.peer) if step.peer is not None else nodes[1]
    label, seconds = step.label, step.workload_seconds
    assert node.charon is not None, f"no charon on {node.name}"
    times: dict[str, float | None] = dict.fromkeys(
        ("workload_started", "drain_started", "workload_exited", "drain_returned",
         "charon_stop_sent", "charon_exited", "after_sent"))
    detail: dict[str, Any] = {
        "label": label, "node": node.name, "peer": peer.name,
        "src_address": node.address, "dst_address": peer.address,
        "workload_seconds": seconds, "timeout": step.timeout,
        "times": times, "owned_policies_before": owned_policies(node),
    }
    sockets = lab.sockets
    with _Receiver({h.name: sockets.receivers[h.name] for h in nodes}) as receiver:
        times["workload_started"] = time.time()
        workload = subprocess.Popen(
            ["ip", "netns", "exec", node.name, lab.config["python"], "-S", "-c", WORKLOAD,
             peer.address, str(PROBE_PORT), str(seconds), label, str(WORKLOAD_INTERVAL)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        output: dict[str, str] = {}

        def reap() -> None:  # reaped at once, so that drain sees the pid vanish
            output["stdout"], output["stderr"] = workload.communicate()
            times["workload_exited"] = time.time()

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        detail["workload_pid"] = workload.pid
        detail["recorded_timeout"] = recorded_timeout(node)
        times["drain_started"] = time.time()
        drain = run_drain(lab.config, node, workload.pid, step.timeout)
        times["drain_returned"] = time.time()
        detail["drain_rc"] = drain.returncode
        detail["drain_log"] = drain.stderr[-2000:]
        times["charon_stop_sent"] = time.time()
        node.charon.send_signal(signal.SIGTERM)
        node.charon.wait(timeout=30)
        times["charon_exited"] = time.time()
        detail["owned_policies_after_stop"] = owned_policies(node)
        detail["esp_states_after_stop"] = _run(
            "ip", "-n", node.name, "xfrm", "state").stdout.count("proto esp")
        times["after_sent"] = time.time()
        detail["after"] = send_after_stop(nodes, node, sockets.senders[node.name], label)
        reaper.join(seconds + 30)
        time.sleep(1.0)  # the last datagrams arrive (or do not)
    detail["sent"] = [
        [int(seq), float(at), int(ok)]
        for seq, at, ok in (line.split() for line in output.get("stdout", "").splitlines())
    ]
    detail["workload_stderr"] = output.get("stderr", "")[-1000:]
    detail["received"] = receiver.received
    if step.restart:
        lab.start_charon(node)
        detail["restarted"] = True
    return detail


def recorded_timeout(node: Host) -> str | None:
    """What the agent recorded for ``strongmesh drain`` (the policies' timeout)."""
    try:
        with open(os.path.join(node.state_dir, "shutdown-timeout-seconds")) as f:
            return f.read().strip()
    except OSError:
        return None


def run_drain(config: Mapping[str, Any], node: Host, pid: int,
              timeout: float | None) -> subprocess.CompletedProcess[str]:
    """``strongmesh drain`` in the node, as the charon container's preStop hook runs it."""
    argv = ["ip", "netns", "exec", node.name, str(config["python"]), "-B", "-m",
            "controller", "drain", "--wait-pid", str(pid), "--poll", "0.1"]
    argv += ["--timeout", str(timeout)] if timeout is not None else [
        "--state-dir", node.state_dir]
    return subprocess.run(argv, env=python_env(config), cwd="/tmp", capture_output=True,
                          text=True, check=False, timeout=float(timeout or 3600) + 120)


def send_after_stop(nodes: list[Host], node: Host, sender: socket.socket, label: str,
                    seconds: float = 1.5) -> list[dict[str, Any]]:
    """Datagrams from the node to every other node once charon is gone."""
    sent = []
    end = time.time() + seconds
    seq = 0
    while time.time() < end:
        for other in nodes:
            if other is node:
                continue
            token = f"SMAFTER:{label}:{other.name}:{seq}"
            ok = True
            try:
                sender.sendto(token.encode(), (other.address, PROBE_PORT))
            except OSError:
                ok = False
            sent.append({"token": token, "dst": other.name, "dst_address": other.address,
                         "at": time.time(), "ok": ok})
        seq += 1
        time.sleep(WORKLOAD_INTERVAL)
    return sent
