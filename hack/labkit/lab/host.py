"""Host side of ``hack/lab``: boots user-mode-linux around ``inside.py`` and builds the report.

Everything it starts lives in one process group in a new session, and one temp dir; both are
removed on every exit path (success, failure, timeout, Ctrl-C, SIGTERM), the temp dir unless
``--keep-logs`` copies it somewhere first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from hack.labkit.lab import report as reporting
from hack.labkit.lab.pcap import read_pcap
from hack.labkit.lab.steps import StepError, parse_steps
from hack.labkit.lab.steps_identity import IMPOSTOR_PORT
from hack.labkit.lab.topology import node_pod_cidr

PROJECT = Path(__file__).resolve().parents[3]
INSIDE = Path(__file__).resolve().with_name("inside.py")
UML = "linux.uml"
DEFAULT_POLICY = PROJECT / "examples" / "policy.yaml"


@dataclass
class LabOptions:
    nodes: int = 3
    policy: Path | None = DEFAULT_POLICY
    mode: str = "cluster"
    steps: list[dict[str, Any]] = field(default_factory=list)
    extra_files: Mapping[str, Path] = field(default_factory=dict)  # name in lab -> host file
    resync_seconds: float = 5
    ready_timeout: float = 120
    probe_timeout: float = 15
    timeout: float = 600
    keep_logs: Path | None = None
    memory_mb: int | None = None
    charon_log_level: int = 1
    static_bypass: list[str] = field(default_factory=list)
    static_level: str = "required"
    # standalone mode: list every lab node as a peer in the policy file (False: the agents
    # know no peer and reach each other through the catch-all trap)
    standalone_peers: bool = True
    # a pod host node-i-pod (10.244.i.10, pod CIDR 10.244.i.0/24) behind every node, routed
    # through it without an overlay; probed like every other host
    pods: bool = False


class LabError(RuntimeError):
    """The lab could not run (as opposed to: it ran and found problems)."""


def policy_generations(path: Path) -> dict[str, int]:
    """Names of the IPsecPolicies in a manifest file and the generation agents will report."""
    with path.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    result = {}
    for doc in docs:
        if doc.get("kind") == "IPsecPolicy":
            meta = doc.get("metadata") or {}
            result[str(meta.get("name"))] = int(meta.get("generation") or 1)
    return result


def acq_expires(path: Path) -> int | None:
    """The smallest xfrmAcqExpiresSeconds of the file's policies (charon writes it at start)."""
    with path.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    values = [
        int((d.get("spec") or {}).get("xfrmAcqExpiresSeconds", 6))
        for d in docs
        if d.get("kind") == "IPsecPolicy"
    ]
    return min(values, default=None)


def with_lab_peers(text: str, nodes: int) -> str:
    """A standalone policy file plus, per IPsecPolicy, an IPsecPeerSlice listing every lab node
    (what a plain-VM deployment lists for its hosts, as BOSH knew every VM of the add-on)."""
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    # each node's pod CIDR too (a Tunnel policy carries it; the node reads its own from here)
    peers = [{"node": f"node-{i}", "address": f"10.77.0.{i}", "podCIDRs": [node_pod_cidr(i)]}
             for i in range(1, nodes + 1)]
    for doc in list(docs):
        if doc.get("kind") == "IPsecPolicy":
            name = str((doc.get("metadata") or {}).get("name"))
            docs.append({
                "apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPeerSlice",
                "metadata": {"name": f"{name}-lab-peers"},
                "spec": {"policy": name,
                         "policyGeneration": int((doc.get("metadata") or {}).get("generation")
                                                 or 1),
                         "peers": peers},
            })
    return yaml.safe_dump_all(docs, sort_keys=False)


def manifest_documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a manifest file as JSON-ready dicts (the lab inside has no YAML)."""
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def strongswan_confs(n: int, log_level: int, acq: int | None) -> dict[str, str]:
    """Each lab node's strongswan.conf as the project renders it (own VICI socket, log file),
    and the ``impostor`` step's: the same renderer, IKE on ``IMPOSTOR_PORT`` and the next port
    (NAT-T), so that the target node's replies can be routed to it by port alone."""
    from controller.strongswan import render_strongswan_conf

    confs = {
        f"node-{i}": render_strongswan_conf(
            vici_socket=f"/mnt/state/node-{i}/charon.vici",
            log_level=log_level,
            log_file=f"/mnt/lab/logs/node-{i}-charon.log",
            xfrm_acq_expires=acq,
        )
        for i in range(1, n + 1)
    }
    confs["impostor"] = render_strongswan_conf(
        vici_socket="/mnt/state/impostor/charon.vici",
        log_level=log_level,
        log_file="/mnt/lab/logs/impostor-charon.log",
        extra={"port": str(IMPOSTOR_PORT), "port_nat_t": str(IMPOSTOR_PORT + 1)},
    )
    return confs


