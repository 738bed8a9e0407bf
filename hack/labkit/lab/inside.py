"""The lab's PID 1 inside user-mode-linux: builds the network, starts the nodes, probes, records.

Run as ``python -S -B inside.py CONFIG.json`` by the init script that ``host`` writes. It imports
only the standard library (every import inside goes through hostfs and is slow) and never
imports the rest of ``controller``: the agents it starts do that, in their own processes.

The run is a sequence of steps so that other modes can reuse it: ``setup`` (filesystems,
modules, switch, hosts, capture, charons), ``start control plane`` (standalone: one agent per
node fed the policy file; a cluster mode would start an API server and the operator here),
``wait ready``, ``warm up`` + ``wait SAs``, ``probe``, the scenario's extra steps, ``collect``.
Everything it learns goes to ``results.json`` in the shared directory; the host builds the
report from that file and the switch capture.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

# Run as a script inside UML, only this directory is on sys.path: add the project (stdlib-only
# lab modules are imported from it; the heavy parts run in the processes the lab starts).
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
from hack.labkit.lab.cluster import POD_NET, ClusterMode, identity_dir, node_pod_cidr, secret_text
from hack.labkit.lab.steps_mtu import MtuSteps
from hack.labkit.lab.steps_ops import AGENT_METRICS_PORT, OpsSteps

SHARED = "/mnt/lab"  # the host's temp dir, writable through hostfs
TMPFS_DIRS = ("/run", "/tmp", "/mnt")  # private and writable inside the lab
HOST_ROOT = "/run/host-root"  # the host's root again, to bind back paths the tmpfs hide
STATE = "/mnt/state"  # per-node sockets and status files (tmpfs, visible to every namespace)
MODULE_ROOT = "/run/modroot"
PROBE_PORT = 7777
CHARON = "/usr/lib/ipsec/charon"
CLONE_NEWNET = 0x40000000
SWITCH = "sw0"
BYSTANDER = "bystander"
SWITCH_NET = "10.77.0"  # node-i is SWITCH_NET.i/24 on the switch
POD_LINK = "pods"  # the node's end of the veth to its pod host
STREAM_PORT = 7778  # continuous probes (start_stream .. stop_stream), beside PROBE_PORT's rounds
IMPOSTOR = "impostor"  # the impostor step's network namespace (and its charon's name)
IMPOSTOR_LINK = "imp"  # the target node's end of the veth to the impostor
IMPOSTOR_TABLE = 100  # the target node's routing table for replies to the impostor
SWANCTL_DIRS = ("x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private",
                "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12")

# ``swanctl --list-sas``: an IKE_SA's first line, its remote line, an installed CHILD_SA
LIST_SAS_IKE = re.compile(r"^(\S[^:]*): #(\d+), (\w+), IKEv(\d)")
LIST_SAS_ENDPOINT = re.compile(r"^\s+(local|remote)\s+'([^']*)' @ (\S+)\[(\d+)\]")
LIST_SAS_CHILD = re.compile(r"^\s+\S[^:]*: #\d+, reqid \d+, (\w+),")
# charon's log (ike_name = yes): "<conn|id>" once an IKE_SA has a config, "<id>" before
LOG_IKE_SA = re.compile(r" <(?:([^|>]*)\|)?(\d+)> ")
TRUSTED_CA = re.compile(r'using trusted ca certificate "([^"]*)"')
PEER_CERT = re.compile(r'using certificate "([^"]*)"')


def parse_list_sas(text: str) -> list[dict[str, Any]]:
    """The IKE_SAs of ``swanctl --list-sas`` output: name, unique id, state, both endpoints'
    identities and addresses, and how many of its CHILD_SAs are INSTALLED."""
    sas: list[dict[str, Any]] = []
    for line in text.splitlines():
        ike = LIST_SAS_IKE.match(line)
        if ike:
            sas.append({"name": ike.group(1), "id": ike.group(2), "state": ike.group(3),
                        "local_id": "", "local": "", "remote_id": "", "remote": "",
                        "remote_port": 0, "children_installed": 0})
            continue
        if not sas:
            continue
        end = LIST_SAS_ENDPOINT.match(line)
        if end:
            side = end.group(1)
            sas[-1][f"{side}_id"] = end.group(2)
            sas[-1][side] = end.group(3)
            if side == "remote":
                sas[-1]["remote_port"] = int(end.group(4))
            continue
        child = LIST_SAS_CHILD.match(line)
        if child and child.group(1) == "INSTALLED":
            sas[-1]["children_installed"] += 1
    return sas


def log_lines_of_ike_sas(lines: list[str], ids: set[str]) -> list[str]:
    """The charon log lines logged for one of the IKE_SAs (unique ids) ``ids``."""
    out = []
    for line in lines:
        match = LOG_IKE_SA.search(line)
        if match and match.group(2) in ids:
            out.append(line)
    return out


def peer_authentication(lines: list[str], ike_id: str) -> dict[str, Any]:
    """What a node's charon log says about how it verified the peer of IKE_SA ``ike_id``: the
    peer's end-entity certificate (``using certificate``) and the CA that verified it (``using
    trusted ca certificate``), the last of each, and every such line."""
    own = log_lines_of_ike_sas(lines, {ike_id})
    cas = [m.group(1) for line in own if (m := TRUSTED_CA.search(line))]
    certs = [m.group(1) for line in own if (m := PEER_CERT.search(line))]
    return {"ca": cas[-1] if cas else None, "cert": certs[-1] if certs else None,
            "lines": [line for line in own if TRUSTED_CA.search(line) or PEER_CERT.search(line)
                      or "authentication of" in line]}


def impostor_swanctl_conf(claim: str, target: str, ike_proposals: str,
                          esp_proposals: str) -> str:
    """The impostor's connection: from the claimed address to the target's IKE port, its own
    (valid) certificate, any peer the CA vouches for, a transport child between the two."""
    return f"""\
