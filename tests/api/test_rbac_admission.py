"""What the chart's identities may do, from the real server's answers.

The issue: "the agent of node-1 cannot create, update or delete IPsecNode node-2; it cannot
read a Secret outside ``credentials.secretNames``; it cannot write IPsecPolicy status; the
operator can do what it needs and no more." Each row below makes one real request with one
identity and checks the server's answer: allowed, or 403 with the message of whichever refused
it — RBAC (``User ... cannot VERB resource ...``) or the chart's ValidatingAdmissionPolicy
``strongmesh-agent-own-ipsecnode`` (RBAC cannot say "only your own node"; the agent's token
names its node in the ``authentication.kubernetes.io/node-name`` claim, the policy compares).
``kubectl auth can-i`` only supplements this: it knows RBAC, not admission.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.cli.drain import _pod_lister
from tests.api.operator_support import NAMESPACE, G, V
from tests.api.server import AGENT_USER, OPERATOR_USER, OTHER_NAMESPACE, KubeApiServer
from tests.certs import make_ca, make_cert, secret_data, secret_manifest

pytestmark = pytest.mark.api

VAP = (
    "ValidatingAdmissionPolicy 'strongmesh-agent-own-ipsecnode' with binding "
    "'strongmesh-agent-own-ipsecnode' denied request: "
)
NO_CLAIM = (
    "the agent's token has no authentication.kubernetes.io/node-name claim (Kubernetes 1.30+ "
    "with a projected service-account token is required)"
)
ALLOWED = "allowed"


@dataclass
class Apis:
    """One identity's view of the API (official client)."""

    custom: Any
    core: Any
    certificates: Any


@dataclass(frozen=True)
class Case:
    who: str  # agent-node-1 | agent-unbound | operator
    what: str
    request: Callable[[Apis], object]
    expect: str  # ALLOWED, or the server's refusal message (after "is forbidden: ")
    before: Callable[[Apis], object] | None = None  # admin preparation beyond the scene

    @property
    def id(self) -> str:
        return f"{self.who}: {self.what}"


def rbac(user: str, verb: str, resource: str, group: str = "", namespace: str = "") -> str:
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return f'User "{user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'


def agent(verb: str, resource: str, group: str = "", namespace: str = "") -> str:
    return rbac(AGENT_USER, verb, resource, group, namespace)


def operator(verb: str, resource: str, group: str = "", namespace: str = "") -> str:
    return rbac(OPERATOR_USER, verb, resource, group, namespace)


def not_own(node: str) -> str:
    return VAP + f"the agent on node node-1 may only write IPsecNode node-1, not {node}"


# ---- the requests ----------------------------------------------------------------------------
def ipsec_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}", "kind": "IPsecNode", "metadata": {"name": name},
        "spec": {"addresses": [], "identity": f"CN={name}"},
    }


def create_ipsec_node(name: str) -> Callable[[Apis], object]:
    return lambda api: api.custom.create_cluster_custom_object(
        G, V, "ipsecnodes", ipsec_node(name))


def replace_ipsec_node(name: str) -> Callable[[Apis], object]:
    def request(api: Apis) -> object:
        current = api.custom.get_cluster_custom_object(G, V, "ipsecnodes", name)
        current["spec"]["identity"] = "CN=replaced"
        return api.custom.replace_cluster_custom_object(G, V, "ipsecnodes", name, current)
    return request


def patch_ipsec_node(name: str) -> Callable[[Apis], object]:
    return lambda api: api.custom.patch_cluster_custom_object(
        G, V, "ipsecnodes", name, {"spec": {"identity": "CN=patched"}})


def patch_ipsec_node_status(name: str) -> Callable[[Apis], object]:
    return lambda api: api.custom.patch_cluster_custom_object_status(
        G, V, "ipsecnodes", name, {"status": {"policies": []}})


def delete_ipsec_node(name: str) -> Callable[[Apis], object]:
    return lambda api: api.custom.delete_cluster_custom_object(G, V, "ipsecnodes", name)


