"""At most one status write per policy per interval, however many node updates arrive.

Every IPsecNode update may change a policy's status; with N agents reporting at once a naive
operator would write the policy N times. The ``Coalescer`` remembers which keys are dirty and
runs the write for a key at most once per ``interval``: the first update is written at once
(status appears promptly), the burst behind it is folded into one write when the interval has
passed. A write always computes from the latest state, so nothing is lost by folding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def due_at(last_write: float | None, now: float, interval: float) -> float:
    """When a key that became dirty at ``now`` may be written (PURE)."""
    if last_write is None:
        return now
    return max(now, last_write + interval)


class Coalescer:
    """Marks keys dirty; ``run`` calls ``write(key)`` no more than once per interval per key."""

    def __init__(
        self, write: Callable[[str], Awaitable[None]], interval: float = 1.0,
        clock: Callable[[], float] | None = None,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        self._write = write
        self._expected = expected  # failures logged without a traceback (API outages)
        self._interval = interval
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._due: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._wakeup = asyncio.Event()

    def mark(self, key: str) -> None:
        """Ask for ``key`` to be written (soon, or when its interval allows)."""
        if key not in self._due:
            self._due[key] = due_at(self._last.get(key), self._clock(), self._interval)
            self._wakeup.set()

    def forget(self, key: str) -> None:
        """The key is gone (deleted policy): drop its pending write and history."""
        self._due.pop(key, None)
        self._last.pop(key, None)

    def pending(self) -> set[str]:
        return set(self._due)

    async def run(self) -> None:
        """Write due keys forever (cancel to stop). A failing write is retried next interval."""
        while True:
            now = self._clock()
            ready = sorted(key for key, due in self._due.items() if due <= now)
            for key in ready:
                del self._due[key]
                self._last[key] = self._clock()
                try:
                    await self._write(key)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning(
                        "status write for %s failed: %s; retrying", key, error,
                        exc_info=not isinstance(error, self._expected),
                    )
                    self._due.setdefault(key, self._clock() + self._interval)
            self._wakeup.clear()
            if self._due:
                delay = max(0.0, min(self._due.values()) - self._clock())
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
            else:
                await self._wakeup.wait()
