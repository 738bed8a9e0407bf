"""The agent's VICI event listener against real charons: IKE failures counted, restarts survived.

Two charons in network namespaces on the host kernel (IKE works there, ESP does not, see
LAB-NOTES): the peer's certificate comes from a CA node-a does not trust, so node-a's IKE_SA
fails in state CONNECTING, which charon announces as ``ike-updown``. Rekeys are proven in the
kernel lab (``tests/lab/test_lab_metrics.py``), where CHILD_SAs exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import generate_latest

from controller.agent.events import EventListener, vici_subscription
from controller.facts import NodeFacts
from controller.metrics import AgentMetrics
from controller.ownership import reqid_for
from controller.strongswan.vici_client import Charon, socket_path
from tests.certs import make_ca
from tests.charon import charon_pair, issue_node
from tests.integration.test_vici_charon import converge, desired, policy, trigger_acquire


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_failed_negotiation_is_counted_and_the_listener_survives_a_charon_restart() -> None:
    metrics = AgentMetrics(read_stat=lambda: "")
    with charon_pair() as (a, b), Charon(a.charon.uri) as client_a, Charon(b.charon.uri) as cb:
        listener = EventListener(
            vici_subscription(socket_path(a.charon.uri)), metrics.observe_event,
            retry_seconds=0.2,
        )
        listener.start()
        try:
            assert _wait_for(lambda: listener.connections == 1)
            stranger = issue_node(make_ca("other CA"), "node-b")
            converge(client_a, desired(policy()))
            converge(cb, desired(policy(), creds=stranger,
                                 node=NodeFacts("node-b", (b.address,))))
            trigger_acquire(a, b.address, reqid_for("mesh", ()))
            assert _wait_for(
                lambda: "strongmesh_ike_failures_total 1.0"
                in generate_latest(metrics.registry).decode()
            ), generate_latest(metrics.registry).decode()
            a.charon.restart()
            assert _wait_for(lambda: listener.connections == 2), "did not reconnect"
        finally:
            listener.stop()
