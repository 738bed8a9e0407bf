"""Per-node identities on the real kube-apiserver: key on the node, certificate through a CSR.

The real operator signs for ``strongmesh.io/ipsec-node`` with the chart's identity (RBAC:
approve and sign on that signer only); the agent of node-1 runs its real cluster-mode inputs
with its node-bound token and an identity directory of its own.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from kubernetes import client as k8s

from controller.agent.kube import KubeInputSource
from controller.kubeapi import KubeClient, abort_leftover_connections, load_config
from controller.operator.run import OperatorThread
from controller.pki import SIGNER, csr_object, new_node_key, node_csr
from controller.validation import validate_credentials
from tests.api.operator_support import wait_for
from tests.api.server import KubeApiServer
from tests.api.test_agent_kube import node, settle
from tests.certs import Issued, make_ca, secret_manifest

pytestmark = pytest.mark.api
G, V = "strongmesh.io", "v1alpha1"
NS = "strongmesh-system"
CA1, CA2 = make_ca("mesh CA 2026"), make_ca("mesh CA 2027")


def issuer_data(signing: Issued, trusted: list[Issued]) -> dict[str, str]:
    return {"tls.crt": signing.cert_pem, "tls.key": signing.key_pem(),
            "ca.crt": "".join(ca.cert_pem for ca in trusted)}


def issuer_policy() -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}", "kind": "IPsecPolicy", "metadata": {"name": "mesh"},
        "spec": {"ipsecSubnets": ["10.77.0.0/24"],
                 "credentials": {"issuer": {"secretRef": {"name": "mesh-ca", "namespace": NS}}}},
    }


@pytest.fixture
def core(apiserver: KubeApiServer) -> Any:
    return cast(Any, k8s.CoreV1Api(apiserver.client()))


@pytest.fixture
def custom(apiserver: KubeApiServer) -> Any:
    return k8s.CustomObjectsApi(apiserver.client())


@pytest.fixture
def certificates(apiserver: KubeApiServer) -> Any:
    return cast(Any, k8s.CertificatesV1Api(apiserver.client()))


@pytest.fixture
async def agent(
    apiserver: KubeApiServer, core: Any, operator: OperatorThread, tmp_path: Path
) -> AsyncIterator[KubeInputSource]:
    core.create_node(node("node-1", "10.77.0.1"))
    client = KubeClient(load_config(str(apiserver.agent_kubeconfig("node-1"))), timeout=5)
    source = KubeInputSource(client, "node-1", identity_dir=tmp_path / "identity")
    yield source
    await source.close()
    await client.close()
    await abort_leftover_connections()


def ours(certificates: Any) -> list[Any]:
    return [c for c in certificates.list_certificate_signing_request().items
            if c.spec.signer_name == SIGNER]


async def test_a_node_gets_its_own_certificate_and_its_key_never_leaves_it(
    agent: KubeInputSource, core: Any, custom: Any, certificates: Any, tmp_path: Path,
) -> None:
    core.create_namespaced_secret(NS, secret_manifest(issuer_data(CA1, [CA1]), "mesh-ca", NS))
    custom.create_cluster_custom_object(G, V, "ipsecpolicies", issuer_policy())
    inputs = await settle(agent, lambda i: bool(i.policies) and i.policies[0].secret_data is not
                          None, timeout=30)
    data = inputs.policies[0].secret_data
    assert data is not None
    creds, findings = validate_credentials(data, inputs.policies[0].policy.spec.certificate_expiry)
    assert creds is not None, findings
    assert creds.subject == "O=strongmesh, CN=node-1"
    cert = x509.load_pem_x509_certificate(data["tls.crt"].encode())
    assert cert.issuer == CA1.cert.subject
    directory = tmp_path / "identity"
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / "node.key").st_mode) == 0o600
    key = (directory / "node.key").read_text()
    (csr,) = ours(certificates)
    assert key.split("-----")[2].strip()[:40] not in str(csr.to_dict())  # only a public key left
    approved = [c for c in csr.status.conditions if c.type == "Approved"]
    assert [c.reason for c in approved] == ["StrongmeshNodeApproved"]
    ready = wait_for(lambda: next(
        (c for c in (custom.get_cluster_custom_object(G, V, "ipsecpolicies", "mesh").get(
            "status") or {}).get("conditions", []) if c["type"] == "CredentialsValid"
         and c["status"] == "True"), None), what="CredentialsValid")
    assert "issuing CA" in ready["message"]


def _refused(certificates: Any, name: str) -> Any:
    def probe() -> Any:
        csr = certificates.read_certificate_signing_request(name)
        denied = [c for c in csr.status.conditions or [] if c.type == "Denied"]
        return denied[0] if denied else None
    return wait_for(probe, what=f"CSR {name} denied")


async def test_requests_for_another_identity_are_denied(
    apiserver: KubeApiServer, core: Any, custom: Any, certificates: Any,
    operator: OperatorThread,
) -> None:
    core.create_node(node("node-1", "10.77.0.1"))
    core.create_node(node("node-2", "10.77.0.2"))
    core.create_namespaced_secret(NS, secret_manifest(issuer_data(CA1, [CA1]), "mesh-ca", NS))
    custom.create_cluster_custom_object(G, V, "ipsecpolicies", issuer_policy())
    agent: Any = k8s.CertificatesV1Api(apiserver.client(apiserver.agent_kubeconfig("node-1")))
    key = new_node_key()
    # node-1's agent asks for node-2's identity
    agent.create_certificate_signing_request(
        csr_object("impostor", "node-1", node_csr(key, "node-2"), f"{NS}/mesh-ca", 3600))
    # an admin (not a node's agent) asks for node-1's identity
    certificates.create_certificate_signing_request(
        csr_object("admin-made", "node-1", node_csr(key, "node-1"), f"{NS}/mesh-ca", 3600))
    # node-1's agent names an issuer no policy uses
    agent.create_certificate_signing_request(
        csr_object("other-issuer", "node-1", node_csr(key, "node-1"), f"{NS}/another-ca", 3600))
    for name, reason in (("impostor", "WrongSubject"), ("admin-made", "NotAnAgent"),
                         ("other-issuer", "IssuerNotSelected")):
        denied = _refused(certificates, name)
        assert denied.reason == reason, (name, denied.message)
        assert not certificates.read_certificate_signing_request(name).status.certificate


async def test_a_ca_rotation_makes_every_node_request_a_certificate_from_the_new_ca(
    agent: KubeInputSource, core: Any, custom: Any,
) -> None:
    core.create_namespaced_secret(NS, secret_manifest(issuer_data(CA1, [CA1]), "mesh-ca", NS))
    custom.create_cluster_custom_object(G, V, "ipsecpolicies", issuer_policy())
    await settle(agent, lambda i: bool(i.policies) and i.policies[0].secret_data is not None,
                 timeout=30)
    # step 1: trust both; step 2 (here at once): sign with the new one
    core.replace_namespaced_secret("mesh-ca", NS, secret_manifest(
        issuer_data(CA2, [CA1, CA2]), "mesh-ca", NS))

    def issued_by(ca: Issued) -> Any:
        return lambda inputs: bool(inputs.policies) and inputs.policies[0].secret_data and \
            x509.load_pem_x509_certificate(
                inputs.policies[0].secret_data["tls.crt"].encode()).issuer == ca.cert.subject

    rotated = await settle(agent, issued_by(CA2), timeout=30)
    data = rotated.policies[0].secret_data
    assert data is not None
    assert data["ca.crt"].count("BEGIN CERTIFICATE") == 2  # both trusted meanwhile
    # step 3: the old CA goes from the bundle; the node's certificate stays
    core.replace_namespaced_secret("mesh-ca", NS, secret_manifest(
        issuer_data(CA2, [CA2]), "mesh-ca", NS))
    final = await settle(agent, lambda i: bool(i.policies) and i.policies[0].secret_data is not
                         None and i.policies[0].secret_data["ca.crt"].count("BEGIN") == 1)
    assert final.policies[0].secret_data is not None
    assert final.policies[0].secret_data["tls.crt"] == data["tls.crt"]
