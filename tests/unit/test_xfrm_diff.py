"""Desired vs actual policies and stale states (controller.xfrm.diff, model.XfrmPlan.steps)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.xfrm.diff import plan_policies, stale_states
from controller.xfrm.model import XfrmPlan, XfrmPolicy, XfrmState, XfrmTemplate

R = 0x534D0001
REQUIRED = (XfrmTemplate(R, "required"),)
USE = (XfrmTemplate(R, "use"),)

OUT = XfrmPolicy("10.0.0.5/32", "10.0.0.0/16", "out", 8016, templates=REQUIRED)
IN = XfrmPolicy("10.0.0.0/16", "10.0.0.5/32", "in", 8016, templates=REQUIRED)
BYPASS = XfrmPolicy("10.0.0.5/32", "10.0.0.10/32", "out", 7000)


def read(policy: XfrmPolicy, index: int) -> XfrmPolicy:
    """The policy as the kernel would return it (with its index)."""
    return replace(policy, index=index)


def test_nothing_to_do_when_kernel_matches() -> None:
    actual = frozenset({read(OUT, 1), read(IN, 2), read(BYPASS, 3)})
    assert plan_policies(frozenset({OUT, IN, BYPASS}), actual).empty


def test_missing_policies_are_added() -> None:
    plan = plan_policies(frozenset({OUT, IN}), frozenset({read(OUT, 1)}))
    assert plan == XfrmPlan(add=(IN,))


def test_policies_no_longer_desired_are_deleted_by_their_kernel_handle() -> None:
    stale = read(BYPASS, 9)
    plan = plan_policies(frozenset({OUT}), frozenset({read(OUT, 1), stale}))
    assert plan == XfrmPlan(delete=(stale,))
    assert plan.delete[0].index == 9


@pytest.mark.parametrize(
    "changed",
    [
        XfrmPolicy(OUT.src, OUT.dst, "out", 8016, templates=USE),  # Required -> Optional
        XfrmPolicy(OUT.src, OUT.dst, "out", 8008, templates=REQUIRED),  # priority
        XfrmPolicy(OUT.src, OUT.dst, "out", 8016, templates=(XfrmTemplate(R + 1),)),  # reqid
        XfrmPolicy(OUT.src, OUT.dst, "out", 7016),  # protect -> bypass
    ],
    ids=["level", "priority", "reqid", "to-bypass"],
)
def test_same_key_with_other_contents_is_updated_in_place(changed: XfrmPolicy) -> None:
    plan = plan_policies(frozenset({changed}), frozenset({read(OUT, 1)}))
    assert plan == XfrmPlan(update=(changed,))


def test_duplicate_owned_policies_on_one_key_are_reduced_to_the_right_one() -> None:
    wrong = read(XfrmPolicy(OUT.src, OUT.dst, "out", 8001, templates=USE), 4)
    right = read(OUT, 7)
    plan = plan_policies(frozenset({OUT}), frozenset({wrong, right}))
    assert plan == XfrmPlan(delete=(wrong,))


def test_duplicates_none_right_update_one_and_delete_the_others() -> None:
    first = read(XfrmPolicy(OUT.src, OUT.dst, "out", 8001, templates=USE), 4)
    second = read(XfrmPolicy(OUT.src, OUT.dst, "out", 8002, templates=USE), 5)
    plan = plan_policies(frozenset({OUT}), frozenset({first, second}))
    assert plan == XfrmPlan(update=(OUT,), delete=(second,))


def test_removing_everything_deletes_every_owned_policy() -> None:
    actual = frozenset({read(OUT, 1), read(IN, 2), read(BYPASS, 3)})
    assert set(plan_policies(frozenset(), actual).delete) == actual


def test_steps_put_everything_in_before_taking_anything_out() -> None:
    old_protect = read(XfrmPolicy("10.0.0.5/32", "10.9.0.0/16", "out", 8016, templates=USE), 1)
    old_bypass = read(XfrmPolicy("10.0.0.5/32", "10.0.0.99/32", "out", 7000), 2)
    plan = XfrmPlan(add=(OUT, BYPASS), update=(IN,), delete=(old_protect, old_bypass))
    assert plan.steps() == [
        ("add", BYPASS),
        ("update", IN),  # equal priority: a stable order, adds and updates alike
        ("add", OUT),
        ("delete", old_bypass),
        ("delete", old_protect),
    ]


STATE = XfrmState(src="10.0.0.5", dst="10.0.0.6", spi=0xC1A2B3C4, reqid=R)


@pytest.mark.parametrize(
    ("state", "live", "stale"),
    [
        (STATE, ["c1a2b3c4"], False),
        (STATE, ["0xC1A2B3C4"], False),
        (STATE, ["0000beef"], True),
        (STATE, [], True),
        (XfrmState("10.0.0.5", "10.0.0.6", 0xC1A2B3C4, 0x42), [], False),  # foreign reqid
        (XfrmState("10.0.0.5", "10.0.0.6", 0xC1A2B3C4, R, larval=True), [], False),
        (XfrmState("10.0.0.5", "10.0.0.6", 0, R), [], False),  # acquire placeholder
    ],
    ids=["live", "live-0x-upper", "unknown", "charon-knows-none", "foreign", "larval", "spi-0"],
)
def test_stale_states_are_owned_keyed_sas_charon_does_not_know(
    state: XfrmState, live: list[str], stale: bool
) -> None:
    assert stale_states([state], live) == ([state] if stale else [])


@pytest.mark.parametrize("other", [OUT, read(OUT, 5), IN, read(IN, 5), BYPASS,
                                   replace(OUT, templates=USE)])
def test_contents_compare_without_the_kernel_handle_and_hashes_follow_equality(
    other: XfrmPolicy,
) -> None:
    kernel = read(OUT, 3)
    assert kernel.same_content(other) == (kernel.content == other.content)
    copy = replace(other, index=other.index)
    assert copy is not other
    assert copy == other
    assert hash(copy) == hash(other)
    assert len({kernel, read(OUT, 3), other}) == (1 if other == kernel else 2)
