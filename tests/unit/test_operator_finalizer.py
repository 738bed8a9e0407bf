"""The teardown finalizer: added once, removed when the nodes are done or the timeout is up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.models.node import IPsecNode
from controller.operator.finalizer import (
    FINALIZER,
    KEEP,
    decide_teardown,
    finalizer_to_add,
    nodes_still_enforcing,
)
from controller.operator.records import PolicyMeta

DELETED_AT = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = 300.0


def meta(finalizers: tuple[str, ...] = (), deleting: bool = False) -> PolicyMeta:
    return PolicyMeta("mesh", resource_version="42", finalizers=finalizers,
                      deletion_timestamp=DELETED_AT if deleting else None)


@pytest.mark.parametrize(
    ("given", "patch"),
    [
        (meta(), [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        (meta(("other.io/x",)), [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
        (meta((FINALIZER,)), None),
        (meta(deleting=True), None),  # too late: a deleted object takes no new finalizer
    ],
    ids=["first", "after-others", "present", "deleting"],
)
def test_the_finalizer_is_added_once_guarded_by_the_version(
    given: PolicyMeta, patch: list[dict[str, object]] | None
) -> None:
    assert finalizer_to_add(given) == patch


def removal(index: int) -> list[dict[str, object]]:
    return [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"}]


@pytest.mark.parametrize(
    ("given", "waiting", "after", "expected_removal", "warns"),
    [
        (meta((FINALIZER,)), ["node-1"], 10, None, False),  # not deleting
        (meta(deleting=True), [], 10, None, False),  # not ours (any more)
        (meta((FINALIZER,), deleting=True), [], 0, removal(0), False),  # all torn down
        (meta(("a.io/x", FINALIZER), deleting=True), [], 0, removal(1), False),
        (meta((FINALIZER,), deleting=True), ["node-1"], TIMEOUT - 1, None, False),
        (meta((FINALIZER,), deleting=True), ["node-1", "node-2"], TIMEOUT, removal(0), True),
    ],
    ids=["alive", "no-finalizer", "torn-down", "index", "waiting", "timed-out"],
)
def test_teardown_waits_for_the_nodes_until_the_timeout(
    given: PolicyMeta, waiting: list[str], after: float,
    expected_removal: list[dict[str, object]] | None, warns: bool,
) -> None:
    teardown = decide_teardown(given, waiting, DELETED_AT + timedelta(seconds=after), TIMEOUT)
    assert teardown.removal == expected_removal
    assert (teardown.warning is not None) == warns
    if expected_removal is None:
        assert teardown == KEEP


def test_the_timeout_warning_names_the_nodes_and_the_timeout() -> None:
    teardown = decide_teardown(meta((FINALIZER,), deleting=True), ["node-1", "node-2"],
                               DELETED_AT + timedelta(hours=1), TIMEOUT)
    assert teardown.warning is not None
    assert (teardown.warning.type, teardown.warning.reason) == ("Warning", "TeardownTimeout")
    assert teardown.warning.message == (
        "nodes node-1, node-2 did not confirm teardown within 300s; removing the finalizer anyway"
    )


def ipsec_node(name: str, *policies: str) -> IPsecNode:
    return IPsecNode.model_validate({
        "metadata": {"name": name},
        "status": {"policies": [{"name": p, "generation": 1} for p in policies]},
    })


def test_only_existing_nodes_that_still_list_the_policy_hold_the_deletion() -> None:
    ipsec_nodes = {
        "node-2": ipsec_node("node-2", "mesh"),
        "node-1": ipsec_node("node-1", "mesh", "other"),
        "node-3": ipsec_node("node-3", "other"),  # torn down
        "gone": ipsec_node("gone", "mesh"),  # its Node was deleted
    }
    nodes: dict[str, dict[str, str]] = {"node-1": {}, "node-2": {}, "node-3": {}}
    assert nodes_still_enforcing("mesh", ipsec_nodes, nodes) == ["node-1", "node-2"]
