"""The agent's event loop: when to run a reconcile pass.

A pass runs at start (adopting whatever the node already holds), whenever an input may have
changed, when charon's VICI socket is re-created (charon restarted and lost its
configuration), when the kernel announces an xfrm policy change (someone flushed them), when
charon announces an IKE_SA or CHILD_SA going up or down (``wake``, set from the event
listener), when an initiation's back-off runs out, on SIGHUP, and every ``resync_seconds`` to
repair any other drift. After a failed pass (charon unreachable) the next one comes sooner.

Exiting (SIGTERM, SIGINT, a crash) tears nothing down: SAs, trap connections and xfrm policies
stay, so traffic is not interrupted by restarts or upgrades. Tear-down happens only as a
consequence of a pass whose inputs no longer contain a policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from controller.agent.interfaces import AgentInputs, InputSource, Reporter
from controller.agent.reconcile import PassResult
from controller.xfrm.netlink import changed_by_others

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
WATCH_SECONDS = 0.5

# How the watchers wait between looks; tests pass one they step by hand.
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class LoopStats:
    passes: int = 0
    last: PassResult | None = None


def _inode(path: Path | None) -> tuple[int, int, int] | None:
    """Identity of a file; ctime too, because a re-created file may reuse the inode number."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


async def _watch_socket(path: Path, wake: asyncio.Event, sleep: Sleep) -> None:
    """Wake the loop when charon's socket appears, disappears or is re-created."""
    seen = _inode(path)
    while True:
        await sleep(WATCH_SECONDS)
        now = _inode(path)
        if now != seen:
            log.info("charon socket %s %s", path, "re-created" if now else "gone")
            seen = now
            wake.set()


XFRMGRP_POLICY = 0x8  # multicast group of xfrm policy changes (XFRMNLGRP_POLICY)
NETLINK_XFRM = 6
EVENT_SETTLE_SECONDS = 0.05


def open_policy_events() -> socket.socket:
    """A netlink socket that receives every xfrm policy change of this network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    sock.bind((0, XFRMGRP_POLICY))
    sock.setblocking(False)
    return sock


async def _watch_policies(sock: socket.socket, wake: asyncio.Event, sleep: Sleep,
                          own_portid: int | None = None) -> None:
    """Wake the loop when xfrm policies change (someone flushed them: repair at once).

    Changes the agent made itself (requests from its netlink socket, ``own_portid``) are not
    news: the pass after a policy's first pass would otherwise run again only to find nothing
    to do, on every node at the same moment."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def drain() -> None:
        foreign = own_portid is None
        try:
            while data := sock.recv(1 << 16):
                foreign = foreign or changed_by_others(data, own_portid or 0)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # ENOBUFS: notifications were lost, whose is unknown
            foreign = True
        if foreign:
            changed.set()

    loop.add_reader(sock.fileno(), drain)
    try:
        while True:
            await changed.wait()
            await sleep(EVENT_SETTLE_SECONDS)  # one pass per burst of changes
            changed.clear()
            wake.set()
    finally:
        loop.remove_reader(sock.fileno())


async def run_loop(
    source: InputSource,
    reporter: Reporter,
    run_pass: Callable[[AgentInputs], PassResult],
    *,
    resync_seconds: float,
    charon_socket: Path | None = None,
    policy_events: socket.socket | None = None,
    own_portid: int | None = None,
    stop: asyncio.Event | None = None,
    stats: LoopStats | None = None,
    wake: asyncio.Event | None = None,
    handle_signals: bool = True,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Run passes until ``stop`` is set (or SIGTERM/SIGINT). ``run_pass`` runs in a thread.

    ``wake``, set by anyone (thread-safely via the loop), asks for a pass now.
    ``policy_events``: xfrm policy notifications; those of requests from ``own_portid`` (the
    pass's own netlink socket) wake nothing. Without
    ``handle_signals`` the signals are left alone (many loops in one process: the scale
    benchmark's simulated nodes). ``sleep`` paces the socket and policy watchers."""
    stop = stop or asyncio.Event()
    stats = stats or LoopStats()
    wake = wake or asyncio.Event()
    loop = asyncio.get_running_loop()
    handlers = []
    signals = ((signal.SIGHUP, wake), (signal.SIGTERM, stop), (signal.SIGINT, stop))
    for sig, event in signals if handle_signals else ():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, event.set)
            handlers.append(sig)
    watchers = []
    if charon_socket is not None:
        watchers.append(asyncio.create_task(_watch_socket(charon_socket, wake, sleep)))
    if policy_events is not None:
        watchers.append(asyncio.create_task(
            _watch_policies(policy_events, wake, sleep, own_portid)))
    try:
        while not stop.is_set():
            wake.clear()
            inputs = await source.snapshot()
            result = await asyncio.to_thread(run_pass, inputs)
            stats.passes += 1
            stats.last = result
            if result.xfrm_changes or result.charon_changed or result.status.errors:
                log.info(
                    "pass %d: %.3f s, %d xfrm changes, charon %s, %d SAs, errors: %s",
                    stats.passes, result.seconds, result.xfrm_changes,
                    "changed" if result.charon_changed else "unchanged",
                    len(result.status.sas), "; ".join(result.status.errors) or "none",
                )
            else:
                log.debug("pass %d: %.3f s, nothing to change", stats.passes, result.seconds)
            delay = resync_seconds if result.charon_ok else min(RETRY_SECONDS, resync_seconds)
            if result.retry_in is not None:
                delay = min(delay, result.retry_in)
            pass_due, left = loop.time() + delay, delay
            while True:
                report_again = await _report(reporter, inputs, result)
                if report_again is None or report_again >= left:
                    await _wait_for_trigger(source, wake, stop, left)
                    break
                if await _wait_for_trigger(source, wake, stop, report_again):
                    break
                # only the status was due (paced, or refused before): offer this pass's
                # status again; a pass per retry would cost a thousand agents their CPU
                left = max(0.0, pass_due - loop.time())
    finally:
        for watcher in watchers:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for sig in handlers:
            loop.remove_signal_handler(sig)
        log.info("agent stopping after %d passes; the node keeps its IPsec state", stats.passes)


async def _report(reporter: Reporter, inputs: AgentInputs, result: PassResult) -> float | None:
    try:
        return await reporter.report(inputs.node, result.identity, result.status)
    except Exception as exc:  # reporting must never stop enforcement
        log.warning("reporting status failed: %s", exc)
        return RETRY_SECONDS


async def _wait_for_trigger(
    source: InputSource, wake: asyncio.Event, stop: asyncio.Event, timeout: float
) -> bool:
    """Whether something asked for a pass (inputs changed, a wake, stop) before ``timeout``."""
    changed = asyncio.create_task(source.wait_changed(timeout))
    woken = asyncio.create_task(wake.wait())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({changed, woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
        return (woken.done() or stopped.done()
                or (changed.done() and not changed.cancelled() and changed.result()))
    finally:
        for task in (changed, woken, stopped):
            task.cancel()
        for task in (changed, woken, stopped):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def socket_path(uri: str) -> Path | None:
    """The filesystem path of a ``unix://`` VICI URI (None for other schemes)."""
    if uri.startswith("unix://"):
        return Path(uri.removeprefix("unix://"))
    return None
