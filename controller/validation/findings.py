"""Findings: what validation reports, one problem per object, each naming its field path.

Every check in this package returns findings instead of raising, so that one pass reports every
problem of a manifest (an operator fixing a policy should not discover problems one at a time).
``severity`` says what the caller must do: ``error`` makes the object unusable, ``warning`` and
``info`` are advice, ``note`` says something was not checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info", "note"]


@dataclass(frozen=True)
class Finding:
    """One problem, located by a field path such as ``spec.ike.proposals[0]`` or ``ca.crt``."""

    severity: Severity
    path: str
    message: str
    # A stable machine-readable name of the check (e.g. "proposal.unknown-keyword"), for JSON
    # output and condition reasons. Not part of equality: the message and path are the contract.
    code: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def error(path: str, message: str, code: str = "") -> Finding:
    return Finding("error", path, message, code)


def warning(path: str, message: str, code: str = "") -> Finding:
    return Finding("warning", path, message, code)


def info(path: str, message: str, code: str = "") -> Finding:
    return Finding("info", path, message, code)


def note(path: str, message: str, code: str = "") -> Finding:
    return Finding("note", path, message, code)


def has_errors(findings: Iterable[Finding]) -> bool:
    """Whether any finding makes the validated object unusable."""
    return any(f.severity == "error" for f in findings)


def join_path(base: str, part: str | int) -> str:
    """Extend a field path: ``join_path("spec", "ike")`` and ``join_path("spec.x", 0)``."""
    if isinstance(part, int):
        return f"{base}[{part}]"
    return f"{base}.{part}" if base else part
