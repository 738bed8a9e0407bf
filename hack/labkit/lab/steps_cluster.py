"""The scenario's cluster-mode steps: objects through the lab's API server (``cluster.Api``),
``kubectl``, and waits for what the operator and the agents write there. Formats:
``hack/labkit/lab/__init__.py``; in any other mode these steps fail.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hack.labkit.lab.cluster import ApiError, condition, object_path, policy_certificates
from hack.labkit.lab.xfrm import owned_policies as count_owned_policies

if TYPE_CHECKING:
    from hack.labkit.lab.inside import Lab


@dataclass(frozen=True)
class Apply:
    file: str  # a ``--file NAME=PATH`` manifest


def apply(lab: Lab, step: Apply) -> list[str]:
    """Create or replace every object of the manifest (``kubectl apply``'s way)."""
    cluster = lab.require_cluster()
    return cluster.apply_documents(cluster.manifests(step.file))


@dataclass(frozen=True)
class ApiObject:
    """The fields that name an object (what ``get``, ``delete`` and ``wait_gone`` act on)."""

    name: str
    kind: str = "IPsecPolicy"
    namespace: str | None = None

    @property
    def path(self) -> str:
        return object_path(self.kind, self.name, self.namespace)


@dataclass(frozen=True)
class Delete(ApiObject):
    pass


def delete(lab: Lab, step: Delete) -> str:
    lab.require_cluster().api.delete(step.kind, step.name, step.namespace)
    return f"{step.kind}/{step.name} deleted"


@dataclass(frozen=True)
class Get(ApiObject):
    pass


def get(lab: Lab, step: Get) -> Any:
    """The object as served (None if absent)."""
    return lab.require_cluster().api.get_or_none(step.path)


@dataclass(frozen=True)
class WaitPolicy:
    name: str
    condition: str = "Ready"
    status: str = "True"
    message_contains: str | None = None
    timeout: float = 60


def wait_policy(lab: Lab, step: WaitPolicy) -> dict[str, Any]:
    """Until the policy's condition has the status (and message text) for its current
    generation; returns the seconds, the status and the generation."""
    api = lab.require_cluster().api
    started = time.time()
    deadline = started + step.timeout
    last: Any = None
    while time.time() < deadline:
        last = api.get_or_none(object_path("IPsecPolicy", step.name))
        status = (last or {}).get("status") or {}
        cond = condition(last, step.condition)
        if (
            last is not None
            and status.get("observedGeneration") == last["metadata"].get("generation")
            and cond is not None
            and cond.get("status") == step.status
            and (step.message_contains is None
                 or step.message_contains in str(cond.get("message", "")))
        ):
            return {"seconds": round(time.time() - started, 3), "status": status,
                    "generation": last["metadata"].get("generation")}
        time.sleep(0.2)
    raise RuntimeError(f"{step.name}: {step.condition} never became {step.status} "
                       f"({step.message_contains or ''}); last status: "
                       f"{json.dumps((last or {}).get('status'))[:600]}")


@dataclass(frozen=True)
class WaitGone(ApiObject):
    timeout: float = 60


def wait_gone(lab: Lab, step: WaitGone) -> float:
    """Until the API answers 404 for the object."""
    api = lab.require_cluster().api
    path = step.path
    started = time.time()
    deadline = started + step.timeout
    while time.time() < deadline:
        if api.get_or_none(path) is None:
            return round(time.time() - started, 3)
        time.sleep(0.2)
    raise RuntimeError(f"{path} still exists after {step.timeout} s")


@dataclass(frozen=True)
class Kubectl:
    args: tuple[str, ...]
    label: str | None = None  # default: the arguments joined by spaces


def kubectl(lab: Lab, step: Kubectl) -> dict[str, Any]:
    """kubectl's output, also kept in ``results["kubectl"][label]``."""
    result = lab.require_cluster().kubectl(*step.args)
    label = step.label if step.label is not None else " ".join(step.args)
    lab.results.setdefault("kubectl", {})[label] = result
    return result


@dataclass(frozen=True)
class LabelNode:
    node: str
    labels: Mapping[str, str | None]  # a merge patch: None removes the label


def label_node(lab: Lab, step: LabelNode) -> str:
    """E.g. to take a node out of a policy's nodeSelector."""
    labels = dict(step.labels)
    lab.require_cluster().api.request("PATCH", object_path("Node", step.node),
                                      {"metadata": {"labels": labels}},
                                      "application/merge-patch+json")
    return f"Node/{step.node} labels {labels}"


@dataclass(frozen=True)
class OwnedPolicies:
    pass


def owned_policies(lab: Lab, step: OwnedPolicies) -> dict[str, int]:
    """Each node's count of xfrm policies in strongmesh's priority bands."""
    return {h.name: count_owned_policies(h) for h in lab.network.nodes}


@dataclass(frozen=True)
class WaitCertificates:
    policy: str
    issuer_contains: str
    subject: str | None = None  # e.g. "O=strongmesh, CN={node}"
    timeout: float = 60


def wait_certificates(lab: Lab, step: WaitCertificates) -> dict[str, Any]:
    """Until every lab node's IPsecNode says it uses, for the policy, a certificate whose issuer
    contains the text (and, with ``subject``, whose subject is that, ``{node}`` the node's
    name); returns the seconds and the certificates."""
    api = lab.require_cluster().api
    started = time.time()
    deadline = started + step.timeout
    certificates: dict[str, dict[str, Any] | None] = {}
    while time.time() < deadline:
        with contextlib.suppress(OSError, ApiError):
            items = api.get(object_path("IPsecNode")).get("items", [])
            certificates = policy_certificates(items, step.policy)
        waiting = [h.name for h in lab.network.nodes
                   if not (cert := certificates.get(h.name))
                   or step.issuer_contains not in str(cert.get("issuer", ""))
                   or (step.subject is not None
                       and cert.get("subject") != step.subject.format(node=h.name))]
        if not waiting:
            return {"seconds": round(time.time() - started, 3), "certificates": certificates}
        time.sleep(0.2)
    raise RuntimeError(f"certificates of {step.policy} not issued by {step.issuer_contains!r} "
                       f"on every node within {step.timeout} s: {certificates}")