def get_secret(name: str, namespace: str = NAMESPACE) -> Callable[[Apis], object]:
    return lambda api: api.core.read_namespaced_secret(name, namespace)


def list_secrets(field_selector: str | None = None) -> Callable[[Apis], object]:
    if field_selector is None:
        return lambda api: api.core.list_namespaced_secret(NAMESPACE)
    return lambda api: api.core.list_namespaced_secret(NAMESPACE, field_selector=field_selector)


def watch_secrets(api: Apis) -> object:
    response = api.core.list_namespaced_secret(
        NAMESPACE, watch=True, timeout_seconds=1, _preload_content=False)
    response.release_conn()
    return response


def patch_policy_status(api: Apis) -> object:
    return api.custom.patch_cluster_custom_object_status(
        G, V, "ipsecpolicies", "mesh", {"status": {"observedGeneration": 1}})


def patch_policy(api: Apis) -> object:
    return api.custom.patch_cluster_custom_object(
        G, V, "ipsecpolicies", "mesh", {"metadata": {"labels": {"touched": "yes"}}})


def delete_policy(api: Apis) -> object:
    return api.custom.delete_cluster_custom_object(G, V, "ipsecpolicies", "mesh")


def replace_policy_status(api: Apis) -> object:
    current = api.custom.get_cluster_custom_object(G, V, "ipsecpolicies", "mesh")
    current["status"] = {"observedGeneration": 1}
    return api.custom.replace_cluster_custom_object_status(
        G, V, "ipsecpolicies", "mesh", current)


def get_policy(api: Apis) -> object:
    return api.custom.get_cluster_custom_object(G, V, "ipsecpolicies", "mesh")


def list_policies(api: Apis) -> object:
    return api.custom.list_cluster_custom_object(G, V, "ipsecpolicies")


def list_ipsec_nodes(api: Apis) -> object:
    return api.custom.list_cluster_custom_object(G, V, "ipsecnodes")


def list_slices(api: Apis) -> object:
    return api.custom.list_cluster_custom_object(G, V, "ipsecpeerslices")


def create_slice(api: Apis) -> object:
    return api.custom.create_cluster_custom_object(G, V, "ipsecpeerslices", {
        "apiVersion": f"{G}/{V}", "kind": "IPsecPeerSlice", "metadata": {"name": "forged"},
        "spec": {"policy": "mesh", "policyGeneration": 1},
    })


def approve_kubelet_csr(api: Apis) -> object:
    """Approve a CSR for Kubernetes' own client signer (the operator signs only its own)."""
    csr = api.certificates.read_certificate_signing_request("kubelet-client")
    csr.status.conditions = [{"type": "Approved", "status": "True", "reason": "Test",
                              "message": "m"}]
    return api.certificates.replace_certificate_signing_request_approval("kubelet-client", csr)


def a_kubelet_csr(api: Apis) -> object:
    """Preparation: a CSR for kubernetes.io/kube-apiserver-client-kubelet."""
    from controller.pki import new_node_key, node_csr

    body = {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "kubelet-client"},
        "spec": {"request": base64.b64encode(node_csr(new_node_key(), "x").encode()).decode(),
                 "signerName": "kubernetes.io/kube-apiserver-client",
                 "usages": ["digital signature", "client auth"]},
    }
    return api.certificates.create_certificate_signing_request(body)


def patch_node(api: Apis) -> object:
    return api.core.patch_node("node-1", {"metadata": {"labels": {"pool": "b"}}})


def delete_node(api: Apis) -> object:
    return api.core.delete_node("node-2")


def list_pods_on_node_1(api: Apis) -> object:
    return api.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1")


def create_event(api: Apis) -> object:
    return api.core.create_namespaced_event("default", {
        "metadata": {"generateName": "mesh."},
        "involvedObject": {"apiVersion": f"{G}/{V}", "kind": "IPsecPolicy", "name": "mesh"},
        "reason": "Test", "message": "m", "type": "Normal",
    })


def patch_event(api: Apis) -> object:
    return api.core.patch_namespaced_event("mesh.1", "default", {"message": "changed"})


