"""A burst of updates becomes one write per key per interval; the latest state wins."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from controller.operator.throttle import Coalescer, due_at


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [(None, 5.0, 5.0), (4.5, 5.0, 5.5), (1.0, 5.0, 5.0)],
)
def test_due_at_waits_out_the_interval(last: float | None, now: float, expected: float) -> None:
    assert due_at(last, now, 1.0) == expected


async def test_burst_is_folded_into_one_write_per_interval() -> None:
    writes: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    coalescer: Coalescer

    async def write(key: str) -> None:
        writes.append((key, loop.time()))

    coalescer = Coalescer(write, interval=0.2)
    task = asyncio.create_task(coalescer.run())
    start = loop.time()
    for _ in range(50):  # 50 updates over ~0.5 s
        coalescer.mark("mesh")
        coalescer.mark("other")
        await asyncio.sleep(0.01)
    burst = loop.time() - start
    await asyncio.sleep(0.3)
    task.cancel()
    mesh = [t - start for key, t in writes if key == "mesh"]
    assert 2 <= len(mesh) <= burst / 0.2 + 2  # first at once, then at most one per 0.2 s
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(mesh))
    assert mesh[0] < 0.1
    assert len([k for k, _ in writes if k == "other"]) == len(mesh)


async def test_failed_write_is_retried() -> None:
    attempts = []

    async def write(key: str) -> None:
        attempts.append(key)
        if len(attempts) == 1:
            raise RuntimeError("API down")

    coalescer = Coalescer(write, interval=0.05)
    task = asyncio.create_task(coalescer.run())
    coalescer.mark("mesh")
    await asyncio.sleep(0.2)
    task.cancel()
    assert attempts == ["mesh", "mesh"]


async def test_forgotten_key_is_not_written() -> None:
    written = []

    async def write(key: str) -> None:
        written.append(key)

    coalescer = Coalescer(write, interval=0.1)
    coalescer.mark("gone")
    coalescer.forget("gone")
    task = asyncio.create_task(coalescer.run())
    await asyncio.sleep(0.05)
    task.cancel()
    assert written == []
