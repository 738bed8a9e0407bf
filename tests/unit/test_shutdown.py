from __future__ import annotations

from typing import Any

import pytest

from controller.shutdown import (
    DEFAULT_TIMEOUT_SECONDS,
    effective_timeout,
    read_timeout,
    wait_for_drain,
    workload_pods,
    write_timeout,
)


def _pod(name: str, *, owner: str | None = None, phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x"}]
    return {"metadata": meta, "status": {"phase": phase}}


def test_only_running_non_daemonset_pods_other_than_ours_are_workloads() -> None:
    pods = [
        _pod("web", owner="ReplicaSet"),
        _pod("batch", owner="Job", phase="Succeeded"),
        _pod("kube-proxy", owner="DaemonSet"),
        _pod("strongmesh-agent-x", owner="DaemonSet"),
        _pod("bare"),
        _pod("me"),
    ]
    assert workload_pods(pods, own_pod="me") == ["default/web", "default/bare"]


@pytest.mark.parametrize(
    ("timeouts", "expected"),
    [([], DEFAULT_TIMEOUT_SECONDS), ([10], 10), ([10, 60, 30], 60)],
)
def test_largest_policy_timeout_wins(timeouts: list[int], expected: int) -> None:
    assert effective_timeout(timeouts) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_drain_ends_when_the_last_workload_exits() -> None:
    clock = FakeClock()
    script = [["a", "b"], ["a", "b"], ["a"], []]
    result = wait_for_drain(lambda: script.pop(0), 30, clock=clock, sleep=clock.sleep)
    assert result.outcome == "drained"
    assert result.seconds == 3.0


def test_drain_gives_up_at_the_timeout_with_the_workloads_still_there() -> None:
    clock = FakeClock()
    result = wait_for_drain(lambda: ["a"], 5, poll=2, clock=clock, sleep=clock.sleep)
    assert result.outcome == "timeout"
    assert result.seconds == 5.0
    assert result.remaining == ["a"]


def test_listing_errors_keep_waiting_instead_of_releasing_charon_early() -> None:
    clock = FakeClock()
    calls: list[list[str] | Exception] = [RuntimeError("api down"), RuntimeError("down"), []]

    def remaining() -> list[str]:
        item = calls.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    result = wait_for_drain(remaining, 30, clock=clock, sleep=clock.sleep)
    assert result.outcome == "drained"
    assert result.seconds == 2.0


def test_timeout_file_round_trips_and_defaults_when_absent(tmp_path: Any) -> None:
    assert read_timeout(str(tmp_path)) == DEFAULT_TIMEOUT_SECONDS
    write_timeout(str(tmp_path), 45)
    assert read_timeout(str(tmp_path)) == 45