def an_event(api: Apis) -> object:
    """Preparation: an Event ``mesh.1`` in ``default``."""
    return api.core.create_namespaced_event("default", {
        "metadata": {"name": "mesh.1"},
        "involvedObject": {"apiVersion": f"{G}/{V}", "kind": "IPsecPolicy", "name": "mesh"},
        "reason": "Test", "message": "m", "type": "Normal",
    })


def without(name: str) -> Callable[[Apis], object]:
    """Preparation: the scene's IPsecNode ``name`` removed (to create it)."""
    return delete_ipsec_node(name)


CASES = [
    # node-1's agent and other nodes' IPsecNodes: admission refuses writes, RBAC deletes.
    Case("agent-node-1", "create IPsecNode node-2", create_ipsec_node("node-2"),
         not_own("node-2"), before=without("node-2")),
    Case("agent-node-1", "update IPsecNode node-2", replace_ipsec_node("node-2"),
         agent("update", "ipsecnodes", G)),
    Case("agent-node-1", "patch IPsecNode node-2", patch_ipsec_node("node-2"), not_own("node-2")),
    Case("agent-node-1", "patch IPsecNode node-2 status", patch_ipsec_node_status("node-2"),
         not_own("node-2")),
    Case("agent-node-1", "delete IPsecNode node-2", delete_ipsec_node("node-2"),
         agent("delete", "ipsecnodes", G)),
    # ... and its own.
    Case("agent-node-1", "create IPsecNode node-1", create_ipsec_node("node-1"), ALLOWED,
         before=without("node-1")),
    # (it patches; a PUT is no verb of its)
    Case("agent-node-1", "update IPsecNode node-1", replace_ipsec_node("node-1"),
         agent("update", "ipsecnodes", G)),
    Case("agent-node-1", "patch IPsecNode node-1", patch_ipsec_node("node-1"), ALLOWED),
    Case("agent-node-1", "patch IPsecNode node-1 status", patch_ipsec_node_status("node-1"),
         ALLOWED),
    Case("agent-node-1", "delete IPsecNode node-1", delete_ipsec_node("node-1"),
         agent("delete", "ipsecnodes", G)),
    # Secrets: only those named in credentials.secretNames, only by name, only in their
    # namespace.
    Case("agent-node-1", "get a Secret in credentials.secretNames",
         get_secret("ipsec-credentials"), ALLOWED),
    Case("agent-node-1", "list that Secret by name (the agent's watch)",
         list_secrets("metadata.name=ipsec-credentials"), ALLOWED),
    Case("agent-node-1", "get another Secret in that namespace", get_secret("unrelated"),
         agent("get", "secrets", namespace=NAMESPACE)),
    Case("agent-node-1", "list another Secret by name", list_secrets("metadata.name=unrelated"),
         agent("list", "secrets", namespace=NAMESPACE)),
    Case("agent-node-1", "list Secrets without the name selector", list_secrets(),
         agent("list", "secrets", namespace=NAMESPACE)),
    Case("agent-node-1", "watch Secrets without the name selector", watch_secrets,
         agent("watch", "secrets", namespace=NAMESPACE)),
    Case("agent-node-1", "get a listed name in another namespace",
         get_secret("ipsec-credentials", OTHER_NAMESPACE),
         agent("get", "secrets", namespace=OTHER_NAMESPACE)),
    # Agents read policies only as the operator publishes them (IPsecPeerSlices), never the
    # IPsecPolicies themselves; they write neither. Nodes are read-only to them; no Events.
    Case("agent-node-1", "list IPsecPeerSlices (the agent's watch)", list_slices, ALLOWED),
    Case("agent-node-1", "create an IPsecPeerSlice", create_slice,
         agent("create", "ipsecpeerslices", G)),
    Case("agent-node-1", "get an IPsecPolicy", get_policy, agent("get", "ipsecpolicies", G)),
    Case("agent-node-1", "list IPsecPolicies", list_policies,
         agent("list", "ipsecpolicies", G)),
    Case("agent-node-1", "list IPsecNodes", list_ipsec_nodes, agent("list", "ipsecnodes", G)),
    Case("agent-node-1", "patch IPsecPolicy status", patch_policy_status,
         agent("patch", "ipsecpolicies/status", G)),
    Case("agent-node-1", "patch IPsecPolicy", patch_policy, agent("patch", "ipsecpolicies", G)),
    Case("agent-node-1", "delete IPsecPolicy", delete_policy,
         agent("delete", "ipsecpolicies", G)),
    Case("agent-node-1", "patch its Node", patch_node, agent("patch", "nodes")),
    Case("agent-node-1", "list the pods on its node (strongmesh drain)", list_pods_on_node_1,
         ALLOWED),
    Case("agent-node-1", "create an Event", create_event,
         agent("create", "events", namespace="default")),
    # An agent token without the node-name claim writes no IPsecNode at all.
    Case("agent-unbound", "create IPsecNode node-1", create_ipsec_node("node-1"),
         VAP + NO_CLAIM, before=without("node-1")),
    Case("agent-unbound", "patch IPsecNode node-2 status", patch_ipsec_node_status("node-2"),
         VAP + NO_CLAIM),
    # The operator: policy status and its finalizer, IPsecNode garbage collection, Events,
    # the credential Secrets by name; nothing of the nodes' own, no other Secret.
    Case("operator", "patch IPsecPolicy status", patch_policy_status, ALLOWED),
    Case("operator", "patch IPsecPolicy (its finalizer)", patch_policy, ALLOWED),
    Case("operator", "replace IPsecPolicy status", replace_policy_status,
         operator("update", "ipsecpolicies/status", G)),
    Case("operator", "delete IPsecPolicy", delete_policy,
         operator("delete", "ipsecpolicies", G)),
    Case("operator", "create IPsecNode", create_ipsec_node("node-3"),
         operator("create", "ipsecnodes", G)),
    Case("operator", "patch IPsecNode", patch_ipsec_node("node-2"),
         operator("patch", "ipsecnodes", G)),
    Case("operator", "patch IPsecNode status", patch_ipsec_node_status("node-2"),
         operator("patch", "ipsecnodes/status", G)),
    Case("operator", "delete IPsecNode (garbage collection)", delete_ipsec_node("node-2"),
         ALLOWED),
    Case("operator", "get a Secret in credentials.secretNames",
         get_secret("ipsec-credentials"), ALLOWED),
    Case("operator", "get another Secret", get_secret("unrelated"),
         operator("get", "secrets", namespace=NAMESPACE)),
    Case("operator", "list Secrets without the name selector", list_secrets(),
         operator("list", "secrets", namespace=NAMESPACE)),
    Case("operator", "create an IPsecPeerSlice (publishing a policy)", create_slice, ALLOWED),
    Case("operator", "approve a CSR of Kubernetes' own signer", approve_kubelet_csr,
         # the CertificateApproval admission plugin checks the approve verb on the signer
         'user not permitted to approve requests with signerName '
         '"kubernetes.io/kube-apiserver-client"',
         before=a_kubelet_csr),
    Case("operator", "create an Event", create_event, ALLOWED),
    Case("operator", "patch an Event", patch_event,
         operator("patch", "events", namespace="default"), before=an_event),
    Case("operator", "patch a Node", patch_node, operator("patch", "nodes")),
    Case("operator", "delete a Node", delete_node, operator("delete", "nodes")),
]

