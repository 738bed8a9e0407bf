"""When the agent runs a pass: start, input change, timer, charon restart, SIGHUP, retries.

Nothing here waits on the wall clock. The resync timer is the input source's ``wait_changed``
timeout, which these tests resolve by hand (the inputs changed, or the timer ran out); the
socket watcher sleeps through ``SteppedSleep``, which returns when the test lets it. Each pass
ends in exactly one ``wait_changed``, so "the loop waits again" means "the pass has run and
been reported", and between two waits nothing can happen that the test did not cause. The
xfrm netlink watcher needs a kernel: tests/integration/test_agent_loop_kernel.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.agent.interfaces import AgentInputs
from controller.agent.loop import RETRY_SECONDS, WATCH_SECONDS, LoopStats, run_loop
from controller.agent.reconcile import PassResult
from controller.facts import NodeFacts
from controller.models.node import IPsecNodeStatus

NODE = NodeFacts(name="node-1", addresses=("10.77.0.1",))
# Only a guard against a hanging test; a correct loop never comes near it.
HANG_GUARD_SECONDS = 5.0


@dataclass
class Wait:
    """The loop, idle after a pass, waiting up to ``timeout`` for its inputs to change."""

    timeout: float
    outcome: asyncio.Future[bool]

    def inputs_changed(self) -> None:
        self.outcome.set_result(True)

    def timer_expired(self) -> None:
        self.outcome.set_result(False)


class ScriptedSource:
    """An ``InputSource`` whose inputs change, and whose timer runs out, when the test says."""

    def __init__(self) -> None:
        self.snapshots = 0
        self._waits: asyncio.Queue[Wait] = asyncio.Queue()

    async def snapshot(self) -> AgentInputs:
        self.snapshots += 1
        return AgentInputs(node=NODE)

    async def wait_changed(self, timeout: float) -> bool:
        wait = Wait(timeout, asyncio.get_running_loop().create_future())
        self._waits.put_nowait(wait)
        return await wait.outcome

    async def next_wait(self) -> Wait:
        """The loop's next wait: the pass before it has run and been reported."""
        return await asyncio.wait_for(self._waits.get(), HANG_GUARD_SECONDS)


class SteppedSleep:
    """The watchers' ``sleep``: each one lasts until the test calls ``look()``."""

    def __init__(self) -> None:
        self.requested: list[float] = []
        self._sleepers: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
        self._asleep: asyncio.Future[None] | None = None

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.put_nowait(woken)
        await woken

    async def _until_asleep(self) -> asyncio.Future[None]:
        if self._asleep is None:
            self._asleep = await asyncio.wait_for(self._sleepers.get(), HANG_GUARD_SECONDS)
        return self._asleep

    async def look(self) -> None:
        """Let the watcher look once; returns when it sleeps again, having acted on the look."""
        (await self._until_asleep()).set_result(None)
        self._asleep = None
        await self._until_asleep()


class Reporter:
    def __init__(self, fail: bool = False, again: float | None = None) -> None:
        self.reports: list[IPsecNodeStatus] = []
        self.fail = fail
        self.again = again  # what report() answers: offer the status again after that long

    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus
                     ) -> float | None:
        self.reports.append(status)
        if self.fail:
            raise RuntimeError("API down")
        return self.again


def passing(
    charon_ok: bool = True, retry_in: float | None = None
) -> Callable[[AgentInputs], PassResult]:
    def run_pass(_: AgentInputs) -> PassResult:
        return PassResult(IPsecNodeStatus(), "", 0.0, 0, False, charon_ok, retry_in=retry_in)

    return run_pass


@dataclass
class RunningLoop:
    source: ScriptedSource
    reporter: Reporter
    stats: LoopStats


@contextlib.asynccontextmanager
async def running_loop(
    run_pass: Callable[[AgentInputs], PassResult] | None = None,
    reporter: Reporter | None = None,
    resync_seconds: float = 60,
    **options: Any,
) -> AsyncIterator[RunningLoop]:
    """``run_loop`` in a task; leaving the block stops it (and waits until it has ended)."""
    running = RunningLoop(ScriptedSource(), reporter or Reporter(), LoopStats())
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_loop(running.source, running.reporter, run_pass or passing(),
                 resync_seconds=resync_seconds, stop=stop, stats=running.stats, **options)
    )
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_GUARD_SECONDS)


async def test_a_pass_runs_at_start_is_reported_and_stopping_runs_no_further_pass() -> None:
    async with running_loop() as agent:
        wait = await agent.source.next_wait()
        assert agent.stats.passes == agent.source.snapshots == len(agent.reporter.reports) == 1
    assert wait.outcome.cancelled()  # stopping ended the wait ...
    assert agent.stats.passes == 1  # ... and no pass followed


async def test_input_change_triggers_a_pass_before_the_timer() -> None:
    async with running_loop(resync_seconds=60) as agent:
        wait = await agent.source.next_wait()
        assert wait.timeout == 60
        wait.inputs_changed()
        await agent.source.next_wait()
        assert agent.stats.passes == agent.source.snapshots == 2


