"""The scenario steps: which ``"do"`` runs which handler with which fields, and parsing.

A scenario is a JSON list of objects ``{"do": KIND, field: value, ...}`` (``hack/lab run
--steps FILE``, ``LabOptions.steps``), documented in ``hack/labkit/lab/__init__.py``. Each kind
is a frozen dataclass, defined with its handler in the module of its family (``steps_core``,
``steps_cluster``, ``steps_identity``, ``steps_ops``, ``steps_mtu``); ``REGISTRY`` lists them
all. ``parse_steps`` turns the list into records or raises ``StepError`` naming the step's
index, its kind and the field (unknown kind or field, missing field, value of the wrong type).
The host parses before it boots the lab, so that a typo costs no boot; ``inside.Lab`` parses
again and runs each record's handler.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from hack.labkit.lab import steps_cluster as cluster
from hack.labkit.lab import steps_core as core
from hack.labkit.lab import steps_identity as identity
from hack.labkit.lab import steps_mtu as mtu
from hack.labkit.lab import steps_ops as ops

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from hack.labkit.lab.inside import Lab

S = TypeVar("S", bound="DataclassInstance")


class StepError(ValueError):
    """A scenario step that does not follow the documented format."""


@dataclass(frozen=True)
class StepKind(Generic[S]):
    """A kind of step: its record (a frozen dataclass) and the handler that runs it (what the
    handler returns is the step's ``detail`` in the report)."""

    record: type[S]
    handler: Callable[[Lab, S], object]

    def parse(self, prefix: str, raw: Mapping[str, Any]) -> S:
        fields = {f.name: f for f in dataclasses.fields(self.record)}
        unknown = sorted(set(raw) - set(fields) - {"do"})
        if unknown:
            raise StepError(f"{prefix}: unknown field {unknown[0]!r} "
                            f"(fields: {', '.join(fields) or 'none'})")
        hints = get_type_hints(self.record)  # evaluated: the families postpone annotations
        values = {}
        for name, field in fields.items():
            if name in raw:
                try:
                    values[name] = convert(hints[name], raw[name])
                except (TypeError, ValueError) as exc:
                    raise StepError(f"{prefix}: field {name!r}: {exc}") from None
            elif field.default is dataclasses.MISSING is field.default_factory:
                raise StepError(f"{prefix}: missing field {name!r}")
        return self.record(**values)

    def run(self, lab: Lab, step: object) -> object:
        assert isinstance(step, self.record), step
        return self.handler(lab, step)


REGISTRY: dict[str, StepKind[Any]] = {
    # the basics (steps_core)
    "probe": StepKind(core.Probe, core.probe),
    "flush_xfrm": StepKind(core.FlushXfrm, core.flush_xfrm),
    "restart_charon": StepKind(core.RestartCharon, core.restart_charon),
    "kill_agent": StepKind(core.KillAgent, core.kill_agent),
    "start_agent": StepKind(core.StartAgent, core.start_agent),
    "write_policy": StepKind(core.WritePolicy, core.write_policy),
    "wait_ready": StepKind(core.WaitReady, core.wait_ready),
    "wait_policies": StepKind(core.WaitPolicies, core.wait_policies),
    "wait_sas": StepKind(core.WaitSas, core.wait_sas),
    "wait_one_sa_per_peer": StepKind(core.WaitOneSaPerPeer, core.wait_one_sa_per_peer),
    "wait_status": StepKind(core.WaitStatus, core.wait_status),
    "snapshot": StepKind(core.Snapshot, core.snapshot),
    "sleep": StepKind(core.Sleep, core.sleep),
    "measure_agents": StepKind(core.MeasureAgents, core.measure_agents),
    "measure_pass": StepKind(core.MeasurePass, core.measure_pass),
    # cluster mode (steps_cluster)
    "apply": StepKind(cluster.Apply, cluster.apply),
    "delete": StepKind(cluster.Delete, cluster.delete),
    "get": StepKind(cluster.Get, cluster.get),
    "wait_policy": StepKind(cluster.WaitPolicy, cluster.wait_policy),
    "wait_gone": StepKind(cluster.WaitGone, cluster.wait_gone),
    "kubectl": StepKind(cluster.Kubectl, cluster.kubectl),
    "label_node": StepKind(cluster.LabelNode, cluster.label_node),
    "owned_policies": StepKind(cluster.OwnedPolicies, cluster.owned_policies),
    "wait_certificates": StepKind(cluster.WaitCertificates, cluster.wait_certificates),
    # identities and trust (steps_identity)
    "start_stream": StepKind(identity.StartStream, identity.start_stream),
    "stop_stream": StepKind(identity.StopStream, identity.stop_stream),
    "wait_authorities": StepKind(identity.WaitAuthorities, identity.wait_authorities),
    "peer_cas": StepKind(identity.PeerCas, identity.peer_cas),
    "impostor": StepKind(identity.Impostor, identity.impostor),
    # operations (steps_ops)
    "metrics": StepKind(ops.Metrics, ops.metrics),
    "gentle_shutdown": StepKind(ops.GentleShutdown, ops.gentle_shutdown),
    # MTU (steps_mtu)
    "mtu": StepKind(mtu.Mtu, mtu.mtu),
}


def parse_step(index: int, raw: object) -> object:
    """One step's JSON object as the record of its kind."""
    if not isinstance(raw, dict):
        raise StepError(f'step {index}: expected an object with "do", got {raw!r}')
    name = raw.get("do")
    kind = REGISTRY.get(name) if isinstance(name, str) else None
    if kind is None:
        raise StepError(f'step {index}: unknown "do": {name!r} '
                        f"(known: {', '.join(sorted(REGISTRY))})")
    return kind.parse(f"step {index} ({name})", raw)


def parse_steps(raw: object) -> list[object]:
    """A scenario (the JSON list) as records, in order."""
    if not isinstance(raw, list):
        raise StepError(f"the steps must be a list, got {type(raw).__name__}")
    return [parse_step(index, item) for index, item in enumerate(raw)]


_SCALARS: dict[object, tuple[type[Any] | tuple[type[Any], ...], str]] = {
    str: (str, "a string"),
    int: (int, "an integer"),
    float: ((int, float), "a number"),  # kept as given: 10 stays 10, as it was before
    bool: (bool, "true or false"),
}


def convert(hint: object, value: object) -> Any:
    """A JSON value as a field of type ``hint`` (lists become tuples), or TypeError/ValueError
    saying what was expected."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):  # X | None
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(inner, value)
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(convert(args[0], v) for v in value)
        if len(value) != len(args):
            raise ValueError(f"expected a list of {len(args)}, got {value!r}")
        return tuple(convert(a, v) for a, v in zip(args, value, strict=True))
    if origin is Mapping:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {value!r}")
        return {convert(args[0], k): convert(args[1], v) for k, v in value.items()}
    accepted, expected = _SCALARS[hint]
    # bool is an int in Python, never in a step
    if not isinstance(value, accepted) or (isinstance(value, bool) and hint is not bool):
        raise TypeError(f"expected {expected}, got {value!r}")
    return value
