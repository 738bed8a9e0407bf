"""``strongmesh drain``: the charon container's preStop hook (gentle shutdown)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "drain",
        help="wait until the node's workloads are gone before charon stops (preStop hook)",
        description=(
            "Gentle shutdown: keep charon (and so every SA) up while the node's workloads "
            "drain. Returns when no workload is left or the timeout passed; the caller then "
            "stops charon. In Kubernetes, workloads are the pods on --node that no DaemonSet "
            "owns; on plain hosts, the processes given with --wait-pid."
        ),
    )
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), help="node name (Kubernetes)")
    p.add_argument("--pod", default=os.environ.get("POD_NAME"), help="this pod's name, ignored")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster credentials)")
    p.add_argument(
        "--wait-pid", type=int, action="append", default=[], help="a workload process (repeat)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait at most (default: the policies' shutdownTimeoutSeconds, as "
        "the agent recorded it in --state-dir)",
    )
    p.add_argument(
        "--state-dir",
        default="/var/run/strongmesh",
        help="directory shared with the agent (VICI socket, recorded timeout)",
    )
    p.add_argument("--poll", type=float, default=1.0, help="seconds between checks")


def run(args: argparse.Namespace) -> int:
    from controller import shutdown

    def log(message: str) -> None:
        print(f"strongmesh drain: {message}", file=sys.stderr, flush=True)

    timeout = args.timeout if args.timeout is not None else shutdown.read_timeout(args.state_dir)
    if args.wait_pid:
        pids: list[int] = args.wait_pid

        def remaining() -> list[str]:
            return shutdown.alive_pids(pids, shutdown.pid_exists)
    elif args.node:
        remaining = _pod_lister(args.node, args.pod, args.kubeconfig)
    else:
        log("neither --node nor --wait-pid given: nothing to wait for")
        return 0
    result = shutdown.wait_for_drain(remaining, timeout, poll=args.poll, log=log)
    log(
        f"{result.outcome} after {result.seconds:.1f}s"
        + (f"; still running: {', '.join(result.remaining[:5])}" if result.remaining else "")
    )
    return 0


def _pod_lister(node: str, own_pod: str | None, kubeconfig: str | None) -> Callable[[], list[str]]:
    """Workload pods on ``node``, through the same lean client as the agent and operator."""
    import asyncio

    from controller.kubeapi import KubeClient, load_config, selector
    from controller.shutdown import workload_pods

    config = load_config(kubeconfig)

    async def fetch() -> list[str]:
        async with KubeClient(config) as client:
            pods = await client.get(
                "/api/v1/pods", fieldSelector=selector(**{"spec.nodeName": node})
            )
        return workload_pods(pods.get("items", []), own_pod)

    return lambda: asyncio.run(fetch())
