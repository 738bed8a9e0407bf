"""The real kube-apiserver of the API tier and the identities that talk to it.

One control plane (``hack/control-plane``: etcd + kube-apiserver with client-certificate and
ServiceAccount-token authentication, RBAC and ValidatingAdmissionPolicy) serves the whole test
session, with the chart installed as ``helm install`` would (CRDs, RBAC, the admission policy).
``KubeApiServer`` is one test's handle on it: the admin identity (``system:masters``) for what a
test does on purpose as a cluster admin, and the chart's identities for the components under
test: ``operator_kubeconfig`` (ServiceAccount ``strongmesh-operator``) and
``agent_kubeconfig(node)`` (ServiceAccount ``strongmesh-agent``, token bound to the Node, so it
carries the node-name claim the admission policy checks).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import config as k8s_config

from hack.labkit.controlplane import ControlPlane
from hack.labkit.identities import (
    AGENT_SERVICE_ACCOUNT,
    NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    agent_kubeconfig,
    operator_kubeconfig,
    service_account_token,
    token_kubeconfig,
)
from tests.api.audit import AuditLog

AGENT_USER = f"system:serviceaccount:{NAMESPACE}:{AGENT_SERVICE_ACCOUNT}"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
# A second namespace for "a Secret of the same name elsewhere" (namespaces never finish
# terminating without kube-controller-manager, so test namespaces are made once per session).
OTHER_NAMESPACE = "strongmesh-elsewhere"
TEST_NAMESPACES = ("default", NAMESPACE, OTHER_NAMESPACE)
# The chart's credentials.secretNames for this session: the names policies in these tests
# reference. Any other Secret (``unrelated`` below) is one the agents and the operator may not
# read.
CREDENTIAL_SECRETS = ["ipsec-credentials", "creds", "creds-a", "creds-b", "later"]
CHART_VALUES: dict[str, Any] = {"credentials": {"secretNames": CREDENTIAL_SECRETS}}


def new_client(kubeconfig: Path) -> Any:
    """An official-client ``ApiClient`` with the identity of ``kubeconfig``."""
    return k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), persist_config=False
    )


@dataclass
class KubeApiServer:
    """The session's kube-apiserver, seen from one test (clients are closed at its end)."""

    plane: ControlPlane
    directory: Path  # the test's own directory for kubeconfigs
    operator_config: Path  # minted once per session
    _clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.plane.server

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate in ``system:masters``)."""
        return self.plane.kubeconfig

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.plane.logs / "audit.log")

    def client(self, kubeconfig: Path | None = None) -> Any:
        """A new ``kubernetes.client.ApiClient``: admin, or the identity of ``kubeconfig``."""
        api_client = new_client(kubeconfig or self.kubeconfig)
        self._clients.append(api_client)
        return api_client

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The kubectl built from the same Kubernetes release as the server (admin unless
        ``kubeconfig`` says otherwise); ``check`` fails the test on a non-zero exit."""
        result = self.plane.kubectl(*args, input=input, check=False, kubeconfig=kubeconfig)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def operator_kubeconfig(self, server: str | None = None) -> Path:
        """The operator's identity; ``server`` points it elsewhere (a proxy)."""
        if server is None:
            return self.operator_config
        return operator_kubeconfig(self.plane, self.directory / "operator-via", server)

    def agent_kubeconfig(self, node: str, server: str | None = None) -> Path:
        """The identity of ``node``'s agent pod (the Node must exist)."""
        suffix = "-via" if server else ""
        return agent_kubeconfig(
            self.plane, node, self.directory / f"agent-{node}{suffix}.kubeconfig", server
        )

    def unbound_agent_kubeconfig(self) -> Path:
        """The agent ServiceAccount with a token bound to no Node: no node-name claim."""
        token = service_account_token(self.plane, AGENT_SERVICE_ACCOUNT)
        return token_kubeconfig(
            self.plane, self.directory / "agent-unbound.kubeconfig", token, "agent-unbound"
        )

    def close(self) -> None:
        for api_client in self._clients:
            api_client.close()
        self._clients.clear()
