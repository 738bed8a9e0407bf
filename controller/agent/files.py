"""Standalone mode: inputs from a policy file, status to a JSON file.

The policy file is multi-document YAML with IPsecPolicies and the Secrets they reference (the
same manifests ``kubectl apply`` takes), and optionally IPsecPeerSlice documents listing each
policy's peers (without them, every peer is reached through the catch-all trap); a node's own
entry there gives its pod networks (Tunnel mode) unless ``--pod-cidr`` does. Without an API
server there is no ``generation`` counter: a policy's generation is its
``metadata.generation`` when the file sets one, else 1.
The file is watched by (inode, mtime, size), so both in-place edits and atomic renames count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controller.agent.interfaces import AgentInputs, PolicyInput
from controller.facts import NodeFacts
from controller.models.node import IPsecNodeStatus

POLL_SECONDS = 0.5


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def inputs_from_documents(
    docs: list[Any], node: NodeFacts, labels: Mapping[str, str]
) -> AgentInputs:
    """The policies of a manifest list that select this node, with their Secrets. Pure."""
    from controller.agent.slices import peers_in_documents
    from controller.manifests import ManifestError, decode_secret, find_secret
    from controller.validation import validate_policy_body

    peers, errors = peers_in_documents(d for d in docs if isinstance(d, dict))
    if not node.pod_cidrs:  # the file lists every node's pod networks, this node's included
        own = {c for listed in peers.values() for p in listed if p.node == node.name
               for c in p.pod_cidrs}
        node = dataclasses.replace(node, pod_cidrs=tuple(sorted(own)))
    selected: list[PolicyInput] = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") != "IPsecPolicy":
            continue
        name = (doc.get("metadata") or {}).get("name", f"document {index + 1}")
        policy, findings = validate_policy_body(doc)
        if policy is None:
            problems = "; ".join(str(f) for f in findings if f.severity == "error")
            errors.append(f"policy {name}: invalid: {problems}")
            continue
        if not policy.spec.node_selector.matches(dict(labels)):
            continue
        ref = policy.spec.credentials.secret_ref
        if ref is None:
            errors.append(f"policy {name}: credentials.issuer needs the Kubernetes CSR API; "
                          "standalone agents take credentials.secretRef (per-node "
                          "certificates: hack/make-certs --node)")
            continue
        secret = find_secret(docs, ref.name, ref.namespace)
        data: Mapping[str, str] | None = None
        input_errors: tuple[str, ...] = ()
        if secret is not None:
            try:
                data = decode_secret(secret)
            except ManifestError as exc:
                input_errors = (f"Secret {ref.namespace}/{ref.name}: {exc}",)
                data = {}
        selected.append(
            PolicyInput(
                policy=policy,
                generation=int(policy.metadata.generation or 1),
                secret_data=data,
                input_errors=input_errors,
                peers=peers.get(policy.metadata.name, ()),
            )
        )
    return AgentInputs(node=node, node_labels=dict(labels), policies=tuple(selected),
                       errors=tuple(errors))


class FileInputSource:
    """``InputSource`` over a policy file; node facts come from a callable (addresses)."""

    def __init__(
        self,
        path: Path,
        node: Callable[[], NodeFacts],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self._node = node
        self._labels = dict(labels or {})
        self._seen = _stamp(path)

    async def snapshot(self) -> AgentInputs:
        node = self._node()
        self._seen = _stamp(self.path)
        try:
            from controller.manifests import load_documents

            docs = load_documents(str(self.path))
        except Exception as exc:  # unreadable or not YAML: keep the last good state
            return AgentInputs(node=node, node_labels=self._labels, errors=(str(exc),))
        return inputs_from_documents(list(docs), node, self._labels)

    async def wait_changed(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if _stamp(self.path) != self._seen:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(POLL_SECONDS, remaining))


class FileReporter:
    """``Reporter`` writing the node's status as JSON, atomically (write + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus
                     ) -> float | None:
        document = {
            "node": node.name,
            "addresses": list(node.addresses),
            "identity": identity,
            "status": status.to_api(),
        }
        text = json.dumps(document, indent=1, sort_keys=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        return None


class LogReporter:
    """``Reporter`` for standalone runs without ``--status-file``: one log line per change."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._last: str | None = None

    async def report(self, node: NodeFacts, identity: str, status: IPsecNodeStatus
                     ) -> float | None:
        summary = json.dumps(
            {
                "policies": [p.to_api() for p in status.policies],
                "sas": len(status.sas),
                "errors": status.errors,
            },
            sort_keys=True,
        )
        if summary != self._last:
            self._last = summary
            self._log(f"status of {node.name}: {summary}")
        return None
