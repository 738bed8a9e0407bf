"""When the agent runs a pass: start, input change, timer, charon restart, SIGHUP, retries."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.agent import loop as loop_module
from controller.agent.interfaces import AgentInputs
from controller.agent.loop import LoopStats, run_loop
from controller.agent.reconcile import PassResult
from controller.facts import NodeFacts
from controller.models.node import IPsecNodeStatus

NODE = NodeFacts(name="node-1", addresses=("10.77.0.1",))


class Source:
    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.snapshots = 0

    async def snapshot(self) -> AgentInputs:
        self.snapshots += 1
        return AgentInputs(node=NODE)

    async def wait_changed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            return False
        self.changed.clear()
        return True


class Reporter:
    def __init__(self, fail: bool = False) -> None:
        self.reports: list[IPsecNodeStatus] = []
        self.fail = fail

    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus) -> None:
        self.reports.append(status)
        if self.fail:
            raise RuntimeError("API down")


def passes(charon_ok: bool = True) -> tuple[list[float], Callable[[AgentInputs], PassResult]]:
    times: list[float] = []

    def run_pass(_: AgentInputs) -> PassResult:
        times.append(time.monotonic())
        return PassResult(IPsecNodeStatus(), "", 0.0, 0, False, charon_ok)

    return times, run_pass


async def run_for(seconds: float, **kwargs: object) -> LoopStats:
    stop = asyncio.Event()
    stats = LoopStats()
    task = asyncio.create_task(run_loop(stop=stop, stats=stats, **kwargs))  # type: ignore[arg-type]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 5)
    return stats


async def test_a_pass_runs_at_start_and_is_reported() -> None:
    reporter = Reporter()
    times, run_pass = passes()
    await run_for(0.2, source=Source(), reporter=reporter, run_pass=run_pass,
                  resync_seconds=60)
    assert len(times) == 1
    assert len(reporter.reports) == 1


async def test_input_change_triggers_a_pass_before_the_timer() -> None:
    source = Source()
    times, run_pass = passes()

    async def poke() -> None:
        await asyncio.sleep(0.1)
        source.changed.set()

    poker = asyncio.create_task(poke())
    await run_for(0.4, source=source, reporter=Reporter(), run_pass=run_pass, resync_seconds=60)
    await poker
    assert len(times) == 2


async def test_timer_repeats_passes() -> None:
    times, run_pass = passes()
    await run_for(0.55, source=Source(), reporter=Reporter(), run_pass=run_pass,
                  resync_seconds=0.1)
    assert 4 <= len(times) <= 7


async def test_failed_charon_retries_sooner_than_the_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_module, "RETRY_SECONDS", 0.1)
    times, run_pass = passes(charon_ok=False)
    await run_for(0.45, source=Source(), reporter=Reporter(), run_pass=run_pass,
                  resync_seconds=60)
    assert len(times) >= 3


async def test_reporting_failure_does_not_stop_enforcement() -> None:
    times, run_pass = passes()
    await run_for(0.35, source=Source(), reporter=Reporter(fail=True), run_pass=run_pass,
                  resync_seconds=0.1)
    assert len(times) >= 2


async def test_recreated_charon_socket_triggers_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_module, "WATCH_SECONDS", 0.02)
    sock = tmp_path / "charon.vici"
    sock.write_text("")
    times, run_pass = passes()

    async def restart_charon() -> None:
        await asyncio.sleep(0.15)
        sock.unlink()
        (tmp_path / "new").write_text("")
        os.replace(tmp_path / "new", sock)

    restarter = asyncio.create_task(restart_charon())
    await run_for(0.5, source=Source(), reporter=Reporter(), run_pass=run_pass,
                  resync_seconds=60, charon_socket=sock)
    await restarter
    assert len(times) >= 2


async def test_sighup_triggers_a_pass() -> None:
    times, run_pass = passes()

    async def hup() -> None:
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGHUP)

    sender = asyncio.create_task(hup())
    await run_for(0.4, source=Source(), reporter=Reporter(), run_pass=run_pass,
                  resync_seconds=60)
    await sender
    assert len(times) == 2


async def test_stopping_runs_no_further_pass() -> None:
    times, run_pass = passes()
    stats = await run_for(0.1, source=Source(), reporter=Reporter(), run_pass=run_pass,
                          resync_seconds=60)
    assert stats.passes == len(times) == 1


async def test_xfrm_policy_change_in_the_namespace_triggers_a_pass() -> None:
    import subprocess

    from controller.agent.loop import open_policy_events
    from controller.xfrm.kernel import network_namespace

    name = f"smloop{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with network_namespace(name):
            events = open_policy_events()
        times, run_pass = passes()

        async def flush_policies() -> None:
            await asyncio.sleep(0.15)
            subprocess.run(["ip", "-n", name, "xfrm", "policy", "add", "src", "10.9.0.1/32",
                            "dst", "10.9.0.2/32", "dir", "out", "priority", "7000",
                            "action", "allow"], check=True)

        changer = asyncio.create_task(flush_policies())
        await run_for(0.6, source=Source(), reporter=Reporter(), run_pass=run_pass,
                      resync_seconds=60, policy_events=events)
        await changer
        events.close()
        assert len(times) == 2
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
