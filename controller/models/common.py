"""Shared building blocks of the strongmesh API types.

Models accept the camelCase names of the Kubernetes API (aliases) and expose snake_case
attributes to Python. Unknown fields are rejected (``extra="forbid"``) so that a typo in a
manifest is an error naming the field, not a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "strongmesh.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Go-style duration as Kubernetes users write them ("90s", "4h", "1h30m").
DURATION_PATTERN = r"^([0-9]+(s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+)(s|m|h)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        json_schema_extra={"example": "1h30m"},
    ),
]


def duration_seconds(value: str) -> int:
    """Seconds in a duration such as ``1h30m`` (already checked against DURATION_PATTERN)."""
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


class ApiModel(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the Kubernetes API carries it (camelCase, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LabelSelectorRequirement(ApiModel):
    """One expression of a Kubernetes LabelSelector."""

    key: str = Field(description="The label key the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Values for In/NotIn; must be empty for Exists/DoesNotExist.",
    )


class LabelSelector(ApiModel):
    """A Kubernetes LabelSelector; an empty selector selects every node."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must carry, all of them."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Expressions a node's labels must all satisfy."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a node with these labels is selected (Kubernetes semantics)."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A condition in the Kubernetes API conventions' shape (metav1.Condition)."""

    type: str = Field(description="Condition type: Ready, CredentialsValid, Progressing, Degraded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why, for machines.")
    message: str = Field(default="", description="What happened, for people.")
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed from."
    )


class ObjectMeta(ApiModel):
    """The part of metav1.ObjectMeta that strongmesh reads; other fields pass through."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Object name.")
    generation: int | None = Field(default=None, description="Spec generation.")
    resource_version: str | None = Field(default=None, description="Opaque version.")
    uid: str | None = Field(default=None, description="Unique id.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
