"""The lab's PID 1 inside user-mode-linux: the run from boot to ``results.json``.

Run as ``python -S -B inside.py CONFIG.json`` by the init script that ``host`` writes. It and
the lab modules it imports use only the standard library (every import inside goes through
hostfs and is slow) and of ``controller`` only ``controller.ownership`` (pure, standard library
only: the numbers that make an xfrm policy strongmesh's); the agents it starts import the rest,
in their own processes.

The run, in order: ``boot`` (filesystems, modules), ``network`` (switch, hosts, the probes'
sockets), ``processes`` (capture, charons, then per mode: standalone one agent per node fed
the policy file, cluster the agents against the host's API server (``cluster``), static
hand-written configs (``static``)), wait until ready (``status``), a warm-up probe round and
wait for SAs (``probes``, ``xfrm``), the ``main`` round, the scenario's steps (``steps``: the
registry of every kind and its handler), collect. Everything it learns goes to
``results.json`` in the shared directory; the host builds the report from that file and the
switch capture.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from typing import Any

# Run as a script inside UML, only this directory is on sys.path: add the project (stdlib-only
# lab modules are imported from it; the heavy parts run in the processes the lab starts).
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
from hack.labkit.lab import boot, processes, xfrm
from hack.labkit.lab.cluster import Cluster
from hack.labkit.lab.network import Host, Network
from hack.labkit.lab.paths import POLICY_FILE, SHARED
from hack.labkit.lab.probes import PROBE_PORT, Sockets, Stream, probe_round
from hack.labkit.lab.shell import log
from hack.labkit.lab.static import static_configure
from hack.labkit.lab.status import Statuses
from hack.labkit.lab.steps import REGISTRY, parse_steps
from hack.labkit.lab.steps_identity import finish_stream
from hack.labkit.lab.topology import BYSTANDER


class Lab:
    """One run of the lab: its hosts, processes, probe sockets and results; the scenario's
    step handlers work on it."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.t0 = time.time()
        self.network = Network(int(config["nodes"]), bool(config.get("pods")))
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
            "hosts": [h.describe() for h in self.network.hosts],
        }
        self.cluster = (Cluster(config, self.results, self.network.nodes)
                        if config.get("mode") == "cluster" else None)
        self.statuses = Statuses(self.network.nodes, self.cluster)
        self.capture = processes.Capture()
        self._sockets: Sockets | None = None
        self.streams: dict[str, Stream] = {}
        self.current_step: dict[str, Any] | None = None  # the step running (streams note it)

    @property
    def sockets(self) -> Sockets:
        """Every host's probe receiver (``PROBE_PORT``) and sender, once the network is up."""
        if self._sockets is None:
            raise RuntimeError("the lab's network is not built yet")
        return self._sockets

    def require_cluster(self) -> Cluster:
        if self.cluster is None:
            raise RuntimeError("a cluster-mode step: this lab runs in "
                               f"{self.results['mode']} mode")
        return self.cluster

    def mark(self, event: str) -> None:
        self.results["timeline"][event] = round(time.time() - self.t0, 3)
        log(event)

    def start_charon(self, host: Host) -> None:
        processes.start_charon(self.config, host)

    def start_agent(self, host: Host) -> None:
        processes.start_agent(self.config, host)

    def probe(self, label: str, timeout: float) -> dict[str, Any]:
        """A probe round between every ordered pair of hosts, kept in ``results["rounds"]``."""
        result = probe_round(self.sockets, self.network.hosts, label, timeout)
        self.results["rounds"].append(result)
        probes = result["probes"]
        delivered = sum(p["delivered"] for p in probes)
        log(f"probe {label}: {delivered}/{len(probes)} delivered in {result['seconds']} s")
        return result

    # ------------------------------------------------------------------ the run
    def build_network(self) -> None:
        pods = self.network.build()
        if pods is not None:
            self.results["pods"] = pods
        self._sockets = Sockets(self.network.hosts, PROBE_PORT)

    def start_control_plane(self) -> None:
        mode = self.config.get("mode", "standalone")
        if mode == "static":
            for host in self.network.nodes:
                static_configure(host, str(self.config.get("static_level", "required")),
                                 self.config.get("static_bypass", []))
        elif mode == "standalone":
            shutil.copyfile(self.config["policy"], POLICY_FILE)
            for host in self.network.nodes:
                self.start_agent(host)
        elif self.cluster is not None:
            self.cluster.start(self.start_agent)
        else:
            raise RuntimeError(f"unknown lab mode {mode!r}")

    def run_step(self, raw: dict[str, Any], step: object) -> None:
        """One scenario step; a failed step is a finding (``ok`` false), the run goes on."""
        action = raw["do"]
        started = time.time()
        record: dict[str, Any] = {"do": action, "args": raw, "ok": True, "detail": None}
        self.current_step = {"index": len(self.results["steps"]), "do": action}
        try:
            record["detail"] = REGISTRY[action].run(self, step)
        except Exception as exc:
            record["ok"] = False
            record["detail"] = f"{type(exc).__name__}: {exc}"
        finally:
            self.current_step = None
        record["at"] = round(started - self.t0, 3)
        record["seconds"] = round(time.time() - started, 3)
        self.results["steps"].append(record)
        log(f"step {action}: ok={record['ok']} {record['seconds']} s")

    def run(self) -> None:
        raw_steps = self.config.get("steps", [])
        steps = parse_steps(raw_steps)  # the host checked them: this fails only on a bug
        boot.mount_filesystems(self.config["hostdir"], self.config.get("host_paths", []))
        self.mark("filesystems")
        boot.load_modules()
        self.mark("modules")
        self.build_network()
        self.mark("network")
        self.capture.start()
        self.mark("capture")
        for host in self.network.nodes:
            self.start_charon(host)
        self.mark("charons")
        self.start_control_plane()
        self.mark("policy applied")
        cpu_before = processes.cpu_snapshot(self.network.nodes)
        expected = {k: int(v) for k, v in self.config.get("expected", {}).items()}
        seconds = (0.0 if self.config.get("mode") == "static" else
                   self.statuses.wait_ready(expected, float(self.config.get("ready_timeout",
                                                                            120))))
        self.mark("ready" if seconds is not None else "not ready")
        # where UML's one CPU went on the way to Ready (issue 10: what the wait is made of)
        self.results["cpu_to_ready"] = processes.cpu_seconds_between(
            cpu_before, processes.cpu_snapshot(self.network.nodes))
        self.results["ready"] = seconds is not None
        self.results["seconds_to_ready"] = None if seconds is None else round(seconds, 3)
        if seconds is not None:
            nodes = self.network.nodes
            self.probe("warmup", float(self.config.get("probe_timeout", 15)))
            self.results["sas_complete"] = xfrm.wait_sas(
                nodes, float(self.config.get("sa_timeout", 15)))
            self.mark("warm")
            self.probe("main", float(self.config.get("main_probe_timeout", 5)))
            self.mark("probed")
            self.results["states"]["main"] = {h.name: xfrm.esp_states(h) for h in nodes}
            self.results["owned_policies"] = {h.name: xfrm.owned_policies(h) for h in nodes}
            for raw, step in zip(raw_steps, steps, strict=True):
                self.run_step(raw, step)
        for label in list(self.streams):  # a scenario that forgot stop_stream
            if label not in self.results.get("streams", {}):
                finish_stream(self, label, 2.0)
        self.results["statuses"] = self.statuses.collect(refresh=True)
        if self.cluster is not None:
            self.cluster.collect()
        self.mark("collected")

    def stop_capture(self) -> None:
        """Stop tcpdump once a marker datagram from the bystander made it into the file."""
        if self._sockets is None:  # the network never came up: nothing was captured
            return
        sender, to = self._sockets.senders[BYSTANDER], (self.network.nodes[0].address, PROBE_PORT)
        self.capture.stop(lambda marker: sender.sendto(marker, to))


def main() -> None:
    with open(sys.argv[1]) as f:
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
