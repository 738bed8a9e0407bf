"""Wiring of ``strongmesh agent``: input source and reporter by mode, charon, kernel, loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controller.agent.interfaces import AgentInputs, InputSource, Reporter
from controller.agent.loop import run_loop, socket_path
from controller.agent.reconcile import NodeReconciler, PassResult
from controller.facts import NodeFacts
from controller.shutdown import effective_timeout, write_timeout

log = logging.getLogger("controller.agent")


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--label {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def standalone_io(args: argparse.Namespace) -> tuple[InputSource, Reporter]:
    from controller.agent.addresses import global_addresses, interface_mtus
    from controller.agent.files import FileInputSource, FileReporter, LogReporter

    fixed = tuple(args.address)
    pod_cidrs = tuple(args.pod_cidr)

    def node() -> NodeFacts:
        addresses = fixed or global_addresses()
        return NodeFacts(name=args.node, addresses=addresses, pod_cidrs=pod_cidrs,
                         mtus=interface_mtus(addresses))

    source = FileInputSource(args.policy_file, node, parse_labels(args.label))
    reporter: Reporter = (
        FileReporter(args.status_file) if args.status_file else LogReporter(log.info)
    )
    return source, reporter


def _record_shutdown_timeout(directory: Path | None) -> Callable[[PassResult, int], None]:
    """Keep ``strongmesh drain``'s timeout file beside the VICI socket up to date."""
    last: list[int] = []

    def record(_: PassResult, seconds: int) -> None:
        if directory is None or last == [seconds]:
            return
        try:
            write_timeout(str(directory), seconds)
            last[:] = [seconds]
        except OSError as exc:
            log.debug("cannot record shutdown timeout in %s: %s", directory, exc)

    return record


def _nothing() -> None:
    pass


def _metrics(
    port: int,
) -> tuple[Callable[[PassResult, NodeReconciler], None] | None,
           Callable[[str, Mapping[str, Any]], None] | None]:
    """Serve Prometheus metrics on ``port`` (0: off). Returns a callable that records a pass
    and one that counts charon's IKE failures and rekeys from its events."""
    if not port:
        return None, None
    from datetime import UTC, datetime

    from cryptography import x509

    from controller.metrics import AgentMetrics, serve

    metrics = AgentMetrics()
    serve(metrics.registry, port)
    log.info("metrics on port %d", port)

    def observe(result: PassResult, reconciler: NodeReconciler) -> None:
        metrics.reconcile_duration.observe(result.seconds)
        if result.status.errors:
            metrics.reconcile_errors.inc()
        metrics.observe_sas(result.status.sas)
        expiry = {
            name: x509.load_pem_x509_certificate(g.credentials.cert_pem.encode())
            .not_valid_after_utc
            for name, g in reconciler.last_good.items()
        }
        metrics.observe_certificates(expiry, datetime.now(UTC))

    return observe, metrics.observe_event


def _listen_to_charon(
    vici_socket: Path | None, wake: asyncio.Event,
    count: Callable[[str, Mapping[str, Any]], None] | None,
) -> Callable[[], None]:
    """charon's events: counted for the metrics, and an SA up or down wakes the loop."""
    if vici_socket is None:
        return _nothing
    from controller.agent.events import UPDOWN, EventListener, vici_subscription

    loop = asyncio.get_running_loop()

    def on_event(event_type: str, message: Mapping[str, Any]) -> None:
        if count is not None:
            count(event_type, message)
        if event_type in UPDOWN:
            loop.call_soon_threadsafe(wake.set)

    listener = EventListener(vici_subscription(str(vici_socket)), on_event)
    listener.start()
    return listener.stop


async def run_agent(args: argparse.Namespace) -> int:
    from controller.strongswan.vici_client import Charon
    from controller.xfrm.kernel import Xfrm

    if args.policy_file is not None:
        source, reporter = standalone_io(args)
        mode = f"standalone, policy file {args.policy_file}"
    else:
        from controller.agent.kube import make_kube_io

        source, reporter = make_kube_io(args.node, args.kubeconfig, args.identity_dir)
        mode = "cluster"
    sock = socket_path(args.vici)
    observe, count_event = _metrics(args.metrics_port)
    wake = asyncio.Event()
    stop_events = _listen_to_charon(sock, wake, count_event)

    xfrm = Xfrm()
    reconciler = NodeReconciler(lambda: Charon(args.vici), xfrm,
                                verify_seconds=args.resync_seconds)
    record = _record_shutdown_timeout(args.state_dir or (sock.parent if sock else None))

    def run_pass(inputs: AgentInputs) -> PassResult:
        result = reconciler.run_pass(inputs)
        # what `strongmesh drain` waits at most: the policies' timeout, as drain computes it
        record(result, effective_timeout(
            [g.policy.spec.shutdown_timeout_seconds for g in reconciler.last_good.values()]))
        if observe is not None:
            observe(result, reconciler)
        return result

    log.info("strongmesh agent for node %s (%s), charon at %s, resync every %s s",
             args.node, mode, args.vici, args.resync_seconds)
    from controller.agent.loop import open_policy_events

    try:
        events = open_policy_events()
    except OSError as exc:  # no xfrm netlink: the timer still repairs drift
        log.warning("cannot watch xfrm policy changes: %s", exc)
        events = None
    try:
        await run_loop(source, reporter, run_pass, resync_seconds=args.resync_seconds,
                       charon_socket=sock, policy_events=events, own_portid=xfrm.portid,
                       wake=wake)
    finally:
        stop_events()
        reconciler.close()
        xfrm.close()
        if events is not None:
            events.close()
        close = getattr(source, "close", None)
        if close is not None:
            await close()
    return 0
