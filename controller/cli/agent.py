"""``strongmesh agent``: the node agent (standalone from a policy file, or cluster mode)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_VICI = "unix:///var/run/charon.vici"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent",
        help="make this node's charon and xfrm state match the policies selecting it",
        description=(
            "The node agent. Each pass reads the policies selecting this node and their "
            "credentials, renders the desired charon and kernel xfrm state, applies only the "
            "difference and reports SAs. Passes run at start, on input changes, when charon "
            "restarts, on SIGHUP and every --resync-seconds (drift repair: charon's "
            "configuration is read back when charon restarted, the desired one changed or "
            "--resync-seconds passed since the last look; the kernel's on every pass). "
            "Stopping the agent "
            "never tears anything down. With --policy-file the agent runs standalone (no "
            "Kubernetes); otherwise it reads the Kubernetes API."
        ),
    )
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), required=False,
                   help="this node's name (default: $NODE_NAME)")
    p.add_argument("--policy-file", type=Path, metavar="FILE",
                   help="standalone mode: YAML with IPsecPolicies and their Secrets")
    p.add_argument("--status-file", type=Path, metavar="FILE",
                   help="standalone mode: write the node status here as JSON (atomically)")
    p.add_argument("--address", action="append", default=[], metavar="IP",
                   help="standalone mode: this node's address (repeat; default: every global "
                   "address of the network namespace, read at each pass)")
    p.add_argument("--pod-cidr", action="append", default=[], metavar="CIDR",
                   help="standalone mode: a pod network this node routes (repeat); a Tunnel "
                   "mode policy carries it to peers inside ESP (in a cluster: the Node's "
                   "spec.podCIDRs)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="standalone mode: a node label for nodeSelectors (repeat)")
    p.add_argument("--vici", default=DEFAULT_VICI, metavar="URI",
                   help=f"charon's VICI socket (default {DEFAULT_VICI})")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where to record the policies' shutdownTimeoutSeconds for "
                   "`strongmesh drain` (default: the directory of the VICI socket)")
    p.add_argument("--resync-seconds", type=float, default=30.0,
                   help="drift-repair timer: a full pass at least this often (default 30)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"), help="agent log level")
    p.add_argument("--kubeconfig", help="cluster mode: kubeconfig (default: in-cluster)")
    p.add_argument("--identity-dir", type=Path, default=Path("/var/lib/strongmesh"),
                   metavar="DIR",
                   help="cluster mode, policies with credentials.issuer: this node's private "
                   "key (generated here, mode 0600, never sent anywhere) and its certificates "
                   "(default /var/lib/strongmesh)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics on this port (default 0: off; the chart "
                   "uses 9476)")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.node:
        logging.error("--node (or $NODE_NAME) is required")
        return 2
    import asyncio

    from controller.agent.main import run_agent

    try:
        return asyncio.run(run_agent(args))
    except KeyboardInterrupt:
        return 0
    except ValueError as exc:  # bad flag values (e.g. --label without '=')
        logging.error("%s", exc)
        return 2


def main() -> int:
    """``python -m controller.cli.agent ...`` = ``strongmesh agent ...``, importing no other
    subcommand (the lab starts agents inside user-mode-linux, where every import costs)."""
    parser = argparse.ArgumentParser(prog="strongmesh")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["agent", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
