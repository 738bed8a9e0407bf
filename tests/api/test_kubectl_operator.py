"""kubectl against kube-apiserver with the operator running (its chart identity): apply, wait,
get, while simulated agents report with their nodes' identities.

`strongmesh status` (run as the cluster admin) must print what `kubectl get
ipsecpolicies,ipsecnodes` prints.
"""

from __future__ import annotations

import re

import pytest
import yaml

from controller.cli import main
from controller.operator.run import OperatorThread
from tests.api.operator_support import NAMESPACE, Cluster
from tests.api.server import KubeApiServer
from tests.certs import make_cert, secret_data, secret_manifest

pytestmark = pytest.mark.api


def manifests(cluster: Cluster) -> str:
    policy = {
        "apiVersion": "strongmesh.io/v1alpha1", "kind": "IPsecPolicy",
        "metadata": {"name": "mesh"},
        "spec": {
            "ipsecSubnets": ["10.77.0.0/24"], "enforcement": "Required",
            "credentials": {"secretRef": {"name": "creds", "namespace": NAMESPACE}},
        },
    }
    secret = secret_manifest(
        secret_data(make_cert(cluster.ca, "node"), [cluster.ca]), "creds", NAMESPACE
    )
    return yaml.safe_dump_all([secret, policy])


def without_age(text: str) -> list[str]:
    """Table lines without the last (AGE) column, whose value moves with the clock."""
    return [re.sub(r"\s+\S+$", "", line) for line in text.strip().splitlines()]


def test_apply_wait_and_get_show_the_policy_status(
    apiserver: KubeApiServer,
    cluster: Cluster,
    operator: OperatorThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster.node("node-1", "10.77.0.1")
    cluster.node("node-2", "10.77.0.2")
    applied = apiserver.kubectl("apply", "-f", "-", input=manifests(cluster))
    assert "ipsecpolicy.strongmesh.io/mesh created" in applied.stdout
    cluster.report("node-1", {"mesh": 1}, peers=("10.77.0.2",))
    cluster.report("node-2", {"mesh": 1}, peers=("10.77.0.1",))

    apiserver.kubectl("wait", "--for=condition=Ready", "ipsecpolicy/mesh", "--timeout=30s")
    apiserver.kubectl("wait", "--for=condition=CredentialsValid", "ipp/mesh", "--timeout=5s")

    policies = apiserver.kubectl("get", "ipsecpolicies").stdout.splitlines()
    assert re.split(r"\s{2,}", policies[0].strip()) == [
        "NAME", "READY", "SAS", "ENFORCEMENT", "MODE", "AGE"
    ]
    assert re.split(r"\s{2,}", policies[1].strip())[:5] == [
        "mesh", "2/2", "2", "Required", "Transport"
    ]

    both = apiserver.kubectl("get", "ipsecpolicies,ipsecnodes").stdout
    assert "ipsecpolicy.strongmesh.io/mesh" in both
    assert "ipsecnode.strongmesh.io/node-1" in both

    assert main(["status", "--kubeconfig", str(apiserver.kubeconfig)]) == 0
    ours = capsys.readouterr().out
    assert without_age(ours) == without_age(both)


def test_reapplying_an_edited_policy_rolls_out_a_new_generation(
    apiserver: KubeApiServer, cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1", "10.77.0.1")
    text = manifests(cluster)
    apiserver.kubectl("apply", "-f", "-", input=text)
    cluster.report("node-1", {"mesh": 1})
    apiserver.kubectl("wait", "--for=condition=Ready", "ipsecpolicy/mesh", "--timeout=30s")

    edited = text.replace("enforcement: Required", "enforcement: Optional")
    assert "ipsecpolicy.strongmesh.io/mesh configured" in apiserver.kubectl(
        "apply", "-f", "-", input=edited
    ).stdout
    apiserver.kubectl(
        "wait", "--for=condition=Progressing", "ipsecpolicy/mesh", "--timeout=30s"
    )
    cluster.report("node-1", {"mesh": 2})
    apiserver.kubectl("wait", "--for=condition=Ready", "ipsecpolicy/mesh", "--timeout=30s")
    row = apiserver.kubectl("get", "ipp", "mesh", "--no-headers").stdout
    assert re.split(r"\s{2,}", row.strip())[:4] == ["mesh", "1/1", "0", "Optional"]