@pytest.mark.parametrize(
    ("charon_ok", "resync_seconds", "timer"),
    [
        (True, 0.1, 0.1),  # the resync timer
        (False, 60, RETRY_SECONDS),  # charon unreachable: retried sooner, again and again
    ],
)
async def test_each_expiry_of_the_timer_runs_a_pass(
    charon_ok: bool, resync_seconds: float, timer: float
) -> None:
    async with running_loop(passing(charon_ok), resync_seconds=resync_seconds) as agent:
        for _ in range(3):
            wait = await agent.source.next_wait()
            assert wait.timeout == timer
            wait.timer_expired()
        await agent.source.next_wait()
        assert agent.stats.passes == 4


@pytest.mark.parametrize(
    ("charon_ok", "retry_in", "resync_seconds", "timer"),
    [
        (True, None, 60, 60),
        (False, None, 60, RETRY_SECONDS),
        (False, None, 0.5, 0.5),  # a retry never comes later than the resync
        (True, 5.0, 60, 5.0),  # an initiation back-off runs out first
        (False, 0.2, 60, 0.2),
        (True, 90.0, 60, 60),
    ],
)
async def test_the_next_pass_is_due_at_the_soonest_of_resync_retry_and_back_off(
    charon_ok: bool, retry_in: float | None, resync_seconds: float, timer: float
) -> None:
    async with running_loop(passing(charon_ok, retry_in), resync_seconds=resync_seconds) as agent:
        wait = await agent.source.next_wait()
    assert wait.timeout == timer


async def test_reporting_failure_does_not_stop_enforcement() -> None:
    reporter = Reporter(fail=True)
    async with running_loop(reporter=reporter) as agent:
        (await agent.source.next_wait()).timer_expired()  # the status is offered again ...
        (await agent.source.next_wait()).inputs_changed()  # ... and a change runs a pass
        await agent.source.next_wait()
        assert (agent.stats.passes, len(reporter.reports)) == (2, 3)


async def test_a_status_due_again_is_offered_again_without_a_pass() -> None:
    reporter = Reporter(again=7.5)  # paced, or refused: the reporter wants another go
    async with running_loop(reporter=reporter, resync_seconds=300) as agent:
        for _ in range(3):
            wait = await agent.source.next_wait()
            assert wait.timeout == 7.5
            wait.timer_expired()
        reporter.again = None  # published
        wait = await agent.source.next_wait()
        assert (agent.stats.passes, len(reporter.reports)) == (1, 4)
        assert 299 < wait.timeout <= 300  # the resync, counted from the pass


@pytest.mark.parametrize(
    ("reporter", "timer"),
    [(Reporter(again=7.5), 7.5),  # the reporter says when to offer the status again
     (Reporter(again=900.0), 300),  # never later than the resync
     (Reporter(fail=True), RETRY_SECONDS)],  # a reporter that breaks: soon
    ids=["asked", "resync-first", "broken"],
)
async def test_a_status_not_published_yet_brings_the_loop_back_for_it(
    reporter: Reporter, timer: float,
) -> None:
    async with running_loop(reporter=reporter, resync_seconds=300) as agent:
        wait = await agent.source.next_wait()
    assert wait.timeout == timer


def _recreate(sock: Path) -> None:
    # Written beside the old file, so the new one cannot reuse its inode number.
    (sock.parent / "new").write_text("")
    os.replace(sock.parent / "new", sock)


@pytest.mark.parametrize(
    ("exists_before", "change"),
    [(True, _recreate), (True, Path.unlink), (False, Path.touch)],
    ids=["re-created", "gone", "appeared"],
)
async def test_charon_socket_change_triggers_a_pass(
    tmp_path: Path, exists_before: bool, change: Callable[[Path], object]
) -> None:
    sock = tmp_path / "charon.vici"
    if exists_before:
        sock.write_text("")
    sleep = SteppedSleep()
    wake = asyncio.Event()
    async with running_loop(charon_socket=sock, sleep=sleep, wake=wake) as agent:
        first = await agent.source.next_wait()
        await sleep.look()
        assert not wake.is_set(), "an unchanged socket woke the loop"
        change(sock)
        await sleep.look()
        await agent.source.next_wait()
        assert agent.stats.passes == 2
    assert first.outcome.cancelled()  # the watcher, not the inputs, caused the pass
    assert set(sleep.requested) == {WATCH_SECONDS}


async def test_wake_runs_a_pass_now() -> None:
    wake = asyncio.Event()
    async with running_loop(wake=wake) as agent:
        first = await agent.source.next_wait()
        wake.set()  # what the event listener does when an SA goes up or down
        await agent.source.next_wait()
        assert agent.stats.passes == 2
    assert first.outcome.cancelled()


async def test_sighup_triggers_a_pass() -> None:
    async with running_loop() as agent:
        first = await agent.source.next_wait()
        os.kill(os.getpid(), signal.SIGHUP)
        await agent.source.next_wait()
        assert agent.stats.passes == 2
    assert first.outcome.cancelled()
