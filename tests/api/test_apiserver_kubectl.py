"""The real kubectl against the embedded API (skipped where kubectl is not installed).

These are the commands users run (DESIGN.md): apply, get with printer columns and short names,
-o yaml, describe, patch --subresource=status, wait, get -w, delete with finalizers, explain,
and server-side apply.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import yaml

from tests.api.conftest import ApiServer
from tests.environment import missing

pytestmark = pytest.mark.api
if shutil.which("kubectl") is None:
    missing("kubectl is not on PATH")

POLICY = """\
apiVersion: strongmesh.io/v1alpha1
kind: IPsecPolicy
metadata:
  name: mesh
spec:
  ipsecSubnets: [10.77.0.0/24]
  mode: {mode}
  credentials:
    secretRef: {{name: ipsec-credentials, namespace: strongmesh-system}}
"""
SECRET = """\
apiVersion: v1
kind: Namespace
metadata:
  name: strongmesh-system
---
apiVersion: v1
kind: Secret
metadata:
  name: ipsec-credentials
  namespace: strongmesh-system
data:
  ca.crt: aGVsbG8=
"""
READY = (
    '{"status": {"summary": {"ready": "3/3", "establishedSAs": 6}, "conditions": '
    '[{"type": "Ready", "status": "True", "reason": "AllNodesReady", "message": "ok", '
    '"lastTransitionTime": "2026-01-01T00:00:00Z"}]}}'
)


def apply_policy(apiserver: ApiServer, mode: str = "Transport") -> str:
    return apiserver.kubectl("apply", "-f", "-", input=POLICY.format(mode=mode)).stdout


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_apply_creates_then_reports_unchanged_then_configured(apiserver: ApiServer) -> None:
    assert apply_policy(apiserver).strip() == "ipsecpolicy.strongmesh.io/mesh created"
    assert apply_policy(apiserver).strip() == "ipsecpolicy.strongmesh.io/mesh unchanged"
    assert apply_policy(apiserver, "Tunnel").strip() == (
        "ipsecpolicy.strongmesh.io/mesh configured"
    )
    generation = apiserver.kubectl(
        "get", "ipp", "mesh", "-o", "jsonpath={.metadata.generation}"
    ).stdout
    assert generation == "2"


def test_apply_of_builtins_uses_strategic_merge(apiserver: ApiServer) -> None:
    out = apiserver.kubectl("apply", "-f", "-", input=SECRET).stdout
    assert "secret/ipsec-credentials created" in out
    changed = SECRET.replace("aGVsbG8=", "d29ybGQ=")
    out = apiserver.kubectl("apply", "-f", "-", input=changed).stdout
    assert "secret/ipsec-credentials configured" in out
    got = apiserver.kubectl(
        "get",
        "secret",
        "-n",
        "strongmesh-system",
        "ipsec-credentials",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ).stdout
    assert got == "d29ybGQ="


def test_get_prints_the_crd_printer_columns_by_short_name_and_category(
    apiserver: ApiServer,
) -> None:
    apply_policy(apiserver)
    apiserver.kubectl("patch", "ipp", "mesh", "--subresource=status", "--type=merge", "-p", READY)
    table = rows(apiserver.kubectl("get", "ipp").stdout)
    assert table[0] == ["NAME", "READY", "SAS", "ENFORCEMENT", "MODE", "AGE"]
    assert table[1][:5] == ["mesh", "3/3", "6", "Required", "Transport"]
    by_category = rows(apiserver.kubectl("get", "strongmesh").stdout)
    assert by_category[1][0] == "ipsecpolicy.strongmesh.io/mesh"


def test_get_o_yaml_shows_defaults_and_server_metadata(apiserver: ApiServer) -> None:
    apply_policy(apiserver)
    obj = yaml.safe_load(apiserver.kubectl("get", "ipsecpolicy", "mesh", "-o", "yaml").stdout)
    assert obj["spec"]["enforcement"] == "Required"
    assert obj["metadata"]["generation"] == 1
    assert obj["metadata"]["uid"]


def test_apply_of_an_invalid_policy_prints_the_servers_field_errors(
    apiserver: ApiServer,
) -> None:
    bad = POLICY.format(mode="Sideways")
    result = apiserver.kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert 'spec.mode: Unsupported value: "Sideways"' in result.stderr
    typo = POLICY.format(mode="Tunnel").replace("ipsecSubnets", "ipsecSubnet")
    result = apiserver.kubectl("apply", "-f", "-", input=typo, check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.ipsecSubnet"' in result.stderr


def test_wait_for_ready_condition_returns_when_status_is_patched(apiserver: ApiServer) -> None:
    apply_policy(apiserver)

    def later() -> None:
        time.sleep(0.5)
        apiserver.kubectl(
            "patch", "ipp", "mesh", "--subresource=status", "--type=merge", "-p", READY
        )

    thread = threading.Thread(target=later)
    thread.start()
    result = apiserver.kubectl("wait", "--for=condition=Ready", "ipp/mesh", "--timeout=20s")
    thread.join()
    assert "condition met" in result.stdout


def test_get_watch_prints_changes(apiserver: ApiServer) -> None:
    apply_policy(apiserver)
    binary = shutil.which("kubectl")
    assert binary is not None
    with subprocess.Popen(
        [
            binary,
            "--kubeconfig",
            str(apiserver.kubeconfig),
            "get",
            "ipp",
            "-w",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            header = proc.stdout.readline().split()
            assert header[:2] == ["EVENT", "NAME"]
            assert proc.stdout.readline().split()[:2] == ["ADDED", "mesh"]
            apply_policy(apiserver, "Tunnel")
            assert proc.stdout.readline().split()[:2] == ["MODIFIED", "mesh"]
        finally:
            proc.terminate()


def test_delete_waits_for_finalizers(apiserver: ApiServer) -> None:
    apply_policy(apiserver)
    apiserver.kubectl(
        "patch",
        "ipp",
        "mesh",
        "--type=merge",
        "-p",
        '{"metadata": {"finalizers": ["strongmesh.io/teardown"]}}',
    )
    apiserver.kubectl("delete", "ipp", "mesh", "--wait=false")
    marked = apiserver.kubectl(
        "get", "ipp", "mesh", "-o", "jsonpath={.metadata.deletionTimestamp}"
    ).stdout
    assert marked.endswith("Z")

    def release() -> None:
        time.sleep(0.5)
        apiserver.kubectl(
            "patch",
            "ipp",
            "mesh",
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/metadata/finalizers"}]',
        )

    thread = threading.Thread(target=release)
    thread.start()
    apiserver.kubectl("wait", "--for=delete", "ipp/mesh", "--timeout=20s")
    thread.join()
    result = apiserver.kubectl("get", "ipp", "mesh", check=False)
    assert "NotFound" in result.stderr


def test_describe_shows_spec_and_events(apiserver: ApiServer) -> None:
    apply_policy(apiserver)
    uid = apiserver.kubectl("get", "ipp", "mesh", "-o", "jsonpath={.metadata.uid}").stdout
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "mesh.1", "namespace": "default"},
        "involvedObject": {
            "apiVersion": "strongmesh.io/v1alpha1",
            "kind": "IPsecPolicy",
            "name": "mesh",
            "uid": uid,
        },
        "reason": "CredentialsInvalid",
        "message": "certificate expired",
        "type": "Warning",
        "source": {"component": "strongmesh-operator"},
    }
    apiserver.kubectl("create", "-f", "-", input=yaml.safe_dump(event))
    out = apiserver.kubectl("describe", "ipp", "mesh").stdout
    assert "Enforcement:" in out
    assert "CredentialsInvalid" in out
    assert "certificate expired" in out


def test_server_side_apply_creates_and_updates(apiserver: ApiServer) -> None:
    out = apiserver.kubectl(
        "apply", "--server-side", "-f", "-", input=POLICY.format(mode="Transport")
    ).stdout
    assert "serverside-applied" in out
    apiserver.kubectl("apply", "--server-side", "-f", "-", input=POLICY.format(mode="Tunnel"))
    mode = apiserver.kubectl("get", "ipp", "mesh", "-o", "jsonpath={.spec.mode}").stdout
    assert mode == "Tunnel"


def test_explain_reads_the_crd_schema(apiserver: ApiServer) -> None:
    out = apiserver.kubectl("explain", "ipsecpolicy.spec.enforcement").stdout
    assert "Required" in out or "enforcement" in out.lower()


def test_api_resources_lists_short_names_and_categories(apiserver: ApiServer) -> None:
    out = apiserver.kubectl("api-resources", "--api-group=strongmesh.io", "-o", "wide").stdout
    lines = {r[0]: r for r in rows(out)[1:]}
    assert "ipp" in lines["ipsecpolicies"]
    assert "strongmesh" in lines["ipsecpolicies"]


@pytest.mark.parametrize(
    ("args", "header"),
    [
        (["get", "namespaces"], ["NAME", "STATUS", "AGE"]),
        (["get", "secrets", "-A"], ["NAMESPACE", "NAME", "TYPE", "DATA", "AGE"]),
        (["get", "crds"], ["NAME", "CREATED", "AT"]),
    ],
)
def test_builtin_tables_have_kubectl_columns(
    apiserver: ApiServer, args: list[str], header: list[str]
) -> None:
    apiserver.kubectl("apply", "-f", "-", input=SECRET)
    assert rows(apiserver.kubectl(*args).stdout)[0] == header


def test_imperative_create_commands_work_although_they_send_protobuf(
    apiserver: ApiServer,
) -> None:
    apiserver.kubectl("create", "namespace", "strongmesh-system")
    apiserver.kubectl(
        "create",
        "secret",
        "generic",
        "ipsec-credentials",
        "-n",
        "strongmesh-system",
        "--from-literal=ca.crt=hello",
    )
    apiserver.kubectl(
        "create", "configmap", "settings", "-n", "strongmesh-system", "--from-literal=level=2"
    )
    secret = yaml.safe_load(
        apiserver.kubectl(
            "get", "secret", "ipsec-credentials", "-n", "strongmesh-system", "-o", "yaml"
        ).stdout
    )
    assert secret["data"] == {"ca.crt": "aGVsbG8="}
    assert secret["type"] == "Opaque"
    settings = yaml.safe_load(
        apiserver.kubectl(
            "get", "configmap", "settings", "-n", "strongmesh-system", "-o", "yaml"
        ).stdout
    )
    assert settings["data"] == {"level": "2"}
    assert "generateName" not in settings["metadata"]
