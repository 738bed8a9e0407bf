"""Desired vs actual, decided without touching the kernel. Pure.

The replace logic is explicit (as in Cilium's ipsec code), per kernel key (selector, direction,
mark, if_id):
- desired and an equal owned policy present: nothing;
- desired and an owned policy with the same key but other contents (priority, template,
  level): update in place (``XFRM_MSG_UPDPOLICY`` swaps atomically, no window);
- desired, key not among owned policies: add (``XFRM_MSG_NEWPOLICY``, exclusive, so that a
  foreign policy holding the key is reported instead of overwritten);
- owned, not desired: delete. Several owned policies with one key (only possible if someone
  else wrote into our band) are reduced to one.
Only owned policies (priority bands) ever reach ``actual``; foreign ones are invisible here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable

from controller.xfrm.model import PolicyKey, XfrmPlan, XfrmPolicy, XfrmState


def plan_policies(desired: frozenset[XfrmPolicy], actual: frozenset[XfrmPolicy]) -> XfrmPlan:
    """The changes that turn the owned policies ``actual`` into ``desired``."""
    by_key: defaultdict[PolicyKey, list[XfrmPolicy]] = defaultdict(list)
    for policy in sorted(actual, key=lambda p: p.index):
        by_key[policy.key].append(policy)

    add: list[XfrmPolicy] = []
    update: list[XfrmPolicy] = []
    delete: list[XfrmPolicy] = []
    wanted = {policy.key: policy.content for policy in desired}
    for key, want in wanted.items():
        present = by_key.pop(key, [])
        if not present:
            add.append(want)
            continue
        keep = next((p for p in present if p.same_content(want)), present[0])
        delete.extend(p for p in present if p is not keep)
        if not keep.same_content(want):
            update.append(want)
    for leftovers in by_key.values():
        delete.extend(leftovers)
    return XfrmPlan(add=tuple(add), update=tuple(update), delete=tuple(delete))


def _spi(text: str) -> int:
    return int(text.strip().lower().removeprefix("0x"), 16)


def stale_states(states: Iterable[XfrmState], live_spis: Collection[str]) -> list[XfrmState]:
    """Owned SAs that charon no longer knows (left behind by a crashed charon).

    ``live_spis``: the SPIs charon reports (VICI ``list-sas`` ``spi-in``/``spi-out``, hex with
    or without ``0x``). Larval states (SPIs allocated during a negotiation, kernel acquires)
    are never stale: charon may be negotiating them right now, and they expire by themselves.
    """
    live = {_spi(s) for s in live_spis}
    return [s for s in states if s.owned and not s.larval and s.spi != 0 and s.spi not in live]
