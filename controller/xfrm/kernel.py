"""The kernel I/O of the xfrm side: read owned policies and states, apply a plan.

Talks NETLINK_XFRM directly (``socket`` + ``struct``, no new dependency): reading every policy
is one dump, applying a plan is one request per change, no process is spawned. Everything it
returns or touches is owned by strongmesh (priority bands for policies, reqid band for states);
foreign kernel objects are never modified, and a foreign policy that holds the key of one of
ours is reported (:class:`XfrmApplyError`) rather than overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterable, Iterator

from controller.xfrm import netlink as nl
from controller.xfrm.model import XfrmApplyError, XfrmPlan, XfrmPolicy, XfrmState
from controller.xfrm.sysctl import read_acq_expires, write_acq_expires

LOG = logging.getLogger(__name__)
NETLINK_XFRM = 6
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def network_namespace(path: str | None) -> Iterator[None]:
    """Run the block with the calling thread inside another network namespace.

    Sockets and /proc/sys/net files opened inside stay bound to that namespace after the
    thread has switched back. ``path``: ``/run/netns/NAME``, a bare ``NAME`` or None (stay).
    """
    if path is None:
        yield
        return
    import ctypes  # only here: the agent itself runs inside its namespace and never needs it

    target = path if "/" in path else f"/run/netns/{path}"
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(target, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"setns({target}): {os.strerror(code)}")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail back
                code = ctypes.get_errno()
                raise OSError(code, f"setns back: {os.strerror(code)}")
    finally:
        os.close(own)


class Xfrm:
    """xfrm policies and states of one network namespace (by default the process's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        with network_namespace(netns):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0
        # the kernel-assigned port id, sent in every request: the change notifications carry
        # it back, so the agent's watcher skips the changes the agent made itself
        self.portid: int = self._sock.getsockname()[0]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Xfrm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- netlink plumbing ---------------------------------------------------------------

    def _send(self, msg_type: int, flags: int, payload: bytes) -> int:
        self._seq += 1
        self._sock.send(nl.message(msg_type, flags | nl.NLM_F_REQUEST, self._seq, payload,
                                   self.portid))
        return self._seq

    def _dump(self, msg_type: int, payload: bytes) -> list[nl.Message]:
        seq = self._send(msg_type, nl.NLM_F_DUMP, payload)
        found: list[nl.Message] = []
        while True:
            for msg in nl.parse_messages(self._sock.recv(1 << 20)):
                if msg.seq != seq:
                    continue
                if msg.type == nl.NLMSG_DONE:
                    return found
                if msg.type == nl.NLMSG_ERROR:
                    code = nl.error_code(msg.body)
                    if code:
                        raise nl.NetlinkError(code, f"dump of type {msg_type:#x}")
                    return found
                found.append(msg)

    def _call(self, msg_type: int, flags: int, payload: bytes, what: str) -> None:
        seq = self._send(msg_type, flags | nl.NLM_F_ACK, payload)
        while True:
            for msg in nl.parse_messages(self._sock.recv(65536)):
                if msg.seq == seq and msg.type == nl.NLMSG_ERROR:
                    code = nl.error_code(msg.body)
                    if code:
                        raise nl.NetlinkError(code, what)
                    return

    # --- policies -----------------------------------------------------------------------

    def read_policies(self) -> frozenset[XfrmPolicy]:
        """The owned policies (priority bands) of the namespace; foreign ones are skipped."""
        policies = (
            nl.unpack_policy(m.body)
            for m in self._dump(nl.XFRM_MSG_GETPOLICY, nl.policy_dump_request())
            if m.type == nl.XFRM_MSG_NEWPOLICY
        )
        return frozenset(p for p in policies if p is not None and p.owned)

    def add_policy(self, policy: XfrmPolicy) -> None:
        """Add exclusively: EEXIST means the key is held (by a foreign policy, see apply)."""
        flags = nl.NLM_F_CREATE | nl.NLM_F_EXCL
        self._call(nl.XFRM_MSG_NEWPOLICY, flags, nl.pack_policy_info(policy), policy.describe())

    def update_policy(self, policy: XfrmPolicy) -> None:
        self._call(nl.XFRM_MSG_UPDPOLICY, 0, nl.pack_policy_info(policy), policy.describe())

    def delete_policy(self, policy: XfrmPolicy) -> None:
        self._call(nl.XFRM_MSG_DELPOLICY, 0, nl.pack_policy_id(policy), policy.describe())

    def apply(self, plan: XfrmPlan) -> None:
        """Apply a plan in :meth:`XfrmPlan.steps` order (never opens a cleartext window).

        A step the kernel refuses is logged and skipped, the rest still applied; at the end
        :class:`XfrmApplyError` lists what failed. Refusing to add over an existing key is
        how a foreign policy with our selector is left alone.
        """
        failures: list[str] = []
        for op, policy in plan.steps():
            if not policy.owned:
                failures.append(f"refusing to {op} a policy outside our bands: {policy.describe()}")
                LOG.error("%s", failures[-1])
                continue
            try:
                if op == "add":
                    self.add_policy(policy)
                elif op == "update":
                    self.update_policy(policy)
                else:
                    self.delete_policy(policy)
            except nl.NetlinkError as error:
                if op == "add" and error.errno == errno.EEXIST:
                    message = (
                        "a policy that strongmesh does not own has the selector and direction "
                        f"of {policy.describe()}; left it alone, ours is not installed"
                    )
                elif op == "delete" and error.errno == errno.ENOENT:
                    LOG.debug("policy already gone: %s", policy.describe())
                    continue
                else:
                    message = f"{op} failed: {error}"
                failures.append(message)
                LOG.error("%s", message)
            else:
                LOG.debug("xfrm policy %s: %s", op, policy.describe())
        if failures:
            raise XfrmApplyError(failures)

    # --- states -------------------------------------------------------------------------

    def read_states(self) -> list[XfrmState]:
        """The owned states (reqid band) of the namespace; foreign ones are skipped."""
        states = (
            nl.unpack_state(m.body)
            for m in self._dump(nl.XFRM_MSG_GETSA, nl.state_dump_request())
            if m.type == nl.XFRM_MSG_NEWSA
        )
        return [s for s in states if s is not None and s.owned]

    def delete_states(self, states: Iterable[XfrmState]) -> None:
        """Delete owned states (stale SAs); foreign ones are refused, vanished ones ignored."""
        failures: list[str] = []
        for state in states:
            if not state.owned:
                failures.append(f"refusing to delete a foreign state: {state.describe()}")
                LOG.error("%s", failures[-1])
                continue
            try:
                self._call(nl.XFRM_MSG_DELSA, 0, nl.pack_state_id(state), state.describe())
            except nl.NetlinkError as error:
                if error.errno == errno.ESRCH or error.errno == errno.ENOENT:
                    continue
                failures.append(f"delete failed: {error}")
                LOG.error("%s", failures[-1])
            else:
                LOG.debug("xfrm state deleted: %s", state.describe())
        if failures:
            raise XfrmApplyError(failures)

    # --- sysctl -------------------------------------------------------------------------

    def set_acq_expires(self, seconds: int) -> None:
        with network_namespace(self._netns):
            write_acq_expires(seconds)

    def get_acq_expires(self) -> int:
        with network_namespace(self._netns):
            return read_acq_expires()