CA = make_ca("rbac test CA")


@pytest.fixture
def admin(apiserver: KubeApiServer) -> Apis:
    api_client = apiserver.client()
    return Apis(k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client),
                k8s.CertificatesV1Api(api_client))


@pytest.fixture
def scene(admin: Apis) -> None:
    """Nodes node-1 and node-2 with their IPsecNodes, a policy, the credential Secret (and
    one of the same name elsewhere), an unrelated Secret: what the requests are about."""
    for name in ("node-1", "node-2"):
        admin.core.create_node({"metadata": {"name": name}})
        admin.custom.create_cluster_custom_object(G, V, "ipsecnodes", ipsec_node(name))
    data = secret_data(make_cert(CA, "node"), [CA])
    for name, namespace in (("ipsec-credentials", NAMESPACE), ("unrelated", NAMESPACE),
                            ("ipsec-credentials", OTHER_NAMESPACE)):
        admin.core.create_namespaced_secret(namespace, secret_manifest(data, name, namespace))
    admin.custom.create_cluster_custom_object(G, V, "ipsecpolicies", {
        "apiVersion": f"{G}/{V}", "kind": "IPsecPolicy", "metadata": {"name": "mesh"},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"],
            "credentials": {"secretRef": {"name": "ipsec-credentials", "namespace": NAMESPACE}},
        },
    })


