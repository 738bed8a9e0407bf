"""The kernel side of strongmesh: xfrm policies (desired vs actual) and owned state.

One file per responsibility:
- ``model``: value types (XfrmPolicy, XfrmTemplate, XfrmState, XfrmPlan). Pure.
- ``desired``: IPsecPolicies selecting the node -> the xfrm policies it needs. Pure.
- ``diff``: desired vs actual owned policies -> plan; stale owned SAs. Pure.
- ``netlink``: NETLINK_XFRM message encoding and decoding. Pure.
- ``kernel``: the I/O (read owned policies/states, apply a plan, delete states, sysctl); import
  it by name (``controller.xfrm.kernel``): the package itself is pure.
- ``sysctl``: ``net.core.xfrm_acq_expires``.

strongmesh owns every xfrm policy of its connections (charon installs none), so enforcement
holds whatever charon does: Required traffic without an SA is dropped (and the kernel asks for
one), also while charon is down or restarting.
"""

from controller.xfrm.desired import ProtectEntry, acq_expires_for, desired_policies
from controller.xfrm.diff import plan_policies, stale_states
from controller.xfrm.model import XfrmApplyError, XfrmPlan, XfrmPolicy, XfrmState, XfrmTemplate

__all__ = [
    "ProtectEntry",
    "XfrmApplyError",
    "XfrmPlan",
    "XfrmPolicy",
    "XfrmState",
    "XfrmTemplate",
    "acq_expires_for",
    "desired_policies",
    "plan_policies",
    "stale_states",
]
