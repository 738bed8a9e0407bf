"""At most one status write per policy per interval, however many node updates arrive.

Every IPsecNode update may change a policy's status; with N agents reporting at once a naive
operator would write the policy N times. Dirty keys are written at most once per ``interval``:
the first update is written at once (status appears promptly), the burst behind it is folded
into one write when the interval has passed. A write always computes from the latest state, so
nothing is lost by folding. ``schedule.WriteSchedule`` decides when (pure: it is told the
time); the ``Coalescer`` runs it on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from controller.operator.schedule import WriteSchedule

log = logging.getLogger(__name__)


class Coalescer:
    """Marks keys dirty; ``run`` calls ``write(key)`` no more than once per interval per key."""

    def __init__(
        self, write: Callable[[str], Awaitable[None]], interval: float = 1.0,
        clock: Callable[[], float] | None = None,
        expected: tuple[type[Exception], ...] = (),
        interval_of: Callable[[str], float] | None = None,
    ) -> None:
        self._write = write
        self._expected = expected  # failures logged without a traceback (API outages)
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._schedule = WriteSchedule(interval, interval_of)
        self._wakeup = asyncio.Event()

    def mark(self, key: str) -> None:
        """Ask for ``key`` to be written (soon, or when its interval allows)."""
        if self._schedule.mark(key, self._clock()):
            self._wakeup.set()

    def forget(self, key: str) -> None:
        self._schedule.forget(key)

    def pending(self) -> set[str]:
        return self._schedule.pending()

    async def run(self) -> None:
        """Write due keys forever (cancel to stop). A failing write is retried next interval."""
        while True:
            while (key := self._schedule.take(self._clock())) is not None:
                try:
                    await self._write(key)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning(
                        "status write for %s failed: %s; retrying", key, error,
                        exc_info=not isinstance(error, self._expected),
                    )
                    self._schedule.retry(key, self._clock())
            self._wakeup.clear()
            due = self._schedule.next_due()
            if due is None:
                await self._wakeup.wait()
            elif (delay := due - self._clock()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
