"""The agent loop's xfrm watcher against the kernel: a policy change in its network namespace
(someone flushed or added policies) triggers a pass. The rest of the loop's triggers are
tested without a kernel in tests/unit/test_agent_loop.py, whose harness this reuses."""

from __future__ import annotations

import os
import select
import shutil
import subprocess

from controller.agent.loop import open_policy_events
from controller.xfrm import XfrmPlan, XfrmPolicy
from controller.xfrm import netlink as nl
from controller.xfrm.kernel import Xfrm, network_namespace
from tests.charon import netns
from tests.environment import missing
from tests.unit.test_agent_loop import running_loop


def require_netns() -> None:
    if os.geteuid() != 0:
        missing("needs root (network namespaces)")
    if shutil.which("ip") is None:
        missing("needs iproute2")


async def test_xfrm_policy_change_in_the_namespace_triggers_a_pass() -> None:
    require_netns()
    with netns() as name:
        with network_namespace(name):
            events = open_policy_events()
        with events:
            async with running_loop(policy_events=events) as agent:
                first = await agent.source.next_wait()
                subprocess.run(
                    ["ip", "-n", name, "xfrm", "policy", "add", "src", "10.9.0.1/32",
                     "dst", "10.9.0.2/32", "dir", "out", "priority", "7000", "action", "allow"],
                    check=True,
                )
                await agent.source.next_wait()
                assert agent.stats.passes == 2
            assert first.outcome.cancelled()  # the kernel's event, not the inputs, woke it


def _notification(events: object) -> bytes:
    import socket

    assert isinstance(events, socket.socket)
    ready, _, _ = select.select([events], [], [], 5.0)
    assert ready, "no notification within 5 s"
    return events.recv(1 << 16)


def test_the_kernel_tells_the_agents_own_policy_changes_from_others() -> None:
    """What the watcher relies on to skip the agent's own changes: a notification carries the
    port id of the request that made the change."""
    require_netns()
    with netns() as name:
        with network_namespace(name):
            events = open_policy_events()
        events.setblocking(True)
        with events, Xfrm(name) as xfrm:
            xfrm.apply(XfrmPlan(add=(XfrmPolicy("10.9.0.1/32", "10.9.0.2/32", "out", 7000),)))
            ours = _notification(events)
            assert [m.type for m in nl.parse_messages(ours)] == [nl.XFRM_MSG_NEWPOLICY]
            assert not nl.changed_by_others(ours, xfrm.portid)
            subprocess.run(["ip", "-n", name, "xfrm", "policy", "flush"], check=True)
            theirs = _notification(events)
            assert nl.changed_by_others(theirs, xfrm.portid)
