"""In-memory object storage with a global resourceVersion and a bounded change history.

Like etcd behind kube-apiserver, every write gets the next revision of one global counter, and
the last ``history`` changes are kept so that a watch can resume from any of them; a watch from
an older revision must be answered ``410 Gone`` (``Expired``), which clients answer by listing
again. Stored objects are never mutated after they are stored (writers build new dicts), so
lists, history and watchers share them without copying.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One committed write, as a watch event."""

    type: str  # ADDED | MODIFIED | DELETED
    key: str
    obj: Obj
    revision: int
    previous: Obj | None = None


class ExpiredError(Exception):
    """The requested revision is older than the retained history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class Store:
    """Objects by resource key and (namespace, name); history; watch subscribers."""

    def __init__(self, history: int = 10_000, first_revision: int = 1000) -> None:
        self._revision = first_revision
        self._objects: dict[str, dict[tuple[str, str], Obj]] = defaultdict(dict)
        self._history: deque[Change] = deque()
        self._history_limit = history
        self._compacted = first_revision
        self._subscribers: dict[str, set[asyncio.Queue[Change | None]]] = defaultdict(set)
        self._uids: set[str] = set()

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def compacted(self) -> int:
        """Highest revision no longer in the history (a watch must start after it)."""
        return self._compacted

    def get(self, key: str, namespace: str, name: str) -> Obj | None:
        return self._objects[key].get((namespace, name))

    def objects(self, key: str, namespace: str | None = None) -> list[Obj]:
        """Objects sorted by namespace then name (etcd key order)."""
        objects = self._objects[key]
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return [objects[k] for k in keys]

    def exists(self, uid: str) -> bool:
        """Whether an object with this uid is stored (owner references point by uid)."""
        return uid in self._uids

    def count(self, key: str, namespace: str | None = None) -> int:
        if namespace is None:
            return len(self._objects[key])
        return sum(1 for ns, _ in self._objects[key] if ns == namespace)

    def resource_keys(self) -> list[str]:
        return [k for k, v in self._objects.items() if v]

    def write(self, change_type: str, key: str, obj: Obj) -> Obj:
        """Commit ``obj`` (ADDED/MODIFIED) or its removal (DELETED) at the next revision."""
        self._revision += 1
        meta = dict(obj.get("metadata", {}))
        meta["resourceVersion"] = str(self._revision)
        stored = {**obj, "metadata": meta}
        ident = (meta.get("namespace", ""), meta["name"])
        previous = self._objects[key].get(ident)
        if change_type == "DELETED":
            self._objects[key].pop(ident, None)
            self._uids.discard(meta.get("uid", ""))
        else:
            self._objects[key][ident] = stored
            self._uids.add(meta.get("uid", ""))
        change = Change(change_type, key, stored, self._revision, previous)
        self._history.append(change)
        if len(self._history) > self._history_limit:
            self._compacted = self._history.popleft().revision
        for queue in self._subscribers.get(key, ()):
            queue.put_nowait(change)
        return stored

    def changes_since(self, key: str, revision: int) -> list[Change]:
        """Changes of ``key`` after ``revision``; ExpiredError if some were already dropped."""
        if revision < self._compacted:
            raise ExpiredError(revision, self._compacted + 1)
        if not self._history or revision >= self._history[-1].revision:
            return []
        # Newest first until the requested revision: cost grows with the changes to replay.
        replay: list[Change] = []
        for change in reversed(self._history):
            if change.revision <= revision:
                break
            if change.key == key:
                replay.append(change)
        replay.reverse()
        return replay

    def subscribe(self, key: str) -> asyncio.Queue[Change | None]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._subscribers[key].add(queue)
        return queue

    def close_watches(self) -> None:
        """Wake every watcher with the end-of-stream marker (server shutdown)."""
        for queues in self._subscribers.values():
            for queue in queues:
                queue.put_nowait(None)

    def unsubscribe(self, key: str, queue: asyncio.Queue[Change | None]) -> None:
        self._subscribers[key].discard(queue)
