"""Host side of the lab's ``cluster`` mode: the real control plane, reachable from inside.

The lab's kernel (user-mode-linux, one virtual CPU) runs only what a node runs: charon and the
agent. The control plane runs on the host, as in a real cluster where it lives on other
machines: ``hack/control-plane`` binds kube-apiserver to the host end of a tap device, and the
lab's kernel attaches that tap as its ``vec0`` (UML's vector driver) and bridges it into the
management network ``mgmt0`` that every lab node joins on its second link. The switch ``sw0``
and its capture never see API traffic.

Here, before the kernel boots: the tap (a /24 of its own in 10.78.0.0/16 that no host
interface uses, so that labs can run side by side), the control plane, the chart (CRDs,
ServiceAccounts, RBAC, the admission policy) applied with kubectl, one Node per lab node, each
agent's identity (a token of the chart's agent ServiceAccount bound to its Node, in a
kubeconfig the lab reads through hostfs), and the operator with the chart's operator identity.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hack.labkit import controlplane, identities
from hack.labkit.lab.cluster import node_object

MGMT_PREFIX = "10.78"
SHARED_INSIDE = "/mnt/lab"  # where the lab's kernel sees the host's lab directory
OPERATOR_ARGS = ("--status-interval", "0.5", "--teardown-timeout", "120",
                 "--resync-interval", "10")


class LabClusterError(RuntimeError):
    """The control plane side of the lab could not be set up."""


def free_subnet(used: list[str]) -> int:
    """A third octet X such that no address in ``used`` is in 10.78.X.0/24."""
    taken = {
        int(ipaddress.ip_interface(a).ip.packed[2])
        for a in used
        if ipaddress.ip_interface(a).ip in ipaddress.ip_network(f"{MGMT_PREFIX}.0.0/16")
    }
    start = pid_slot()
    candidates: list[int] = [*range(start, 250), *range(1, start)]
    for candidate in candidates:
        if candidate not in taken:
            return candidate
    raise LabClusterError("no free /24 in 10.78.0.0/16 for the lab's management network")


def pid_slot() -> int:
    return 1 + os.getpid() % 249


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabClusterError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class LabCluster:
    """``with LabCluster(workdir, nodes) as cluster:`` — everything above, torn down on exit."""

    workdir: Path
    nodes: int
    python: str = sys.executable
    tap: str = ""
    subnet: int = 0
    plane: controlplane.ControlPlane | None = None
    operator: subprocess.Popen[bytes] | None = None
    start_seconds: float = 0.0
    timeline: dict[str, float] = field(default_factory=dict)

    @property
    def api_address(self) -> str:
        return f"{MGMT_PREFIX}.{self.subnet}.254"

    def __enter__(self) -> LabCluster:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _mark(self, what: str, since: float) -> None:
        self.timeline[what] = round(time.monotonic() - since, 3)

    def _start(self) -> None:
        started = time.monotonic()
        self.subnet = free_subnet(host_addresses())
        self.tap = f"smlab{os.getpid() % 100000}"
        _ip("tuntap", "add", "dev", self.tap, "mode", "tap")
        _ip("addr", "add", f"{self.api_address}/24", "dev", self.tap)
        _ip("link", "set", self.tap, "up")
        log = (self.workdir / "logs")
        log.mkdir(parents=True, exist_ok=True)
        with (log / "control-plane.log").open("a") as progress:
            self.plane = controlplane.up(
                self.workdir / "control-plane", address=self.api_address,
                progress=lambda line: print(line, file=progress, flush=True))
        self._mark("control plane ready", started)
        identities.install_chart(self.plane)
        self._mark("chart applied", started)
        for index in range(1, self.nodes + 1):
            node = node_object(index, self.nodes)
            body = {k: v for k, v in node.items() if k != "status"}
            self.plane.kubectl("apply", "-f", "-", input=json.dumps(body))
            self.plane.kubectl("patch", "node", node["metadata"]["name"], "--subresource=status",
                               "--type=merge", "-p", json.dumps({"status": node["status"]}))
        kube = self.workdir / "kube"
        kube.mkdir(exist_ok=True)
        for index in range(1, self.nodes + 1):
            identities.agent_kubeconfig(self.plane, f"node-{index}",
                                        kube / f"node-{index}.kubeconfig")
        (kube / "admin.kubeconfig").write_bytes(self.plane.kubeconfig.read_bytes())
        os.chmod(kube / "admin.kubeconfig", 0o600)
        for name in ("ca.crt", "admin.crt", "admin.key"):
            source = self.plane.directory / "pki" / name
            (kube / name).write_bytes(source.read_bytes())
            os.chmod(kube / name, 0o600 if name.endswith(".key") else 0o644)
        self._mark("identities", started)
        operator_config = identities.operator_kubeconfig(self.plane, kube / "operator.kubeconfig")
        with (log / "operator.log").open("ab") as out:
            self.operator = subprocess.Popen(
                [self.python, "-B", "-m", "controller", "operator", "--kubeconfig",
                 str(operator_config), *OPERATOR_ARGS],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"})
        self.start_seconds = round(time.monotonic() - started, 3)

    def inside_config(self) -> dict[str, Any]:
        """What the lab's kernel needs to reach and use the API (paths as seen inside)."""
        assert self.plane is not None
        kube = f"{SHARED_INSIDE}/kube"
        return {
            "server": self.plane.server,
            "address": self.api_address,
            "mgmt_prefix": f"{MGMT_PREFIX}.{self.subnet}",
            "ca": f"{kube}/ca.crt",
            "client_cert": f"{kube}/admin.crt",
            "client_key": f"{kube}/admin.key",
            "admin_kubeconfig": f"{kube}/admin.kubeconfig",
            "agent_kubeconfigs": {f"node-{i}": f"{kube}/node-{i}.kubeconfig"
                                  for i in range(1, self.nodes + 1)},
            "kubectl": str(self.plane.binaries.kubectl),
            "binaries": str(self.plane.binaries.kubectl.parent),
        }

    def uml_arguments(self) -> list[str]:
        return [f"vec0:transport=tap,ifname={self.tap}"]

    def report(self) -> dict[str, Any]:
        """The report's ``control_plane``: the server's own version and how long it took."""
        assert self.plane is not None
        version = json.loads(self.plane.kubectl("version", "-o", "json").stdout)
        return {
            "gitVersion": version.get("serverVersion", {}).get("gitVersion"),
            "server": self.plane.server,
            "start_seconds": self.start_seconds,
            "timeline": self.timeline,
        }

    def operator_error(self) -> str | None:
        if self.operator is not None and self.operator.poll() is not None:
            return f"the operator exited with {self.operator.returncode} (logs/operator.log)"
        return None

    def close(self) -> None:
        if self.operator is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.operator.pid, signal.SIGTERM)
            try:
                self.operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.operator.pid, signal.SIGKILL)
                self.operator.wait(timeout=10)
            self.operator = None
        if self.plane is not None:
            self.plane.down()
            self.plane = None
        if self.tap:
            subprocess.run(["ip", "link", "del", self.tap], capture_output=True, check=False)
            self.tap = ""
