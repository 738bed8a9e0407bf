"""Which resource types are served, by group, version and plural.

Built-ins are fixed; custom resource types come and go with CustomResourceDefinition objects
(loaded from a directory at start-up or created through the API, like ``kubectl apply -f
crds/`` or ``helm install`` would).
"""

from __future__ import annotations

import re
from typing import Any

from controller.apiserver.resources import BUILTIN_GROUPS, BUILTINS, ResourceType, from_crd


class Registry:
    """Served resource types; discovery and routing read it."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}
        self._group_order: list[str] = list(BUILTIN_GROUPS)
        for rt in BUILTINS:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_key(self, key: str) -> ResourceType | None:
        """The storage version's type for a storage key (``group/plural``)."""
        candidates = [rt for rt in self._types.values() if rt.key == key]
        for rt in candidates:
            if rt.storage_version:
                return rt
        return candidates[0] if candidates else None

    def add_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        name = crd["metadata"]["name"]
        self.remove_crd(name)
        types = from_crd(crd)
        self._crd_types[name] = types
        for rt in types:
            self._types[(rt.group, rt.version, rt.plural)] = rt
            if rt.group not in self._group_order:
                self._group_order.append(rt.group)
        return types

    def remove_crd(self, name: str) -> list[ResourceType]:
        types = self._crd_types.pop(name, [])
        for rt in types:
            self._types.pop((rt.group, rt.version, rt.plural), None)
        return types

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions) in discovery order; versions sorted newest-looking first."""
        out: list[tuple[str, list[str]]] = []
        for group in self._group_order:
            versions = sorted(
                {rt.version for rt in self._types.values() if rt.group == group},
                key=_version_priority,
            )
            if versions:
                out.append((group, versions))
        return out

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return sorted(
            (rt for rt in self._types.values() if rt.group == group and rt.version == version),
            key=lambda rt: rt.plural,
        )


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first."""
    match = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not match:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0))
