"""The chart's objects and identities on a real control plane (tests, lab, benchmarks).

``install_chart`` renders ``charts/strongmesh`` with the real Helm engine and applies every
object with the real ``kubectl`` (CRDs, ServiceAccounts, RBAC, the ValidatingAdmissionPolicy,
the workloads — which stay unscheduled: no kubelet runs). ``agent_kubeconfig`` and
``operator_kubeconfig`` then give a process exactly the identity the chart gives its pods: a
ServiceAccount token from the TokenRequest API. An agent's token is bound to its Node object,
which makes kube-apiserver add the ``authentication.kubernetes.io/node-name`` claim, as it does
for the projected token of a pod scheduled to that node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hack.labkit.controlplane import ControlPlane, kubeconfig, write_kubeconfig

PROJECT = Path(__file__).resolve().parents[2]
CHART = PROJECT / "charts" / "strongmesh"
RELEASE = "strongmesh"
NAMESPACE = "strongmesh-system"
AGENT_SERVICE_ACCOUNT = "strongmesh-agent"
OPERATOR_SERVICE_ACCOUNT = "strongmesh-operator"
TOKEN_SECONDS = 24 * 3600

Json = dict[str, Any]


def render_chart(values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE,
                 release: str = RELEASE) -> list[Json]:
    """The chart's objects as ``helm template`` renders them (NOTES.txt left out)."""
    import helm_python as helm

    files = helm.Chart.load(str(CHART)).render(dict(values or {}), name=release,
                                               namespace=namespace)
    return [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def install_chart(plane: ControlPlane, values: Mapping[str, Any] | None = None,
                  namespace: str = NAMESPACE) -> list[Json]:
    """Apply the rendered chart with kubectl (namespace first, CRDs established before use)."""
    docs = render_chart(values, namespace)
    plane.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    if crds:
        plane.kubectl("apply", "-f", "-", input=_list(crds))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      *(f"crd/{d['metadata']['name']}" for d in crds))
    plane.kubectl("apply", "-f", "-", input=_list(rest))
    return docs


def _list(docs: list[Json]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def service_account_token(plane: ControlPlane, service_account: str,
                          namespace: str = NAMESPACE, node: str | None = None,
                          seconds: int = TOKEN_SECONDS) -> str:
    """A token for the ServiceAccount from the TokenRequest API; bound to ``node`` (its
    Node object must exist) so that it carries the node-name claim."""
    spec: Json = {"expirationSeconds": seconds}
    if node is not None:
        uid = plane.kubectl("get", "node", node, "-o", "jsonpath={.metadata.uid}").stdout
        spec["boundObjectRef"] = {"kind": "Node", "apiVersion": "v1", "name": node, "uid": uid}
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    out = plane.kubectl(
        "create", "--raw",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
        "-f", "-", input=json.dumps(request))
    return str(json.loads(out.stdout)["status"]["token"])


def token_kubeconfig(plane: ControlPlane, path: Path, token: str, user: str,
                     server: str | None = None) -> Path:
    """A kubeconfig for ``token`` (``server`` overrides the address, e.g. seen from the lab)."""
    return write_kubeconfig(path, kubeconfig(
        server or plane.server, plane.ca_cert.read_bytes(), user=user, token=token))


def agent_kubeconfig(plane: ControlPlane, node: str, path: Path,
                     server: str | None = None) -> Path:
    """The identity of node ``node``'s agent pod: the agent ServiceAccount, bound to the Node."""
    token = service_account_token(plane, AGENT_SERVICE_ACCOUNT, node=node)
    return token_kubeconfig(plane, path, token, f"agent-{node}", server)


def operator_kubeconfig(plane: ControlPlane, path: Path, server: str | None = None) -> Path:
    """The identity of the operator pod: the operator ServiceAccount."""
    token = service_account_token(plane, OPERATOR_SERVICE_ACCOUNT)
    return token_kubeconfig(plane, path, token, "operator", server)
