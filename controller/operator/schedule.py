"""When each dirty key may be written: at once, or one interval after its last write (PURE).

The ``Coalescer`` (``throttle``) asks this schedule which key is due at the time it reads from
its clock; a burst of marks for a key waiting on its interval is one pending write.
"""

from __future__ import annotations

from collections.abc import Callable


def due_at(last_write: float | None, now: float, interval: float) -> float:
    """When a key that became dirty at ``now`` may be written."""
    if last_write is None:
        return now
    return max(now, last_write + interval)


class WriteSchedule:
    """Which keys are due for a write, and when (PURE: every time is passed in).

    ``interval``: the least time between two writes of a key; ``interval_of``, when given,
    says it per key (it may change between writes)."""

    def __init__(self, interval: float,
                 interval_of: Callable[[str], float] | None = None) -> None:
        self._interval = interval
        self._interval_of = interval_of
        self._due: dict[str, float] = {}
        self._last: dict[str, float] = {}  # when the last write of each key started

    def mark(self, key: str, now: float) -> bool:
        """Ask for a write of ``key``; False when one is pending already (it will do)."""
        if key in self._due:
            return False
        self._due[key] = due_at(self._last.get(key), now, self._spacing(key))
        return True

    def _spacing(self, key: str) -> float:
        return self._interval if self._interval_of is None else self._interval_of(key)

    def forget(self, key: str) -> None:
        """The key is gone (deleted policy): drop its pending write and history."""
        self._due.pop(key, None)
        self._last.pop(key, None)

    def take(self, now: float) -> str | None:
        """The first key (by name) due at ``now``, no longer pending: its write starts now."""
        key = min((k for k, due in self._due.items() if due <= now), default=None)
        if key is not None:
            del self._due[key]
            self._last[key] = now
        return key

    def retry(self, key: str, now: float) -> None:
        """The write of ``key`` failed: again one interval from ``now``, unless marked since."""
        self._due.setdefault(key, now + self._spacing(key))

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    def pending(self) -> set[str]:
        return set(self._due)


# A policy's status lists a row per selected node, and each write of it costs kube-apiserver a
# decode, a merge, a schema validation and a fan-out in proportion to its rows: at a thousand
# nodes about a second of CPU, and a rollout wrote it 136 times. Progress (rows, counts,
# messages) is therefore written at most every rows/250 s; what someone waits for (a
# condition turning, a new observed generation) goes out at once.
STATUS_ROWS_PER_SECOND = 250.0


# A policy is reconciled again (its slices published: who is ready) at most every
# rows/RECONCILE_ROWS_PER_SECOND s, within [RECONCILE_MIN_SECONDS, the status interval]: a
# small mesh learns its members' readiness within a fifth of a second, a large one no more
# often than each second (every slice write is a watch event on every node).
RECONCILE_ROWS_PER_SECOND = 250.0
RECONCILE_MIN_SECONDS = 0.2


def reconcile_spacing(rows: int, maximum: float) -> float:
    """The least time between two reconciles of a policy with ``rows`` selected nodes."""
    return min(maximum, max(RECONCILE_MIN_SECONDS, rows / RECONCILE_ROWS_PER_SECOND))


def status_spacing(rows: int, minimum: float) -> float:
    """The least time between two progress writes of a status with ``rows`` node rows."""
    return max(minimum, rows / STATUS_ROWS_PER_SECOND)


class StatusPacing:
    """When a policy's status may be written (PURE: every time is passed in)."""

    def __init__(self, minimum: float) -> None:
        self._minimum = minimum
        self._written: dict[str, float] = {}  # when each key's status was last written

    def wait(self, key: str, news: bool, rows: int, now: float) -> float:
        """Seconds until the status of ``key`` may be written; 0: now. News never waits."""
        last = self._written.get(key)
        if news or last is None:
            return 0.0
        return max(0.0, last + status_spacing(rows, self._minimum) - now)

    def written(self, key: str, now: float) -> None:
        self._written[key] = now

    def forget(self, key: str) -> None:
        self._written.pop(key, None)