def _init_script(workdir: Path) -> Path:
    python = Path(sys.executable)
    script = workdir / "init.sh"
    script.write_text(
        "#!/bin/sh\n"
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"exec {python} -S -B {INSIDE} {workdir}/config.json\n"
    )
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def _terminating_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise KeyboardInterrupt so the same cleanup runs as for Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def run_lab(options: LabOptions) -> dict[str, Any]:
    """Boot the lab, run it, return the report (raises LabError if the lab itself failed)."""
    try:  # before anything starts: a typo in a scenario costs no boot
        parse_steps(options.steps)
    except StepError as exc:
        raise LabError(f"{exc} (see hack/labkit/lab/__init__.py)") from None
    if shutil.which(UML) is None:
        raise LabError(f"{UML} not found: install user-mode-linux (hack/install-system-deps)")
    workdir = Path(tempfile.mkdtemp(prefix="strongmesh-lab-"))
    try:
        with contextlib.ExitStack() as stack:
            cluster = None
            if options.mode == "cluster":
                from hack.labkit.lab.clusterhost import LabCluster, LabClusterError

                try:
                    cluster = stack.enter_context(LabCluster(workdir, options.nodes))
                except (LabClusterError, OSError) as exc:
                    raise LabError(f"cluster mode: {exc}") from exc
            return _boot_and_report(options, workdir, cluster)
    finally:
        if options.keep_logs is not None:
            options.keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copytree(workdir, options.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _boot_and_report(options: LabOptions, workdir: Path, cluster: Any) -> dict[str, Any]:
    proc: subprocess.Popen[bytes] | None = None
    try:
        expected: dict[str, int] = {}
        host_paths = {str(PROJECT), sys.prefix, sys.base_prefix, str(Path(sys.executable).parent)}
        if cluster is not None:
            host_paths.add(cluster.inside_config()["binaries"])
        config: dict[str, Any] = {
            "hostdir": str(workdir),
            "nodes": options.nodes,
            "pods": options.pods,
            "mode": options.mode,
            "python": sys.executable,
            "project": str(PROJECT),
            # host paths the lab's processes run from; bound back if a tmpfs would hide them
            "host_paths": sorted(host_paths),
            "resync_seconds": options.resync_seconds,
            "ready_timeout": options.ready_timeout,
            "probe_timeout": options.probe_timeout,
            "charon_log_level": options.charon_log_level,
            "steps": options.steps,
            "static_bypass": options.static_bypass,
            "static_level": options.static_level,
            "api": cluster.inside_config() if cluster is not None else None,
        }
        if options.mode != "static":
            if options.policy is None:
                raise LabError("--policy is required")
            if options.mode == "standalone" and options.standalone_peers:
                (workdir / "policy.yaml").write_text(
                    with_lab_peers(options.policy.read_text(), options.nodes))
            else:
                shutil.copyfile(options.policy, workdir / "policy.yaml")
            expected = policy_generations(options.policy)
            config["policy"] = "/mnt/lab/policy.yaml"
            config["strongswan_confs"] = strongswan_confs(
                options.nodes, options.charon_log_level, acq_expires(options.policy)
            )
        config["expected"] = expected
        manifests: dict[str, Any] = {}
        if options.mode == "cluster" and options.policy is not None:
            manifests["policy.yaml"] = manifest_documents(options.policy)
        for name, source in options.extra_files.items():
            if (options.mode == "standalone" and options.standalone_peers
                    and source.suffix in (".yaml", ".yml")):
                (workdir / name).write_text(with_lab_peers(source.read_text(), options.nodes))
            else:
                shutil.copyfile(source, workdir / name)
            if source.suffix in (".yaml", ".yml"):
                manifests[name] = manifest_documents(source)
        config["manifests"] = manifests
        (workdir / "config.json").write_text(json.dumps(config, indent=1))
        init = _init_script(workdir)
        # the control plane runs on the host: the lab's kernel holds nodes only
        memory = options.memory_mb or 256 + 128 * options.nodes
        network = cluster.uml_arguments() if cluster is not None else []
        console = (workdir / "console.log").open("wb")
        started = time.time()
        with _terminating_signals():
            proc = subprocess.Popen(
                [UML, f"mem={memory}M", "root=/dev/root", "rootfstype=hostfs", "rootflags=/",
                 "ro", f"init={init}", "con0=null,fd:1", "con=null", *network, "quiet"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=workdir,
            )
            try:
                proc.wait(timeout=options.timeout)
            except subprocess.TimeoutExpired:
                raise LabError(f"the lab did not finish within {options.timeout} s") from None
            finally:
                _kill_group(proc)
                console.close()
        results_path = workdir / "results.json"
        if not results_path.exists():
            tail = (workdir / "console.log").read_text(errors="replace")[-3000:]
            raise LabError(f"the lab wrote no results; console ends with:\n{tail}")
        results = json.loads(results_path.read_text())
        if cluster is not None and cluster.operator_error():
            results.setdefault("errors", []).append(cluster.operator_error())
        capture = workdir / "capture.pcap"
        packets = list(read_pcap(capture.read_bytes())) if capture.exists() else []
        report = build_report(results, packets, options.nodes, expected)
        report["wall_seconds"] = round(time.time() - started, 3)
        if cluster is not None:
            report["control_plane"] = cluster.report()
        return report
    finally:
        if proc is not None and proc.poll() is None:
            _kill_group(proc)


def build_report(
    results: Mapping[str, Any], packets: Sequence[Any], n: int, expected: Mapping[str, int]
) -> dict[str, Any]:
    names = [f"node-{i}" for i in range(1, n + 1)]
    addresses = {name: f"10.77.0.{i}" for i, name in enumerate(names, start=1)}
    nodes = reporting.node_rows(names, results.get("statuses", {}), addresses)
    hosts = results.get("hosts", [])
    carriers = reporting.carrier_addresses(hosts)
    rounds = {r["label"]: r for r in results.get("rounds", [])}
    main = rounds.get("main", {"probes": []})
    started = float(results.get("started") or 0.0)
    statuses: dict[str, Any] = (
        results["policy_status"] if "policy_status" in results
        else reporting.standalone_policy_status(nodes, expected)
    )
    report: dict[str, Any] = {
        "ready": bool(results.get("ready")) and not results.get("errors"),
        "seconds_to_ready": results.get("seconds_to_ready"),
        # UML's one CPU from policy applied to Ready: agents, charons, other (seconds)
        "cpu_to_ready": results.get("cpu_to_ready"),
        "mode": results.get("mode"),
        "nodes": nodes,
        "traffic": reporting.traffic_rows(main["probes"], packets, carriers),
        # DESIGN.md: the policy's status as the API serves it (the file's first IPsecPolicy;
        # {} once it is gone); every policy of the file by name in policy_statuses
        "policy_status": statuses.get(next(iter(expected), ""), {}),
        "policy_statuses": statuses,
        "kubectl": results.get("kubectl", {}),
        "applied": results.get("applied", []),
        # cluster mode: per status refresh, whether the API agreed with the kernels' SAs
        "refreshes": results.get("refreshes", []),
        "rounds": {
            label: {
                "seconds": r["seconds"],
                "traffic": reporting.traffic_rows(r["probes"], packets, carriers),
            }
            for label, r in rounds.items()
        },
        "timings": timings(results, rounds.get("warmup"), names, packets),
        # start_stream .. stop_stream: every datagram, sent once, with what the switch saw
        "streams": {
            label: reporting.stream_report(stream, packets, carriers, started,
                                           results.get("steps", []))
            for label, stream in (results.get("streams") or {}).items()
        },
        # impostor steps: what the switch carried between the claimed address and the target
        # while the impostor tried (nothing of the impostor's IKE should be there)
        "impostors": [
            reporting.impostor_wire(step, packets, started, addresses)
            for step in results.get("steps", []) if step.get("do") == "impostor"
        ],
        "sas_complete": results.get("sas_complete"),
        "owned_policies": results.get("owned_policies", {}),
        "steps": results.get("steps", []),
        "states": results.get("states", {}),
        "snapshots": results.get("snapshots", {}),
        "timeline": results.get("timeline", {}),
        "errors": results.get("errors", []),
        # every probed host (nodes, pod hosts, bystander): role, node, carrier address
        "hosts": hosts,
        "pods": reporting.pod_rows(hosts),
        # with pods: the ip commands, routes and sysctls (found/now) of every namespace
        "pod_network": results.get("pods", {}),
    }
    return report


def timings(
    results: Mapping[str, Any], warmup: Mapping[str, Any] | None, names: Sequence[str],
    packets: Sequence[Any],
) -> dict[str, Any]:
    """Policy applied -> every node pair delivered over ESP; first packet -> SA, per pair.

    The warm-up round is the first traffic after the agents report ready, so no SA exists when
    it starts: the time from a pair's first datagram to its delivery is negotiation time.
    """
    applied = (results.get("timeline") or {}).get("policy applied")
    if warmup is None or applied is None:
        return {}
    applied_at = float(results["started"]) + float(applied)
    pairs = [p for p in warmup["probes"] if p["src"] in names and p["dst"] in names]
    rows = reporting.traffic_rows(pairs, packets)
    all_esp = bool(pairs) and all(r["seen"] == "esp" and r["delivered"] for r in rows)
    first_to_sa = sorted(r["seconds"] for r in rows if r["seconds"] is not None)
    return {
        "policy_applied_to_all_pairs_esp": (
            round(max(float(p["delivered_at"]) for p in pairs) - applied_at, 3)
            if all_esp else None
        ),
        "first_packet_to_sa_seconds": {
            "min": first_to_sa[0] if first_to_sa else None,
            "median": first_to_sa[len(first_to_sa) // 2] if first_to_sa else None,
            "max": first_to_sa[-1] if first_to_sa else None,
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="number of lab nodes (default 3)")
    parser.add_argument("--policy", type=Path, default=DEFAULT_POLICY,
                        help="IPsecPolicy + Secret YAML fed to every agent")
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the lab directory (logs, capture, results) to DIR")
    parser.add_argument("--mode", choices=("cluster", "standalone", "static"),
                        default="cluster",
                        help="cluster (default): a real kube-apiserver + etcd and the operator "
                        "on the host (hack/control-plane), one cluster-mode agent per node, "
                        "the policy file applied through the API; standalone: one agent per "
                        "node fed the policy file; static: "
                        "hand-written PSK charon configs, no agent (checks the lab)")
    parser.add_argument("--steps", type=Path, metavar="FILE",
                        help="JSON list of scenario steps run after the first probe round")
    parser.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                        help="extra file copied into the lab directory (for steps)")
    parser.add_argument("--resync-seconds", type=float, default=5,
                        help="agents' drift-repair timer (default 5 in the lab)")
    parser.add_argument("--timeout", type=float, default=600, help="kill the lab after this")
    parser.add_argument("--pods", action="store_true",
                        help="a pod host node-i-pod (10.244.i.10) behind every node, routed "
                        "through it (pod CIDR 10.244.i.0/24, no overlay), probed like the "
                        "other hosts")


def options_from(args: argparse.Namespace) -> LabOptions:
    extra = {}
    for item in args.file:
        name, _, path = item.partition("=")
        extra[name] = Path(path)
    steps = json.loads(args.steps.read_text()) if args.steps else []
    return LabOptions(
        nodes=args.nodes, policy=args.policy, mode=args.mode, steps=steps, extra_files=extra,
        resync_seconds=args.resync_seconds, timeout=args.timeout, keep_logs=args.keep_logs,
        pods=args.pods,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/lab",
        description="Kernel lab: N strongmesh nodes and a bystander in user-mode-linux, probed "
        "pair by pair and captured on the switch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the lab and print the report")
    add_arguments(run_parser)
    demo = sub.add_parser(
        "demo", help="3 nodes, examples/policy.yaml applied through the lab's API; readable "
        "summary ending with `kubectl get ipsecpolicies,ipsecnodes` as run inside the lab")
    demo.add_argument("--keep-logs", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    if args.command == "demo":
        options = LabOptions(nodes=3, policy=DEFAULT_POLICY, keep_logs=args.keep_logs)
        as_json = False
    else:
        options = options_from(args)
        as_json = args.json
    try:
        report = run_lab(options)
    except LabError as exc:
        print(f"lab failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab interrupted; everything it started was removed", file=sys.stderr)
        return 130
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(reporting.format_summary(report))
    return 0 if report["ready"] else 1
