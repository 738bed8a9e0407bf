"""What on a node is strongmesh's: recognised by number, never by guess.

strongmesh owns every xfrm policy it needs (charon's children use ``policies = no``), so that
enforcement survives charon restarts. Its xfrm policy priorities lie in two bands (bypass
below protect) and its reqids in one band; nothing outside them is ever touched. Pure.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection

# xfrm policy priorities: lower value = higher precedence. Bypass always beats protect.
BYPASS_BASE = 7000
PROTECT_BASE = 8000
BAND_SIZE = 1000

# reqids of our CHILD_SAs: "SM" in the upper 16 bits.
REQID_BASE = 0x534D0000
REQID_MASK = 0xFFFF


def is_owned_priority(priority: int) -> bool:
    return BYPASS_BASE <= priority < PROTECT_BASE + BAND_SIZE


def is_owned_reqid(reqid: int) -> bool:
    return reqid & ~REQID_MASK == REQID_BASE


def reqid_for(policy_name: str, taken: Collection[int]) -> int:
    """A stable reqid for a policy: crc32 of its name, probing past reqids already taken."""
    slot = zlib.crc32(policy_name.encode()) & REQID_MASK
    for step in range(REQID_MASK + 1):
        candidate = REQID_BASE | ((slot + step) & REQID_MASK)
        if candidate not in taken:
            return candidate
    raise RuntimeError("no free reqid in the strongmesh band")
