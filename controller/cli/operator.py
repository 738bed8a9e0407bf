"""``strongmesh operator``: run the kopf operator against a Kubernetes API.

It validates each IPsecPolicy and its Secret, publishes valid policies to the agents with their
peers (IPsecPeerSlices), aggregates the agents' IPsecNodes into the policy's status (at most one
write per policy per second), posts Events, garbage-collects the IPsecNodes of deleted Nodes and
runs the deletion flow (finalizer ``strongmesh.io/teardown``).
"""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Run the strongmesh operator (kopf, standalone, cluster-wide).
Publishes each valid IPsecPolicy to the agents, with the nodes that enforce it (their peers), in
IPsecPeerSlices: agents read policies only from there, so an invalid edit never reaches a node.
Writes IPsecPolicy status (conditions Ready, CredentialsValid, Progressing, Degraded; a
summary; one row per selected node) from the IPsecNodes the agents write, posts Events
(CredentialsInvalid, CertificateExpiring, OptionalEnforcement, SubnetOverlap, Ready), deletes
the IPsecNodes of deleted Nodes, and holds a deleted policy (finalizer strongmesh.io/teardown)
until the agents have torn it down. Credentials: --kubeconfig, else $KUBECONFIG, else the
in-cluster service account, else ~/.kube/config.
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the operator (policy status, events, deletion flow, IPsecNode GC)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig to use")
    parser.add_argument(
        "--status-interval", type=float, default=1.0, metavar="SECONDS",
        help="look at a policy of 250 selected nodes or more at most once per this many "
        "seconds (default 1), a smaller one more often (selected nodes/250 s, at least "
        "0.2 s: who is ready reaches the agents sooner); a policy's status progress is "
        "written at most every max(this, selected nodes/250) s, a condition that turns at "
        "once",
    )
    parser.add_argument(
        "--optional-warn-interval", type=float, default=3600.0, metavar="SECONDS",
        help="repeat the OptionalEnforcement warning this often (default 3600; the PCF "
        "add-on's optional_warn_interval)",
    )
    parser.add_argument(
        "--teardown-timeout", type=float, default=300.0, metavar="SECONDS",
        help="remove a deleted policy's finalizer after this long even if some node has not "
        "confirmed teardown, with a Warning event (default 300)",
    )
    parser.add_argument(
        "--resync-interval", type=float, default=30.0, metavar="SECONDS",
        help="re-evaluate every policy and sweep orphaned IPsecNodes this often (default 30)",
    )
    parser.add_argument(
        "--peer-grace", type=float, default=60.0, metavar="SECONDS",
        help="a node that reports a peer without an SA for longer than this makes the policy "
        "Degraded (reason PeersMissing, naming the pairs; default 60)",
    )
    parser.add_argument(
        "--agent-service-account", default="strongmesh-system:strongmesh-agent",
        metavar="NAMESPACE:NAME",
        help="the agents' ServiceAccount: only its CSRs (with a node-name claim) get node "
        "certificates for policies with credentials.issuer (default "
        "strongmesh-system:strongmesh-agent)",
    )
    parser.add_argument(
        "--event-namespace", default="default", metavar="NAMESPACE",
        help="namespace of the Events about cluster-scoped policies (default: default)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, metavar="PORT",
        help="serve Prometheus metrics (any path, also /healthz) on this port; 0: off "
        "(default 0; the chart uses 9477)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from controller.kubeapi import load_config
    from controller.operator.reconciler import OperatorConfig
    from controller.operator.run import operate

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = OperatorConfig(
        status_interval=args.status_interval,
        optional_warn_interval=args.optional_warn_interval,
        teardown_timeout=args.teardown_timeout,
        resync_interval=args.resync_interval,
        event_namespace=args.event_namespace,
        peer_grace=args.peer_grace,
        agent_user="system:serviceaccount:" + args.agent_service_account,
    )
    metrics = None
    if args.metrics_port:
        from controller.metrics import serve
        from controller.operator.metrics import OperatorMetrics

        metrics = OperatorMetrics()
        serve(metrics.registry, args.metrics_port)
    try:
        asyncio.run(operate(load_config(args.kubeconfig), config, metrics=metrics))
    except KeyboardInterrupt:
        return 0
    return 0