def identity(apiserver: KubeApiServer, who: str) -> Path:
    if who == "agent-node-1":
        return apiserver.agent_kubeconfig("node-1")
    if who == "agent-unbound":
        return apiserver.unbound_agent_kubeconfig()
    assert who == "operator"
    return apiserver.operator_kubeconfig()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_identity_may_or_may_not(
    apiserver: KubeApiServer, admin: Apis, scene: None, case: Case
) -> None:
    if case.before is not None:
        case.before(admin)
    api_client = apiserver.client(identity(apiserver, case.who))
    apis = Apis(k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client),
                k8s.CertificatesV1Api(api_client))
    if case.expect == ALLOWED:
        case.request(apis)
        return
    with pytest.raises(ApiException) as refused:
        case.request(apis)
    status = json.loads(refused.value.body or "{}")
    assert (refused.value.status, status["reason"]) == (403, "Forbidden"), status
    assert status["message"].split(" is forbidden: ", 1)[1] == case.expect


def test_the_agent_token_carries_its_node_and_the_unbound_one_does_not(
    apiserver: KubeApiServer, scene: None
) -> None:
    """Who the server thinks the two agent identities are (SelfSubjectReview)."""

    def review(kubeconfig: Path) -> dict[str, Any]:
        api: Any = k8s.AuthenticationV1Api(apiserver.client(kubeconfig))
        result = api.create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                 "kind": "SelfSubjectReview"})
        return dict(result.status.user_info.to_dict())

    bound = review(apiserver.agent_kubeconfig("node-1"))
    assert bound["username"] == AGENT_USER
    assert bound["extra"]["authentication.kubernetes.io/node-name"] == ["node-1"]
    unbound = review(apiserver.unbound_agent_kubeconfig())
    assert unbound["username"] == AGENT_USER
    assert "authentication.kubernetes.io/node-name" not in (unbound["extra"] or {})


@pytest.mark.parametrize(
    ("who", "request_", "answer"),
    [
        ("agent-node-1", ["create", "ipsecnodes"], "yes"),  # RBAC allows; admission decides
        ("agent-node-1", ["delete", "ipsecnodes"], "no"),
        ("agent-node-1", ["get", "secrets/ipsec-credentials", "-n", NAMESPACE], "yes"),
        ("agent-node-1", ["get", "secrets/unrelated", "-n", NAMESPACE], "no"),
        ("agent-node-1", ["patch", "ipsecpolicies", "--subresource=status"], "no"),
        ("operator", ["patch", "ipsecpolicies", "--subresource=status"], "yes"),
        ("operator", ["create", "ipsecnodes"], "no"),
    ],
)
def test_kubectl_auth_can_i_agrees_with_rbac(
    apiserver: KubeApiServer, scene: None, who: str, request_: list[str], answer: str
) -> None:
    """``kubectl auth can-i`` asks RBAC only: "yes" to an agent creating IPsecNodes, which
    the admission policy then narrows to its own (see the table above)."""
    result = apiserver.kubectl("auth", "can-i", *request_, check=False,
                               kubeconfig=identity(apiserver, who))
    assert result.stdout.strip() == answer, result.stderr


def test_drain_lists_the_pods_of_its_node_with_the_agents_identity(
    apiserver: KubeApiServer, scene: None
) -> None:
    """The agent pod's preStop hook (``strongmesh drain``) with the agent's token."""
    assert _pod_lister("node-1", None, str(apiserver.agent_kubeconfig("node-1")))() == []
