"""Value types of the kernel side: xfrm policies, templates, states and a change plan.

They describe kernel objects in the terms ``ip xfrm`` uses, normalised (networks in CIDR form
with host bits cleared), so that a policy rendered from an IPsecPolicy and the same policy read
back from the kernel compare equal. Pure data: no I/O, no netlink.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields, replace
from typing import Literal, NamedTuple

from controller.ownership import PROTECT_BASE, is_owned_priority, is_owned_reqid

Direction = Literal["in", "out", "fwd"]
Action = Literal["allow", "block"]
Level = Literal["required", "use"]
Mode = Literal["transport", "tunnel", "beet", "other"]

IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_COMP = 108
IPPROTO_ICMPV6 = 58
PROTO_NAMES = {IPPROTO_ESP: "esp", IPPROTO_AH: "ah", IPPROTO_COMP: "comp"}


@dataclass(frozen=True)
class XfrmTemplate:
    """One ``tmpl`` of a policy: which SA (by reqid) must (required) or may (use) apply."""

    reqid: int
    level: Level = "required"
    proto: int = IPPROTO_ESP
    mode: Mode = "transport"
    # Tunnel endpoints; empty means any (0.0.0.0 / ::), which is what transport mode uses.
    src: str = ""
    dst: str = ""

    def describe(self) -> str:
        proto = PROTO_NAMES.get(self.proto, str(self.proto))
        ends = f"src {self.src or 'any'} dst {self.dst or 'any'} " if self.src or self.dst else ""
        return f"tmpl {ends}proto {proto} mode {self.mode} reqid {self.reqid:#x} level {self.level}"


@dataclass(frozen=True)
class PortMatch:
    """An upper-layer port (or, for ICMP, the type/code) in a selector, with its mask."""

    value: int
    mask: int = 0xFFFF


class PolicyKey(NamedTuple):
    """What identifies a policy in the kernel: selector, direction, mark and if_id.

    The priority is NOT part of it, so a policy of ours and a foreign one with the same
    selector and direction are the same kernel object: adding ours fails with EEXIST.
    A tuple, hashed in C: a pass looks up thousands of keys.
    """

    src: str
    dst: str
    direction: Direction
    proto: int = 0
    sport: PortMatch | None = None
    dport: PortMatch | None = None
    mark: int = 0
    mark_mask: int = 0
    if_id: int = 0


@dataclass(frozen=True)
class XfrmPolicy:
    """An xfrm policy (``ip xfrm policy``), normalised.

    ``index`` is the kernel's handle for a policy read from it (0 for a desired policy). It
    takes part in equality so that two kernel policies never collapse in a set; compare
    contents with :meth:`content`.
    """

    src: str
    dst: str
    direction: Direction
    priority: int
    action: Action = "allow"
    templates: tuple[XfrmTemplate, ...] = ()
    proto: int = 0
    sport: PortMatch | None = None
    dport: PortMatch | None = None
    mark: int = 0
    mark_mask: int = 0
    if_id: int = 0
    index: int = field(default=0, repr=False)

    # Cached by hand, not with functools.cached_property: on Python 3.11 that takes one lock
    # shared by every instance, and the agent computes thousands of keys per pass in a
    # worker thread (a scale benchmark's worker spent 40% of its time waiting on it).
    @property
    def key(self) -> PolicyKey:
        cached: PolicyKey | None = self.__dict__.get("_key")
        if cached is None:
            cached = PolicyKey(
                src=self.src,
                dst=self.dst,
                direction=self.direction,
                proto=self.proto,
                sport=self.sport,
                dport=self.dport,
                mark=self.mark,
                mark_mask=self.mark_mask,
                if_id=self.if_id,
            )
            object.__setattr__(self, "_key", cached)
        return cached

    def __hash__(self) -> int:
        """Computed once per policy (cached by hand, as ``key``): a desired policy is memoised
        across passes and goes into a set on every one."""
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def content(self) -> XfrmPolicy:
        """The policy without its kernel handle: what desired-vs-actual compares."""
        return replace(self, index=0) if self.index else self

    def same_content(self, other: XfrmPolicy) -> bool:
        """``self.content == other.content``, without the copies (a pass compares thousands)."""
        return _content(self) == _content(other)

    @property
    def owned(self) -> bool:
        return is_owned_priority(self.priority)

    @property
    def is_bypass(self) -> bool:
        """Bypass = lets traffic pass without any SA (our bypass band)."""
        return self.action == "allow" and not self.templates

    @property
    def is_protect(self) -> bool:
        return self.priority >= PROTECT_BASE and bool(self.templates)

    def describe(self) -> str:
        """One line in ``ip xfrm policy`` words, for logs and error messages."""
        parts = [f"src {self.src} dst {self.dst}"]
        if self.proto:
            parts.append(f"proto {self.proto}")
        if self.sport:
            parts.append(f"sport {self.sport.value}")
        if self.dport:
            parts.append(f"dport {self.dport.value}")
        parts.append(f"dir {self.direction} priority {self.priority}")
        if self.mark or self.mark_mask:
            parts.append(f"mark {self.mark:#x}/{self.mark_mask:#x}")
        if self.if_id:
            parts.append(f"if_id {self.if_id:#x}")
        parts.append(f"action {self.action}")
        parts.extend(t.describe() for t in self.templates)
        return " ".join(parts)


# every field but the kernel handle, read into one tuple in C
_content = operator.attrgetter(*(f.name for f in fields(XfrmPolicy) if f.name != "index"))


@dataclass(frozen=True)
class XfrmState:
    """An xfrm state (SA), as far as ownership and removal need it.

    ``larval`` states have no keys yet: SPIs allocated by charon while it negotiates, or
    kernel acquires. They expire by themselves after ``xfrm_acq_expires``.
    """

    src: str
    dst: str
    spi: int
    reqid: int
    proto: int = IPPROTO_ESP
    mode: Mode = "transport"
    mark: int = 0
    mark_mask: int = 0
    if_id: int = 0
    larval: bool = False

    @property
    def owned(self) -> bool:
        return is_owned_reqid(self.reqid)

    def describe(self) -> str:
        proto = PROTO_NAMES.get(self.proto, str(self.proto))
        return (
            f"src {self.src} dst {self.dst} proto {proto} spi {self.spi:#010x} "
            f"reqid {self.reqid:#x} mode {self.mode}"
        )


@dataclass(frozen=True)
class XfrmPlan:
    """What to change so that the kernel's owned policies match the desired ones.

    ``update`` replaces an owned policy with the same key in place (atomic in the kernel);
    ``delete`` holds policies as read from the kernel (with their index).
    """

    add: tuple[XfrmPolicy, ...] = ()
    update: tuple[XfrmPolicy, ...] = ()
    delete: tuple[XfrmPolicy, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add or self.update or self.delete)

    def steps(self) -> list[tuple[Literal["add", "update", "delete"], XfrmPolicy]]:
        """The order of application, chosen so that no cleartext window ever opens.

        New and changed policies go in before anything is removed, bypass before protect (so
        that exempt traffic is never blocked by a newly arriving protect policy). Removals
        come last, bypass first and protect policies at the very end, so that while a plan
        is half-applied the kernel is at least as strict as before (fail closed).
        """

        def order(policy: XfrmPolicy) -> tuple[int, int, str]:
            return (0 if policy.is_bypass else 1, policy.priority, policy.describe())

        puts: list[tuple[Literal["add", "update", "delete"], XfrmPolicy]] = [
            *(("add", p) for p in self.add),
            *(("update", p) for p in self.update),
        ]
        puts.sort(key=lambda step: order(step[1]))
        deletes = sorted(self.delete, key=order)
        return [*puts, *(("delete", p) for p in deletes)]


class XfrmApplyError(Exception):
    """Some changes of a plan were refused; all others were applied. One line per failure."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures
