"""The agent loop's xfrm watcher against the kernel: a policy change in its network namespace
(someone flushed or added policies) triggers a pass. The rest of the loop's triggers are
tested without a kernel in tests/unit/test_agent_loop.py, whose harness this reuses."""

from __future__ import annotations

import os
import shutil
import subprocess

from controller.agent.loop import open_policy_events
from controller.xfrm.kernel import network_namespace
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
