"""Watches on exactly the Secrets that policies reference, each by name in its namespace.

Not a cluster-wide Secret watch: the chart grants the operator get/list/watch on the named
credential Secrets only (``resourceNames``, which Kubernetes honours for list/watch when the
request carries ``fieldSelector=metadata.name=<name>``), and an operator has no business
reading every Secret of the cluster. One ``Reflector`` per referenced Secret, started and
stopped as policies come, change and go; every change re-validates the policies using it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from controller.kubeapi import KubeClient, Reflector, selector
from controller.operator.records import SecretKey


class SecretWatches:
    def __init__(
        self, client: KubeClient, on_secret: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self._client = client
        self._on_secret = on_secret
        self._watches: dict[SecretKey, tuple[Reflector, asyncio.Task[None]]] = {}

    def keys(self) -> set[SecretKey]:
        return set(self._watches)

    def follow(self, wanted: set[SecretKey]) -> None:
        """Watch exactly ``wanted`` (call inside the running loop)."""
        for key in set(self._watches) - wanted:
            _, task = self._watches.pop(key)
            task.cancel()
        for key in sorted(wanted - set(self._watches)):
            namespace, name = key
            reflector = Reflector(
                self._client, f"/api/v1/namespaces/{namespace}/secrets",
                lambda key=key: self._changed(key),  # type: ignore[misc]
                field_selector=selector(**{"metadata.name": name}),
                relevant=lambda obj: obj.get("data"),
            )
            self._watches[key] = (reflector, asyncio.create_task(reflector.run()))

    def _changed(self, key: SecretKey) -> None:
        entry = self._watches.get(key)
        if entry is None:
            return
        namespace, name = key
        secret = entry[0].items.get(name)
        if secret is None:
            self._on_secret("DELETED", {"metadata": {"name": name, "namespace": namespace}})
        else:
            self._on_secret("MODIFIED", secret)

    async def close(self) -> None:
        tasks = [task for _, task in self._watches.values()]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