connections {{
  {IMPOSTOR} {{
    version = 2
    local_addrs = {claim}
    remote_addrs = {target}
    remote_port = 500
    proposals = {ike_proposals}
    mobike = no
    local {{
      auth = pubkey
      certs = node.crt
    }}
    remote {{
      auth = pubkey
      id = %any
      cacerts = ca.crt
    }}
    children {{
      {IMPOSTOR} {{
        mode = transport
        local_ts = {claim}/32
        remote_ts = {target}/32
        esp_proposals = {esp_proposals}
      }}
    }}
  }}
}}
"""


class Stream:
    """Background probes: every ``interval`` s one fresh datagram per ordered pair, with a
    token of its own (label, sequence number, pair), sent once and never again; what arrives
    at the pair's destination is recorded with its arrival time. ``current`` names the scenario
    step running at each send."""

    def __init__(self, label: str, pairs: list[tuple[Host, Host]], interval: float,
                 current: Callable[[], dict[str, Any] | None]) -> None:
        self.label = label
        self.pairs = pairs
        self.interval = interval
        self.current = current
        self.nonce = os.urandom(4).hex()
        self.datagrams: dict[str, dict[str, Any]] = {}
        self.receivers: dict[str, socket.socket] = {}
        self.senders: dict[str, socket.socket] = {}
        self.late = 0  # sends that fell behind the schedule by more than one interval
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{label}", daemon=True)
        for host in {h.name: h for pair in pairs for h in pair}.values():
            with in_netns(host.name):
                rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                rx.bind(("0.0.0.0", STREAM_PORT))
                rx.setblocking(False)
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                tx.setblocking(False)
            self.receivers[host.name] = rx
            self.senders[host.name] = tx

    def start(self) -> None:
        self.started = time.time()
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Stop sending, then wait up to ``grace`` s for datagrams still on their way."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.stopped = time.time()
        deadline = self.stopped + grace
        while time.time() < deadline and not all(d["delivered"] for d in self.datagrams.values()):
            self._receive(0.05)
        for sock in (*self.receivers.values(), *self.senders.values()):
            sock.close()

    def _run(self) -> None:
        seq = 0
        next_send = time.time()
        while not self._stop.is_set():
            now = time.time()
            if now >= next_send:
                self._send(seq, now)
                seq += 1
                next_send += self.interval
                if next_send < now:  # fell behind (a busy lab): never burst to catch up
                    self.late += 1
                    next_send = now + self.interval
            self._receive(max(0.0, min(0.05, next_send - time.time())))

    def _send(self, seq: int, now: float) -> None:
        step = self.current()
        for src, dst in self.pairs:
            token = f"SMSTREAM:{self.label}:{seq}:{src.name}:{dst.name}:{self.nonce}"
            record: dict[str, Any] = {
                "seq": seq, "src": src.name, "dst": dst.name, "src_address": src.address,
                "dst_address": dst.address, "token": token, "sent": now,
                "step": None if step is None else dict(step),
                "send_error": None, "delivered": False, "delivered_at": None,
            }
            self.datagrams[token] = record
            try:
                self.senders[src.name].sendto(token.encode(), (dst.address, STREAM_PORT))
            except OSError as exc:  # e.g. EAGAIN: Required mode and no SA
                record["send_error"] = f"{type(exc).__name__}: {exc}"

    def _receive(self, wait: float) -> None:
        fds = {s.fileno(): name for name, s in self.receivers.items()}
        ready, _, _ = select.select(list(fds), [], [], wait)
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, _ = self.receivers[fds[fd]].recvfrom(2048)
                    got = self.datagrams.get(data.decode(errors="replace"))
                    if got is not None and got["dst"] == fds[fd] and not got["delivered"]:
                        got["delivered"] = True
                        got["delivered_at"] = time.time()

    def result(self) -> dict[str, Any]:
        datagrams = list(self.datagrams.values())
        return {
            "label": self.label, "interval": self.interval, "started": self.started,
            "stopped": self.stopped, "late": self.late,
            "sent": len(datagrams),
            "delivered": sum(d["delivered"] for d in datagrams),
            "send_errors": sum(d["send_error"] is not None for d in datagrams),
            "datagrams": datagrams,
        }

_libc = ctypes.CDLL(None, use_errno=True)


def log(message: str) -> None:
    """Progress on the console (the host keeps it as console.log)."""
    print(f"[lab {time.monotonic():8.2f}] {message}", flush=True)


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def ip_batch(namespace: str, lines: list[str]) -> None:
    """Several ``ip`` commands in one namespace with one process (each exec costs ~45 ms)."""
    result = subprocess.run(["ip", "-n", namespace, "-batch", "-"], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip -n {namespace} -batch: {result.stderr.strip()}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Switch this thread into a named network namespace (sockets created there stay there)."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


class Host:
    """A lab host: a network namespace with one veth on the switch, or (a pod host) one veth
    to the node that carries it (``carrier``), through which it reaches everything else."""

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


def pod_network_commands(index: int, count: int) -> dict[str, list[str]]:
    """The ``ip -batch`` lines that give lab node ``index`` (1-based, of ``count``) its pod
    host: per network namespace (node, pod, and the bystander's routes to this node's pods).
    Plain routing, no overlay and no NAT: the pod's default route points at its node, and
    every other host routes the pod CIDR via this node's address on the switch. Addresses:
    the pod ``POD_NET.i.10/24``, the node's end ``POD_NET.i.1/24`` (the pod's gateway)."""
    node, pod = f"node-{index}", f"node-{index}-pod"
    gateway = f"{POD_NET}.{index}.1"
    return {
        node: [
            f"link add {POD_LINK} type veth peer name eth0 netns {pod}",
            f"addr add {gateway}/24 dev {POD_LINK}",
            f"link set {POD_LINK} up",
            *(f"route add {node_pod_cidr(j)} via {SWITCH_NET}.{j} dev eth0"
              for j in range(1, count + 1) if j != index),
        ],
        pod: [
            "link set lo up",
            f"addr add {POD_NET}.{index}.10/24 dev eth0",
            "link set eth0 up",
            f"route add default via {gateway} dev eth0",
        ],
        BYSTANDER: [f"route add {node_pod_cidr(index)} via {SWITCH_NET}.{index} dev eth0"],
    }


class Lab(ClusterMode, OpsSteps, MtuSteps):
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.t0 = time.time()
        self.nodes: list[Host] = [
            Host(f"node-{i}", f"{SWITCH_NET}.{i}", True)
            for i in range(1, int(config["nodes"]) + 1)
        ]
        self.pods: list[Host] = [
            Host(f"{node.name}-pod", f"{POD_NET}.{i}.10", False, carrier=node,
                 pod_cidr=node_pod_cidr(i))
            for i, node in enumerate(self.nodes, start=1)
        ] if config.get("pods") else []
        self.bystander = Host(BYSTANDER, f"{SWITCH_NET}.200", False)
        self.on_switch = [*self.nodes, self.bystander]
        self.hosts = [*self.nodes, *self.pods, self.bystander]
        self.results: dict[str, Any] = {
            "mode": config.get("mode", "standalone"),
            "started": self.t0,
            "timeline": {},
            "ready": False,
            "seconds_to_ready": None,
            "rounds": [],
            "steps": [],
            "states": {},
            "statuses": {},
            "errors": [],
            "hosts": [h.describe() for h in self.hosts],
        }
        self.capture: subprocess.Popen[bytes] | None = None
        self.receivers: dict[str, socket.socket] = {}
        self.senders: dict[str, socket.socket] = {}
        self.policy_file = f"{STATE}/policy.yaml"
        self.streams: dict[str, Stream] = {}
        self.current_step: dict[str, Any] | None = None  # the step running (streams note it)

    # ---------------------------------------------------------------- setup
    def mark(self, event: str) -> None:
        self.results["timeline"][event] = round(time.time() - self.t0, 3)
        log(event)

    def mount_filesystems(self) -> None:
        os.system("mount -t proc proc /proc")
        sh("mount", "-t", "sysfs", "sys", "/sys")
        for path in TMPFS_DIRS:
            sh("mount", "-t", "tmpfs", "tmpfs", path)
        self.keep_host_paths_visible()
        os.makedirs(SHARED)
        sh("mount", "-t", "hostfs", "none", SHARED, "-o", self.config["hostdir"])
        os.makedirs(STATE)
        os.makedirs(f"{SHARED}/logs", exist_ok=True)

    def keep_host_paths_visible(self) -> None:
        """The tmpfs mounts hide whatever the host has below /run, /tmp and /mnt, and the
        project or its virtualenv may live there (a CI clone can be anywhere): bind those
        paths back from a second, read-only view of the host's root."""
        hidden = sorted(
            path
            for path in set(self.config.get("host_paths", []))
            if any(path == d or path.startswith(d + "/") for d in TMPFS_DIRS)
        )
        if not hidden:
            return
        os.makedirs(HOST_ROOT)
        sh("mount", "-r", "-t", "hostfs", "none", HOST_ROOT, "-o", "/")
        bound: list[str] = []
        for path in hidden:
            if any(path == b or path.startswith(b + "/") for b in bound):
                continue
            os.makedirs(path, exist_ok=True)
            sh("mount", "--bind", HOST_ROOT + path, path)
            bound.append(path)

    def load_modules(self) -> None:
        version = os.uname().release
        moddir = f"{MODULE_ROOT}/lib/modules/{version}"
        os.makedirs(moddir)
        sh("mount", "--bind", f"/usr/lib/uml/modules/{version}", moddir)
        wrapper = "/run/modprobe"
        with open(wrapper, "w") as f:
            f.write(f'#!/bin/sh\nexec /sbin/modprobe -d {MODULE_ROOT} "$@"\n')
        os.chmod(wrapper, 0o755)
        with open("/proc/sys/kernel/modprobe", "w") as f:
            f.write(wrapper)
        for module in ("veth", "bridge", "xfrm_user", "esp4", "esp6", "authenc", "gcm"):
            sh(wrapper, module)
        self.warm_crypto()

    def warm_crypto(self) -> None:
        """Build the kernel's ESP transforms once, before any node negotiates.

        A lab artifact, not a product behaviour: the first SA of an algorithm makes this kernel
        set up its crypto (rfc4106/gcm/ctr/ghash, seqiv, the DRBG, ...), about 20 on-demand
        module requests, each a modprobe read through hostfs (~130 ms): ~3 s during which the
        installing charon blocks in the kernel holding the namespace's xfrm mutex. Measured as
        3.2 s first packet -> SA at 2 nodes with either end's trap, 0.12-0.23 s after warming.
        On a real node the same setup costs milliseconds, once per boot. So one throw-away SA
        per algorithm the lab's policies use is added and removed here, in the root namespace.
        """
        key = "0x" + "11" * 20
        for algorithm in (
            ("aead", "rfc4106(gcm(aes))", key, "128"),
            ("enc", "cbc(aes)", "0x" + "22" * 16, "auth-trunc", "hmac(sha256)",
             "0x" + "33" * 32, "128"),
        ):
            sh("ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto",
               "esp", "spi", "0x100", "mode", "transport", *algorithm)
            sh("ip", "xfrm", "state", "flush")

    def build_network(self) -> None:
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", SWITCH, "type", "bridge")
        sh("ip", "link", "set", SWITCH, "up")
        for host in self.on_switch:
            sh("ip", "netns", "add", host.name)
            sh("ip", "link", "add", f"v-{host.name}", "type", "veth", "peer", "name", "eth0",
               "netns", host.name)
            sh("ip", "link", "set", f"v-{host.name}", "master", SWITCH, "up")
            sh("ip", "-n", host.name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            sh("ip", "-n", host.name, "link", "set", "eth0", "up")
            sh("ip", "-n", host.name, "link", "set", "lo", "up")
            os.makedirs(host.state_dir)
        if self.pods:
            self.build_pods()
        for host in self.hosts:
            with in_netns(host.name):
                rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                rx.bind(("0.0.0.0", PROBE_PORT))
                rx.setblocking(False)
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                tx.setblocking(False)
            self.receivers[host.name] = rx
            self.senders[host.name] = tx

    def build_pods(self) -> None:
        """Each node's pod host (``pod_network_commands``), IP forwarding on in the nodes,
        reverse-path filtering checked everywhere; what was set goes to ``results["pods"]``."""
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
            sysctls[host.name] = self.pod_sysctls(host.name, links, forward=host.node)
        self.results["pods"] = {
            "commands": batches,
            "routes": {h.name: sh("ip", "-n", h.name, "-4", "route").splitlines()
                       for h in self.hosts},
            "sysctls": sysctls,
        }

    def pod_sysctls(self, namespace: str, links: tuple[str, ...],
                    forward: bool) -> dict[str, Any]:
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

    def start_capture(self) -> None:
        self.capture = subprocess.Popen(
            ["tcpdump", "-i", SWITCH, "-w", f"{SHARED}/capture.pcap", "-U", "-Z", "root",
             "-s", "262", "-n", "ip or ip6"],
            stdout=subprocess.DEVNULL,
            stderr=open(f"{SHARED}/logs/tcpdump.log", "wb"),  # noqa: SIM115 - lives on
        )
        deadline = time.time() + 10
        while time.time() < deadline:  # tcpdump prints "listening on" once capturing
            with open(f"{SHARED}/logs/tcpdump.log", "rb") as f:
                if b"listening" in f.read():
                    return
            time.sleep(0.05)
        raise RuntimeError("tcpdump did not start")

    def stop_capture(self) -> None:
        """Stop tcpdump once it wrote everything: a marker datagram must be in the file."""
        if self.capture is None:
            return
        marker = f"SMLAB-END-{os.urandom(4).hex()}".encode()
        deadline = time.time() + 5
        with contextlib.suppress(OSError):
            self.senders[BYSTANDER].sendto(marker, (self.nodes[0].address, PROBE_PORT))
            while time.time() < deadline:
                with open(f"{SHARED}/capture.pcap", "rb") as f:
                    if marker in f.read():
                        break
                time.sleep(0.05)
        self.capture.send_signal(signal.SIGINT)
        self.capture.wait(timeout=10)
        self.capture = None

    def charon_conf(self, host: Host) -> str:
        """The project's rendered strongswan.conf, or the static mode's hand-written one."""
        path = f"{host.state_dir}/strongswan.conf"
        rendered = (self.config.get("strongswan_confs") or {}).get(host.name)
        if rendered is None:
            level = int(self.config.get("charon_log_level", 1))
            logfile = f"{SHARED}/logs/{host.name}-charon.log"
            rendered = (
                STATIC_STRONGSWAN_CONF.replace("@VICI@", host.vici)
                + "charon {\n  filelog {\n"
                f"    lab {{\n      path = {logfile}\n      time_format = %H:%M:%S\n"
                f"      default = {level}\n      ike_name = yes\n      flush_line = yes\n"
                "    }\n  }\n}\n"
            )
        with open(path, "w") as f:
            f.write(rendered)
        return path

    def start_charon(self, host: Host) -> None:
        conf = self.charon_conf(host)
        socket_path = host.vici.removeprefix("unix://")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        # Own mount namespace (ip netns exec makes one) with a private /run for charon.pid.
        host.charon = subprocess.Popen(
            ["ip", "netns", "exec", host.name, "sh", "-c",
             f"mount -t tmpfs tmpfs /run && exec {CHARON}"],
            env={"PATH": os.environ["PATH"], "STRONGSWAN_CONF": conf},
            stdout=subprocess.DEVNULL,
            stderr=open(f"{SHARED}/logs/{host.name}-charon.stderr", "ab"),  # noqa: SIM115
        )
        deadline = time.time() + 20
        while not os.path.exists(socket_path):
            if host.charon.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"charon on {host.name} did not start")
            time.sleep(0.05)

    def start_charons(self) -> None:
        for host in self.nodes:
            self.start_charon(host)

    # -------------------------------------------------------- control plane
    def start_control_plane(self) -> None:
        mode = self.config.get("mode", "standalone")
        if mode == "static":
            for host in self.nodes:
                self.static_configure(host)
        elif mode == "standalone":
            shutil.copyfile(self.config["policy"], self.policy_file)
            for host in self.nodes:
                self.start_agent(host)
        elif mode == "cluster":
            self.start_cluster()
        else:
            raise RuntimeError(f"unknown lab mode {mode!r}")

    def start_agent(self, host: Host) -> None:
        python = self.config["python"]
        argv = [
            "ip", "netns", "exec", host.name,
            python, "-B", "-m", "controller.cli.agent",
            "--node", host.name,
            *self.agent_input_args(host),
            "--vici", host.vici,
            "--metrics-port", str(AGENT_METRICS_PORT),
            "--resync-seconds", str(self.config.get("resync_seconds", 5)),
            "--log-level", str(self.config.get("agent_log_level", "info")),
        ]
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": self.config["project"],
            "HOME": "/tmp",
        }
        host.agent = subprocess.Popen(
            argv, env=env, cwd="/tmp", stdin=subprocess.DEVNULL,
            stdout=open(f"{SHARED}/logs/{host.name}-agent.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    def static_configure(self, host: Host) -> None:
        """Hand-written PSK configuration (no agent): checks the lab itself."""
        path = f"{host.state_dir}/swanctl.conf"
        with open(path, "w") as f:
            f.write(STATIC_SWANCTL.replace("@ADDR@", host.address))
        sh("swanctl", "--load-all", "--noprompt", "--uri", host.vici, "--file", path)
        reqid = "0x534d0001"
        level = self.config.get("static_level", "required")
        ns = ("ip", "-n", host.name, "xfrm", "policy", "add")
        me = f"{host.address}/32"
        for d, src, dst in (("out", me, "10.77.0.0/24"), ("in", "10.77.0.0/24", me)):
            sh(*ns, "dir", d, "src", src, "dst", dst, "priority", "8008", "tmpl", "proto", "esp",
               "mode", "transport", "reqid", reqid, "level", level)
        bypass = [(me, me)]
        for subnet in self.config.get("static_bypass", []):
            bypass += [(me, subnet), (subnet, me)]
        for src, dst in bypass:
            for d in ("out", "in") if src == dst else (("out",) if src == me else ("in",)):
                sh(*ns, "dir", d, "src", src, "dst", dst, "priority", "7000", "action", "allow")
        sh("ip", "netns", "exec", host.name, "sysctl", "-q", "-w", "net.core.xfrm_acq_expires=3")

    # ----------------------------------------------------------- readiness
    def read_status(self, host: Host) -> dict[str, Any] | None:
        if self.cluster:
            return self.cluster_status(host.name)
        try:
            with open(host.status_file) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError):
            return None

    def node_ready(self, host: Host, expected: dict[str, int]) -> bool:
        data = self.read_status(host)
        if data is None:
            return False
        status = data.get("status") or {}
        if status.get("errors"):
            return False
        enforced = {
            p.get("name"): p for p in status.get("policies", []) if p.get("enforcing", True)
        }
        # ready as the operator judges it: the generation enforced and an SA with every peer
        return all(
            name in enforced and enforced[name].get("generation") == generation
            and enforced[name].get("establishedPeers", 0) == enforced[name].get("expectedPeers", 0)
            for name, generation in expected.items()
        )

    def wait_ready(self, expected: dict[str, int], timeout: float) -> float | None:
        start = time.time()
        if self.config.get("mode") == "static":
            return 0.0
        while time.time() - start < timeout:
            if self.cluster:
                self.check_control_plane()
                if self.policies_ready(sorted(expected)):
                    return time.time() - start
            elif all(self.node_ready(h, expected) for h in self.nodes):
                return time.time() - start
            for h in self.nodes:
                if h.agent is not None and h.agent.poll() is not None:
                    raise RuntimeError(f"agent on {h.name} exited with {h.agent.returncode}")
            time.sleep(0.1)
        return None

    # -------------------------------------------------------------- probing
    def probe(self, label: str, timeout: float, interval: float = 0.25) -> dict[str, Any]:
        """Send a token for every ordered pair until it arrives or the timeout passes."""
        nonce = os.urandom(4).hex()
        probes: dict[str, dict[str, Any]] = {}
        for src in self.hosts:
            for dst in self.hosts:
                if src is dst:
                    continue
                token = f"SMPROBE:{label}:{src.name}:{dst.name}:{nonce}"
                probes[token] = {
                    "src": src.name, "dst": dst.name,
                    "src_address": src.address, "dst_address": dst.address,
                    "token": token, "first_sent": None, "last_sent": None, "attempts": 0,
                    "send_errors": 0, "delivered": False, "delivered_at": None,
                }
        start = time.time()
        next_send = start
        fds = {s.fileno(): name for name, s in self.receivers.items()}
        while time.time() - start < timeout:
            now = time.time()
            if now >= next_send:
                for token, p in probes.items():
                    if p["delivered"]:
                        continue
                    p["attempts"] += 1
                    p["first_sent"] = p["first_sent"] or now
                    p["last_sent"] = now
                    try:
                        self.senders[p["src"]].sendto(
                            token.encode(), (p["dst_address"], PROBE_PORT)
                        )
                    except OSError:
                        p["send_errors"] += 1
                next_send = now + interval
            if all(p["delivered"] for p in probes.values()):
                break
            ready, _, _ = select.select(list(fds), [], [], max(0.0, next_send - time.time()))
            for fd in ready:
                sock = self.receivers[fds[fd]]
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data, _ = sock.recvfrom(2048)
                        got = probes.get(data.decode(errors="replace"))
                        if got is not None and got["dst"] == fds[fd] and not got["delivered"]:
                            got["delivered"] = True
                            got["delivered_at"] = time.time()
        result = {
            "label": label,
            "started": start,
            "seconds": round(time.time() - start, 3),
            "probes": list(probes.values()),
        }
        self.results["rounds"].append(result)
        delivered = sum(p["delivered"] for p in probes.values())
        log(f"probe {label}: {delivered}/{len(probes)} delivered in {result['seconds']} s")
        return result

    def xfrm_states(self, host: Host) -> list[dict[str, Any]]:
        """ESP states of a node as (src, dst, spi, reqid)."""
        text = sh("ip", "-n", host.name, "xfrm", "state")
        states = []
        for m in re.finditer(
            r"src (\S+) dst (\S+)\s+proto esp spi (0x[0-9a-f]+) reqid (\d+)", text
        ):
            states.append(
                {"src": m.group(1), "dst": m.group(2), "spi": m.group(3), "reqid": int(m.group(4))}
            )
        return states

    def wait_sas(self, timeout: float) -> bool:
        """Wait until every node holds ESP states in both directions with every other node."""
        start = time.time()
        while time.time() - start < timeout:
            complete = True
            for host in self.nodes:
                pairs = {(s["src"], s["dst"]) for s in self.xfrm_states(host)}
                for peer in self.nodes:
                    if peer is host:
                        continue
                    if (host.address, peer.address) not in pairs or (
                        peer.address, host.address) not in pairs:
                        complete = False
            if complete:
                return True
            time.sleep(0.3)
        return False

    # ---------------------------------------------------------------- steps
    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def run_step(self, step: dict[str, Any]) -> None:
        action = step["do"]
        started = time.time()
        record: dict[str, Any] = {"do": action, "args": step, "ok": True, "detail": None}
        self.current_step = {"index": len(self.results["steps"]), "do": action}
        try:
            handler: Callable[[dict[str, Any]], Any] = getattr(self, "step_" + action)
            record["detail"] = handler(step)
        except Exception as exc:  # a failed step is a finding, the run goes on
            record["ok"] = False
            record["detail"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.current_step = None
        record["at"] = round(started - self.t0, 3)
        record["seconds"] = round(time.time() - started, 3)
        self.results["steps"].append(record)
        log(f"step {action}: ok={record['ok']} {record['seconds']} s")

    def step_sleep(self, step: dict[str, Any]) -> None:
        time.sleep(float(step["seconds"]))

    def step_probe(self, step: dict[str, Any]) -> str:
        result = self.probe(step["label"], float(step.get("timeout", 20)))
        return str(result["label"])

    def step_flush_xfrm(self, step: dict[str, Any]) -> None:
        what = step.get("what", "policy")
        for name in self.targets(step):
            kinds = ("policy", "state") if what == "all" else (what,)
            for kind in kinds:
                sh("ip", "-n", name, "xfrm", kind, "flush")

    def step_restart_charon(self, step: dict[str, Any]) -> None:
        sig = getattr(signal, "SIG" + step.get("signal", "TERM"))
        for name in self.targets(step):
            host = self.host(name)
            assert host.charon is not None
            host.charon.send_signal(sig)
            host.charon.wait(timeout=30)
            time.sleep(float(step.get("down_seconds", 0)))
            self.start_charon(host)

    def step_kill_agent(self, step: dict[str, Any]) -> None:
        sig = getattr(signal, "SIG" + step.get("signal", "KILL"))
        for name in self.targets(step):
            host = self.host(name)
            assert host.agent is not None
            host.agent.send_signal(sig)
            host.agent.wait(timeout=30)

    def step_start_agent(self, step: dict[str, Any]) -> None:
        for name in self.targets(step):
            self.start_agent(self.host(name))

    def step_write_policy(self, step: dict[str, Any]) -> None:
        tmp = self.policy_file + ".new"
        shutil.copyfile(f"{SHARED}/{step['file']}", tmp)
        os.rename(tmp, self.policy_file)

    def step_wait_ready(self, step: dict[str, Any]) -> float:
        """Wait until every node reports the expected generations, in a status written now."""
        if self.cluster:
            raise RuntimeError("wait_ready reads status files: use wait_policy in cluster mode")
        expected = {k: int(v) for k, v in step["expected"].items()}
        started = time.time()
        deadline = started + float(step.get("timeout", 60))
        while time.time() < deadline:
            fresh = all(self.status_mtime(h) > started for h in self.nodes)
            if fresh and all(self.node_ready(h, expected) for h in self.nodes):
                return round(time.time() - started, 3)
            time.sleep(0.1)
        raise RuntimeError(f"nodes not ready for {expected} within {step.get('timeout', 60)} s")

    def status_mtime(self, host: Host) -> float:
        try:
            return os.stat(host.status_file).st_mtime
        except OSError:
            return 0.0

    def owned_policies(self, host: Host) -> int:
        """How many xfrm policies in strongmesh's priority bands (7000-8999) the node holds."""
        text = sh("ip", "-n", host.name, "xfrm", "policy")
        return sum(7000 <= int(p) <= 8999 for p in re.findall(r"priority (\d+)", text))

    def step_wait_policies(self, step: dict[str, Any]) -> float:
        """Wait until every node holds as many owned xfrm policies as after the first probe."""
        started = time.time()
        want = self.results["owned_policies"]
        deadline = started + float(step.get("timeout", 30))
        while time.time() < deadline:
            if all(self.owned_policies(h) >= want[h.name] for h in self.nodes):
                return round(time.time() - started, 3)
            time.sleep(0.1)
        raise RuntimeError("owned xfrm policies not restored")

    def step_wait_sas(self, step: dict[str, Any]) -> bool:
        return self.wait_sas(float(step.get("timeout", 20)))

    def step_wait_one_sa_per_peer(self, step: dict[str, Any]) -> float:
        """``{"do": "wait_one_sa_per_peer", "nodes"?: [names], "timeout"?: s}``: until each of
        those nodes holds exactly one ESP state in and one out with every other of them, and
        none with a node outside the set (a peer that left). Returns the seconds it took."""
        members = [self.host(n) for n in step.get("nodes") or [h.name for h in self.nodes]]
        inside = {h.address for h in members}
        started = time.time()
        deadline = started + float(step.get("timeout", 30))
        last: dict[str, Any] = {}
        while time.time() < deadline:
            last = {}
            for host in members:
                pairs = [(s["src"], s["dst"]) for s in self.xfrm_states(host)]
                for peer in members:
                    if peer is not host:
                        got = (pairs.count((peer.address, host.address)),
                               pairs.count((host.address, peer.address)))
                        if got != (1, 1):
                            last[f"{host.name}<->{peer.name}"] = got
                strays = [p for p in pairs if not {p[0], p[1]} <= inside]
                if strays:
                    last[f"{host.name} strays"] = strays
            if not last:
                return round(time.time() - started, 3)
            time.sleep(0.2)
        raise RuntimeError(f"not exactly one SA per peer within {step.get('timeout', 30)} s: "
                           f"{last}")

    def step_wait_status(self, step: dict[str, Any]) -> dict[str, Any] | None:
        """Wait until the nodes' status files have an error containing a text."""
        deadline = time.time() + float(step.get("timeout", 30))
        needle = step.get("error_contains", "")
        waiting = [self.host(name) for name in self.targets(step)]
        found: dict[str, Any] = {}
        while waiting and time.time() < deadline:
            for host in list(waiting):
                data = self.read_status(host) or {}
                errors = (data.get("status") or {}).get("errors", [])
                if any(needle in t for t in errors):
                    found[host.name] = errors
                    waiting.remove(host)
            time.sleep(0.2)
        if waiting:
            raise RuntimeError(f"no status error containing {needle!r} on "
                               f"{', '.join(h.name for h in waiting)}")
        return found

    def step_snapshot(self, step: dict[str, Any]) -> None:
        label = step["label"]
        self.results["states"][label] = {h.name: self.xfrm_states(h) for h in self.nodes}
        self.results.setdefault("snapshots", {})[label] = self.collect_statuses(refresh=True)

    def step_measure_agents(self, step: dict[str, Any]) -> dict[str, Any]:
        """Each agent's RSS and CPU share over a window at rest (no input changes)."""
        seconds = float(step.get("seconds", 10))
        tick = os.sysconf("SC_CLK_TCK")

        def cpu(pid: int) -> int:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        def rss_kib(pid: int) -> int:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
            return 0

        agents = {h.name: h.agent.pid for h in self.nodes if h.agent is not None}
        before = {name: cpu(pid) for name, pid in agents.items()}
        time.sleep(seconds)
        return {
            name: {
                "rss_mib": round(rss_kib(pid) / 1024, 1),
                "cpu_percent": round(100 * (cpu(pid) - before[name]) / tick / seconds, 2),
            }
            for name, pid in agents.items()
        }

    def step_measure_pass(self, step: dict[str, Any]) -> list[float]:
        """SIGHUP -> status file rewritten: one whole pass with nothing to change, timed."""
        host = self.host(step.get("node", self.nodes[0].name))
        assert host.agent is not None
        durations = []
        for _ in range(int(step.get("repeat", 5))):
            before = self.status_mtime(host)
            time.sleep(0.3)
            started = time.time()
            host.agent.send_signal(signal.SIGHUP)
            while self.status_mtime(host) == before and time.time() - started < 10:
                time.sleep(0.002)
            durations.append(round(time.time() - started, 4))
        return durations

    # ------------------------------------------------- identities and trust
    def step_start_stream(self, step: dict[str, Any]) -> dict[str, Any]:
        """``{"do": "start_stream", "label": L, "interval"?: 0.25, "nodes"?: [...]}``: probes in
        the background until ``stop_stream``: every ``interval`` s a fresh datagram with a token
        of its own for every ordered pair of those nodes (default: every lab node), sent once,
        never again, to port ``STREAM_PORT``. Each records the step running when it was sent."""
        label = step["label"]
        if label in self.streams:
            raise RuntimeError(f"stream {label!r} exists already")
        members = [self.host(n) for n in step.get("nodes") or [h.name for h in self.nodes]]
        pairs = [(a, b) for a in members for b in members if a is not b]
        stream = Stream(label, pairs, float(step.get("interval", 0.25)),
                        lambda: self.current_step)
        self.streams[label] = stream
        stream.start()
        return {"pairs": len(pairs), "interval": stream.interval, "port": STREAM_PORT}

    def step_stop_stream(self, step: dict[str, Any]) -> dict[str, Any]:
        """``{"do": "stop_stream", "label": L, "grace"?: 2}``: stop sending, wait ``grace`` s
        for datagrams in flight; ``results["streams"][L]`` keeps every datagram (the report
        adds what the switch saw of each)."""
        return self.finish_stream(step["label"], float(step.get("grace", 2.0)))

    def finish_stream(self, label: str, grace: float) -> dict[str, Any]:
        stream = self.streams[label]
        stream.stop(grace)
        result = stream.result()
        self.results.setdefault("streams", {})[label] = result
        summary = {k: v for k, v in result.items() if k != "datagrams"}
        summary["lost"] = [
            {k: d[k] for k in ("seq", "src", "dst", "sent", "step", "send_error")}
            for d in result["datagrams"] if not d["delivered"]
        ]
        log(f"stream {label}: {result['delivered']}/{result['sent']} delivered")
        return summary

    def authorities(self, host: Host) -> list[str]:
        """The CA subjects of the authorities loaded into a node's charon."""
        text = sh("swanctl", "--list-authorities", "--uri", host.vici)
        return re.findall(r"^\s+cacert:\s+(.*\S)\s*$", text, re.M)

    def step_wait_authorities(self, step: dict[str, Any]) -> dict[str, Any]:
        """``{"do": "wait_authorities", "cacerts": [TEXT, ...], "node"?, "timeout"?: s}``: until
        each node's charon holds exactly the trusted CAs named (``swanctl --list-authorities``:
        one authority whose subject contains each TEXT, and no other), e.g. after a CA left an
        issuer's ``ca.crt``. Returns the seconds and each node's authorities."""
        wanted = list(step["cacerts"])
        hosts = [self.host(name) for name in self.targets(step)]
        started = time.time()
        deadline = started + float(step.get("timeout", 60))
        found: dict[str, list[str]] = {}
        while time.time() < deadline:
            found = {h.name: self.authorities(h) for h in hosts}
            if all(len(subjects) == len(wanted)
                   and all(sum(text in s for s in subjects) == 1 for text in wanted)
                   for subjects in found.values()):
                return {"seconds": round(time.time() - started, 3), "authorities": found}
            time.sleep(0.2)
        raise RuntimeError(f"charons do not trust exactly {wanted} within "
                           f"{step.get('timeout', 60)} s: {found}")

    def charon_log(self, host: Host) -> list[str]:
        with open(f"{SHARED}/logs/{host.name}-charon.log", errors="replace") as f:
            return f.read().splitlines()

    def step_peer_cas(self, step: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """``{"do": "peer_cas", "node"?}``: per node, each IKE_SA charon holds (``swanctl
        --list-sas``: name, unique id, peer identity and address) with the CA that verified the
        peer's certificate when it was authenticated, as that node's charon log says (the last
        ``using trusted ca certificate`` line of that IKE_SA's id; None if the log has none)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name in self.targets(step):
            host = self.host(name)
            lines = self.charon_log(host)
            rows = []
            for sa in parse_list_sas(sh("swanctl", "--list-sas", "--uri", host.vici)):
                rows.append({**sa, **peer_authentication(lines, sa["id"])})
            out[name] = rows
        return out

    def step_impostor(self, step: dict[str, Any]) -> dict[str, Any]:
        """``{"do": "impostor", "identity": "node-3", "address": "10.77.0.2", "target":
        "node-1", "port"?: 5000, "issuer"?: "strongmesh-system/mesh-ca", "timeout"?: 15,
        "keep"?: false}``: a host that holds ``identity``'s own valid certificate and key (read
        from that node's identity directory) claims another node's ``address`` towards
        ``target``. Nothing of it reaches the switch: it is a network namespace ``impostor``
        with ``address``/32 on a veth whose other end (``imp``) is in the target node, which
        sends only the replies to the impostor's IKE ports (``port``, ``port``+1) there (``ip
        rule to ADDRESS ipproto udp dport P-P+1 lookup 100``); the genuine holder of the
        address keeps its traffic and its ARP entries. The impostor runs a charon of its own
        (the lab's way, strongswan.conf rendered by the host with ``charon.port = P``,
        ``port_nat_t = P+1``), loads with swanctl a connection from ``address`` to the target
        (the identity's certificate, the issuer's ``ca.crt`` as CA, a transport child
        ``address``/32 <-> target/32) and initiates it. Recorded: the routing decisions,
        swanctl's output and exit code, the target's charon log lines for the impostor's
        IKE_SAs and every line it wrote meanwhile, both sides' IKE_SAs before and after, the
        veth's packet counters. Then everything of the impostor is removed (unless ``keep``)."""
        identity = self.host(step.get("identity", "node-3"))
        target = self.host(step.get("target", "node-1"))
        claim = str(step.get("address", "10.77.0.2"))
        port = int(step.get("port", 5000))
        issuer = str(step.get("issuer", "strongmesh-system/mesh-ca"))
        timeout = int(step.get("timeout", 15))
        keys = identity_dir(identity.state_dir)
        with open(f"{keys}/node.key") as f:
            key_pem = f.read()
        with open(f"{keys}/{issuer.replace('/', '_')}.crt") as f:
            cert_pem = f.read()
        secret = self.issuer_secret(issuer)
        ca_pem = secret_text(secret, "ca.crt") or secret_text(secret, "tls.crt")
        impostor = Host(IMPOSTOR, claim, False)
        conf_dir = f"{impostor.state_dir}/swanctl"
        for sub in SWANCTL_DIRS:  # all of them: swanctl complains about each one missing
            os.makedirs(f"{conf_dir}/{sub}", exist_ok=True)
        for path, text in ((f"{conf_dir}/x509/node.crt", cert_pem),
                           (f"{conf_dir}/x509ca/ca.crt", ca_pem),
                           (f"{conf_dir}/private/node.key", key_pem)):
            with open(path, "w") as f:
                f.write(text)
        with open(f"{conf_dir}/swanctl.conf", "w") as f:
            f.write(impostor_swanctl_conf(claim, target.address,
                                          str(step.get("ike_proposals", "aes128-sha256-modp2048")),
                                          str(step.get("esp_proposals", "aes128gcm16"))))
        ports = f"{port}-{port + 1}"
        rule = f"to {claim}/32 ipproto udp dport {ports} lookup {IMPOSTOR_TABLE} priority 100"
        sh("ip", "netns", "add", IMPOSTOR)
        ip_batch(target.name, [
            f"link add {IMPOSTOR_LINK} type veth peer name eth0 netns {IMPOSTOR}",
            f"link set {IMPOSTOR_LINK} up",
            f"route add {claim}/32 dev {IMPOSTOR_LINK} table {IMPOSTOR_TABLE}",
            f"rule add {rule}",
        ])
        ip_batch(IMPOSTOR, ["link set lo up", f"addr add {claim}/32 dev eth0",
                            "link set eth0 up", f"route add {target.address}/32 dev eth0"])
        result: dict[str, Any] = {
            "identity": identity.name, "address": claim, "target": target.name,
            "certificate_file": f"{keys}/{issuer.replace('/', '_')}.crt",
            "rule": f"ip -n {target.name} rule add {rule}",
            "routing": {
                "rules": sh("ip", "-n", target.name, "rule", "show").splitlines(),
                "to_impostor_ike": sh("ip", "-n", target.name, "route", "get", claim,
                                      "ipproto", "udp", "dport", str(port)).strip(),
                "to_address_otherwise": sh("ip", "-n", target.name, "route", "get",
                                           claim).strip(),
            },
            "target_sas_before": parse_list_sas(
                sh("swanctl", "--list-sas", "--uri", target.vici)),
            # the target's connections: per peer its address and identity, the catch-all's
            # remote_addrs without the known peers' addresses
            "target_connections": sh("swanctl", "--list-conns", "--uri", target.vici),
        }
        log_path = f"{SHARED}/logs/{target.name}-charon.log"
        offset = os.path.getsize(log_path)
        env = {"PATH": os.environ["PATH"],
               "STRONGSWAN_CONF": f"{impostor.state_dir}/strongswan.conf"}
        try:
            if not (self.config.get("strongswan_confs") or {}).get(IMPOSTOR):
                raise RuntimeError("no strongswan.conf for the impostor (host.strongswan_confs)")
            self.start_charon(impostor)
            loaded = subprocess.run(
                ["swanctl", "--load-all", "--noprompt", "--uri", impostor.vici, "--file",
                 f"{conf_dir}/swanctl.conf"], capture_output=True, text=True, env=env,
                check=False, timeout=30)
            result["load"] = {"exit": loaded.returncode, "stdout": loaded.stdout,
                              "stderr": loaded.stderr}
            started = time.time()
            initiated = subprocess.run(
                ["swanctl", "--initiate", "--ike", IMPOSTOR, "--child", IMPOSTOR,
                 "--timeout", str(timeout), "--uri", impostor.vici],
                capture_output=True, text=True, env=env, check=False, timeout=timeout + 15)
            result["initiate"] = {"exit": initiated.returncode, "stdout": initiated.stdout,
                                  "stderr": initiated.stderr,
                                  "seconds": round(time.time() - started, 3)}
            time.sleep(0.3)  # the target's last lines of the exchange reach its log file
            with open(log_path, errors="replace") as f:
                f.seek(offset)
                meanwhile = f.read().splitlines()
            needle = f"{claim}[{port}]"
            ids = {m.group(2) for line in meanwhile if needle in line
                   and (m := LOG_IKE_SA.search(line))}
            result["target_ike_sa_ids"] = sorted(ids)
            result["target_log"] = log_lines_of_ike_sas(meanwhile, ids)
            result["target_log_meanwhile"] = meanwhile
            result["impostor_sas"] = parse_list_sas(
                sh("swanctl", "--list-sas", "--uri", impostor.vici, check=False))
            result["target_sas_after"] = parse_list_sas(
                sh("swanctl", "--list-sas", "--uri", target.vici))
            stats = json.loads(sh("ip", "-n", target.name, "-s", "-j", "link", "show",
                                  IMPOSTOR_LINK))[0].get("stats64", {})
            result["veth_packets"] = {"from_impostor": stats.get("rx", {}).get("packets"),
                                      "to_impostor": stats.get("tx", {}).get("packets")}
        finally:
            if not step.get("keep"):
                self.remove_impostor(impostor, target, rule)
        return result

    def remove_impostor(self, impostor: Host, target: Host, rule: str) -> None:
        if impostor.charon is not None:
            impostor.charon.send_signal(signal.SIGTERM)
            try:
                impostor.charon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                impostor.charon.kill()
                impostor.charon.wait(timeout=10)
        sh("ip", "-n", target.name, "rule", "del", *rule.split(), check=False)
        sh("ip", "-n", target.name, "route", "flush", "table", str(IMPOSTOR_TABLE), check=False)
        sh("ip", "-n", target.name, "link", "del", IMPOSTOR_LINK, check=False)
        sh("ip", "netns", "del", IMPOSTOR, check=False)

    def targets(self, step: dict[str, Any]) -> list[str]:
        if "node" in step:
            return [step["node"]]
        return [h.name for h in self.nodes]

    # -------------------------------------------------------------- collect
    def collect_statuses(self, refresh: bool) -> dict[str, Any]:
        """Each node's status file; with refresh, ask running agents for a pass first (SIGHUP)."""
        before = {h.name: self.read_status(h) for h in self.nodes}
        if refresh and self.cluster:
            self.refresh_cluster()
        elif refresh:
            waiting = []
            for h in self.nodes:
                if h.agent is not None and h.agent.poll() is None:
                    h.agent.send_signal(signal.SIGHUP)
                    waiting.append(h)
            deadline = time.time() + 15
            while waiting and time.time() < deadline:
                waiting = [h for h in waiting if self.read_status(h) == before[h.name]]
                time.sleep(0.1)
        return {h.name: self.read_status(h) for h in self.nodes}

    def run(self) -> None:
        self.mount_filesystems()
        self.mark("filesystems")
        self.load_modules()
        self.mark("modules")
        self.build_network()
        self.mark("network")
        self.start_capture()
        self.mark("capture")
        self.start_charons()
        self.mark("charons")
        self.start_control_plane()
        self.mark("policy applied")
        expected = {k: int(v) for k, v in self.config.get("expected", {}).items()}
        seconds = self.wait_ready(expected, float(self.config.get("ready_timeout", 120)))
        self.mark("ready" if seconds is not None else "not ready")
        self.results["ready"] = seconds is not None
        self.results["seconds_to_ready"] = None if seconds is None else round(seconds, 3)
        if seconds is not None:
            probe_timeout = float(self.config.get("probe_timeout", 15))
            self.probe("warmup", probe_timeout)
            self.results["sas_complete"] = self.wait_sas(float(self.config.get("sa_timeout", 15)))
            self.mark("warm")
            self.probe("main", float(self.config.get("main_probe_timeout", 5)))
            self.mark("probed")
            self.results["states"]["main"] = {h.name: self.xfrm_states(h) for h in self.nodes}
            self.results["owned_policies"] = {h.name: self.owned_policies(h) for h in self.nodes}
            for step in self.config.get("steps", []):
                self.run_step(step)
        for label in list(self.streams):  # a scenario that forgot stop_stream
            if label not in self.results.get("streams", {}):
                self.finish_stream(label, 2.0)
        self.results["statuses"] = self.collect_statuses(refresh=True)
        if self.cluster:
            self.collect_cluster()
        self.mark("collected")


STATIC_PLUGINS = (
    "random nonce aes sha1 sha2 hmac kdf gmp pem pkcs1 pkcs8 x509 pubkey openssl gcm "
    "kernel-netlink socket-default vici"
)
STATIC_STRONGSWAN_CONF = f"""\
charon {{
  load = {STATIC_PLUGINS}
  install_routes = no
  plugins {{
    vici {{
      socket = @VICI@
    }}
  }}
}}
"""

STATIC_SWANCTL = """\
connections {
  lab {
    version = 2
    local_addrs = @ADDR@
    remote_addrs = 10.77.0.0/24
    proposals = aes128-sha256-modp2048
    local {
      auth = psk
      id = @ADDR@
    }
    remote {
      auth = psk
      id = %any
    }
    children {
      lab {
        mode = transport
        start_action = trap
        policies = no
        reqid = 0x534d0001
        esp_proposals = aes128gcm16
        local_ts = @ADDR@/32
        remote_ts = 10.77.0.0/24
      }
    }
  }
}
secrets {
  ike-lab {
    secret = strongmesh-lab-static-psk
  }
}
"""


def main() -> None:
    config_path = sys.argv[1]
    with open(config_path) as f:
        config = json.load(f)
    lab = Lab(config)
    try:
        lab.run()
    except BaseException as exc:
        lab.results["errors"].append(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    finally:
        try:
            lab.stop_capture()
            lab.results["finished"] = time.time()
            tmp = f"{SHARED}/results.json.tmp"
            with open(tmp, "w") as f:
                json.dump(lab.results, f, indent=1)
            os.rename(tmp, f"{SHARED}/results.json")
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        os.sync()  # hostfs caches writes: without this the host misses the capture's tail
        os.system("halt -f")


if __name__ == "__main__":
    main()
