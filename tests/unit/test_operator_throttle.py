"""A burst of updates becomes one write per key per interval; the latest state wins.

The schedule is told the time, so these tables run on a clock that moves only when they say.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.operator.schedule import (
    StatusPacing,
    WriteSchedule,
    due_at,
    reconcile_spacing,
    status_spacing,
)
from controller.operator.throttle import Coalescer


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [(None, 5.0, 5.0), (4.5, 5.0, 5.5), (1.0, 5.0, 5.0)],
)
def test_due_at_waits_out_the_interval(last: float | None, now: float, expected: float) -> None:
    assert due_at(last, now, 1.0) == expected


def written(interval: int, marks: dict[int, list[str]], until: int) -> list[tuple[int, str]]:
    """Drive a schedule on whole-number times: at each tick the marks, then the due writes."""
    schedule = WriteSchedule(interval)
    out = []
    for now in range(until + 1):
        for marked in marks.get(now, []):
            schedule.mark(marked, now)
        while (key := schedule.take(now)) is not None:
            out.append((now, key))
    return out


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        ({3: ["a"]}, [(3, "a")]),  # a quiet key is written at once
        ({t: ["a"] for t in range(50)}, [(t, "a") for t in range(0, 51, 10)]),  # a burst
        ({0: ["a"], 25: ["a"]}, [(0, "a"), (25, "a")]),  # quiet again: at once again
        ({0: ["b", "a"], 1: ["a", "b"]}, [(0, "a"), (0, "b"), (10, "a"), (10, "b")]),
    ],
    ids=["single", "burst-of-50", "after-a-pause", "keys-independent-in-name-order"],
)
def test_writes_are_at_most_one_per_interval_per_key(
    marks: dict[int, list[str]], expected: list[tuple[int, str]]
) -> None:
    assert written(10, marks, until=60) == expected


def test_a_key_marked_while_its_write_runs_is_due_one_interval_after_the_write_started() -> None:
    schedule = WriteSchedule(10)
    schedule.mark("a", 0)
    assert schedule.take(0) == "a"
    assert schedule.mark("a", 4)  # during the write: a new pending write
    assert not schedule.mark("a", 5)  # folded into that one
    assert (schedule.take(9), schedule.next_due(), schedule.take(10)) == (None, 10, "a")


def test_a_failed_write_is_retried_one_interval_later() -> None:
    schedule = WriteSchedule(10)
    schedule.mark("a", 0)
    assert schedule.take(0) == "a"
    schedule.retry("a", 2)
    assert (schedule.take(11), schedule.take(12)) == (None, "a")


def test_a_failed_write_marked_meanwhile_keeps_its_earlier_due_time() -> None:
    schedule = WriteSchedule(10)
    schedule.mark("a", 0)
    schedule.take(0)
    schedule.mark("a", 1)
    schedule.retry("a", 15)
    assert schedule.next_due() == 10


def test_a_forgotten_key_is_not_written_and_starts_afresh() -> None:
    schedule = WriteSchedule(10)
    schedule.mark("gone", 0)
    schedule.take(0)
    schedule.mark("gone", 1)
    schedule.forget("gone")
    assert (schedule.pending(), schedule.take(100)) == (set(), None)
    schedule.mark("gone", 2)  # a new policy of the same name: no history
    assert schedule.take(2) == "gone"


async def test_the_coalescer_writes_a_marked_key_and_retries_a_failed_write() -> None:
    """The loop around the schedule: with a zero interval a failed write is due again at once,
    so the test waits for the second attempt, not for a clock."""
    attempts: list[str] = []
    retried = asyncio.Event()

    async def write(key: str) -> None:
        attempts.append(key)
        if len(attempts) == 1:
            raise RuntimeError("API down")
        retried.set()

    coalescer = Coalescer(write, interval=0.0)
    task = asyncio.create_task(coalescer.run())
    coalescer.mark("mesh")
    try:
        await asyncio.wait_for(retried.wait(), timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert attempts == ["mesh", "mesh"]
    assert coalescer.pending() == set()


def test_each_key_may_have_an_interval_of_its_own() -> None:
    intervals = {"small": 2.0, "large": 10.0}
    schedule = WriteSchedule(10, intervals.__getitem__)
    for key in intervals:
        schedule.mark(key, 0)
        assert schedule.take(0) == key
        schedule.mark(key, 1)
    assert (schedule.take(1.9), schedule.take(2), schedule.take(9.9), schedule.take(10)) == (
        None, "small", None, "large")
    intervals["small"] = 5.0  # the key grew: its next write waits longer
    schedule.mark("small", 3)
    assert (schedule.take(6.9), schedule.take(7)) == (None, "small")


@pytest.mark.parametrize(("rows", "spacing"), [(0, 0.2), (8, 0.2), (50, 0.2), (100, 0.4),
                                               (250, 1.0), (1000, 1.0)])
def test_a_small_policy_is_reconciled_more_often_a_large_one_at_most_each_interval(
    rows: int, spacing: float
) -> None:
    """(A reconcile publishes the slices: its members' readiness, which initiators wait for.)"""
    assert reconcile_spacing(rows, 1.0) == spacing


@pytest.mark.parametrize(("rows", "spacing"), [(0, 1.0), (8, 1.0), (250, 1.0), (500, 2.0),
                                               (1000, 4.0)])
def test_progress_of_a_larger_status_is_written_less_often(rows: int, spacing: float) -> None:
    assert status_spacing(rows, 1.0) == spacing


def test_news_is_written_at_once_and_progress_when_its_spacing_has_passed() -> None:
    pacing = StatusPacing(1.0)
    assert pacing.wait("mesh", news=False, rows=1000, now=10.0) == 0.0  # never written yet
    pacing.written("mesh", 10.0)
    assert pacing.wait("mesh", news=False, rows=1000, now=11.0) == 3.0
    assert pacing.wait("mesh", news=True, rows=1000, now=11.0) == 0.0
    assert pacing.wait("mesh", news=False, rows=1000, now=14.0) == 0.0
    assert pacing.wait("other", news=False, rows=1000, now=11.0) == 0.0  # per policy
    pacing.forget("mesh")
    assert pacing.wait("mesh", news=False, rows=1000, now=11.0) == 0.0
