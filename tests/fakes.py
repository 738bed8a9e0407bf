"""In-memory stand-ins for charon and the kernel's xfrm state: the only fakes of the data plane.

Every test that does not talk to the real charon or kernel uses these, and so does
``hack/bench-scale`` (which replaces each simulated node's data plane and nothing else). They
behave as the real ones do where the product relies on it, and the integration tier checks
those behaviours against the real thing (``tests/integration/test_vici_charon.py``: a
connection's certificates stay loaded, clear-creds drops certificates and keys loaded over
VICI but keeps authorities, ``initiate`` of an unknown connection is refused).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.models.node import SecurityAssociation
from controller.strongswan.diff import (
    ActualCharon,
    CharonPlan,
    embedded_certs,
    owned_after,
    plan_changes,
)
from controller.strongswan.render import PEER_SEPARATOR, DesiredCharon, cert_name, policy_of_conn
from controller.xfrm import XfrmPlan, XfrmPolicy, XfrmState


class CharonRefusedError(RuntimeError):
    """What the real adapter raises when charon refuses a command (``CharonError``)."""


@dataclass
class FakeCharon:
    """charon as the agent reaches it over VICI (the ``CharonPort`` of the reconcile pass).

    ``sas`` are what ``list_sas`` reports; tests set them. With ``establish``, every loaded
    per-peer connection reports an installed CHILD_SA instead: a working data plane, for the
    scale benchmark. ``down`` refuses every call (no socket); ``restart()`` is a new charon
    process, which holds nothing.
    """

    instance: str = "charon-1"
    conns: dict[str, str | None] = field(default_factory=dict)
    remotes: dict[str, str] = field(default_factory=dict)  # connection -> its peer address
    children: dict[str, list[str]] = field(default_factory=dict)  # connection -> its children
    cred_certs: set[str] = field(default_factory=set)
    authority_certs: dict[str, str] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    owned: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    plans: list[CharonPlan] = field(default_factory=list)
    sas: list[SecurityAssociation] = field(default_factory=list)
    initiated: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    terminated_children: list[str] = field(default_factory=list)
    down: bool = False
    establish: bool = False
    # with ``establish``: the per-peer connections whose SA is up (None: every loaded one). In a
    # real mesh a link gets its SA once both ends enforce the policy (one initiates then);
    # the scale benchmark sets it from the slices' ``ready`` flags
    up: frozenset[str] | None = None
    restarts: int = 0
    reads: int = 0  # read_actual calls (each is four VICI calls on a real charon)

    def _up(self) -> None:
        if self.down:
            raise ConnectionRefusedError("no charon at the VICI socket")

    def restart(self) -> None:
        """A new charon process: no connections, credentials or SAs of the old one."""
        self.restarts += 1
        self.instance = f"charon-{self.restarts + 1}"
        self.conns.clear()
        self.remotes.clear()
        self.children.clear()
        self.cred_certs.clear()
        self.authority_certs.clear()
        self.keys.clear()
        self.owned = (frozenset(), frozenset())
        self.sas.clear()

    # -- reading -------------------------------------------------------------------------------
    def read_actual(self) -> ActualCharon:
        self._up()
        self.reads += 1
        return self._actual()

    def _actual(self) -> ActualCharon:
        return ActualCharon(
            charon_id=self.instance,
            conns=dict(self.conns),
            certs=frozenset(self.cred_certs | set(self.authority_certs.values())),
            keys=frozenset(self.keys),
            authorities=frozenset(self.authority_certs),
            owned_certs=self.owned[0],
            owned_keys=self.owned[1],
        )

    def list_sas(self) -> list[SecurityAssociation]:
        self._up()
        if not self.establish:
            return list(self.sas)
        return [
            SecurityAssociation(
                policy=policy_of_conn(name) or "", connection=name, ike_id=str(index),
                child=child, peer=self.remotes.get(name, ""), ike_state="ESTABLISHED",
                state="INSTALLED",
            )
            for index, name in enumerate(sorted(self.conns), start=1)
            if PEER_SEPARATOR in name and (self.up is None or name in self.up)
            for child in self.children.get(name) or [name]
        ]

    def charon_id(self) -> str:
        self._up()
        return self.instance

    # -- writing -------------------------------------------------------------------------------
    def apply(self, plan: CharonPlan) -> None:
        self._up()
        before = self._actual()
        self.plans.append(plan)
        if plan.clear_creds:
            self.cred_certs.clear()
            self.keys.clear()
        for name in plan.unload_conns:
            self.conns.pop(name, None)
            self.remotes.pop(name, None)
            self.children.pop(name, None)
            self.sas = [sa for sa in self.sas if sa.connection != name]
        self.keys -= set(plan.unload_keys)
        for name in plan.unload_authorities:
            self.authority_certs.pop(name, None)
        for name, der in plan.load_authorities.items():
            self.authority_certs[name] = cert_name(der)
        self.cred_certs |= set(plan.load_certs)
        self.keys |= set(plan.load_keys)
        for name, body in plan.load_conns.items():
            self.conns[name] = plan.fingerprints.get(name)
            self.remotes[name] = str((body.get("remote_addrs") or [""])[0])
            self.children[name] = list(body.get("children") or {})
            self.cred_certs |= embedded_certs(body)
        # as the adapter does: a reset catch-all's SAs are closed; others stay up
        self.sas = [sa for sa in self.sas if sa.connection not in plan.reset_conns]
        self.owned = owned_after(plan, before)

    def initiate(self, connection: str, child: str | None = None) -> None:
        self._up()
        name = child or connection
        if connection not in self.conns or name not in (self.children.get(connection) or
                                                        [connection]):
            raise CharonRefusedError(f"no config named '{name}'")
        self.initiated.append(name)

    def terminate_ike(self, ike_id: str) -> None:
        self._up()
        self.terminated.append(ike_id)
        self.sas = [sa for sa in self.sas if sa.ike_id != ike_id]

    def terminate_child(self, child_id: str) -> None:
        self._up()
        self.terminated_children.append(child_id)
        self.sas = [sa for sa in self.sas if sa.child_id != child_id]

    def close(self) -> None:
        pass

    # -- for tests of the planner --------------------------------------------------------------
    def converge(self, want: DesiredCharon) -> CharonPlan:
        """Apply the plan towards ``want``; a second plan must then be empty."""
        plan = plan_changes(want, self.read_actual())
        self.apply(plan)
        again = plan_changes(want, self.read_actual())
        assert again.is_empty, again.summary()
        return plan


@dataclass
class FakeXfrm:
    """The strongmesh-owned part of a network namespace's xfrm state (the ``XfrmPort``)."""

    policies: dict[object, XfrmPolicy] = field(default_factory=dict)
    states: list[XfrmState] = field(default_factory=list)
    deleted: list[XfrmState] = field(default_factory=list)
    acq: int = 30  # the kernel's default net.core.xfrm_acq_expires
    applied: int = 0

    def read_policies(self) -> frozenset[XfrmPolicy]:
        return frozenset(self.policies.values())

    def apply(self, plan: XfrmPlan) -> None:
        self.applied += 1
        for policy in plan.delete:
            self.policies.pop(policy.key, None)
        for policy in (*plan.add, *plan.update):
            self.policies[policy.key] = policy

    def read_states(self) -> list[XfrmState]:
        return list(self.states)

    def delete_states(self, states: Iterable[XfrmState]) -> None:
        for state in states:
            self.states.remove(state)
            self.deleted.append(state)

    def set_acq_expires(self, seconds: int) -> None:
        self.acq = seconds

    def get_acq_expires(self) -> int:
        return self.acq
