"""The real kubectl (built from the server's own release) against our CRDs on kube-apiserver.

These are the commands users run (DESIGN.md): apply, get with printer columns, short names and
the category, -o yaml, describe with the operator's events, wait, get -w, delete through the
operator's ``strongmesh.io/teardown`` finalizer, server-side apply next to the operator's own
fields, explain and api-resources.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml

from controller.operator.finalizer import FINALIZER
from controller.operator.run import OperatorThread
from tests.api.operator_support import Cluster, wait_for
from tests.api.server import KubeApiServer

pytestmark = pytest.mark.api

ADMIN = "strongmesh-admin"
POLICY = """\
apiVersion: strongmesh.io/v1alpha1
kind: IPsecPolicy
metadata:
  name: mesh
spec:
  ipsecSubnets: [10.77.0.0/24]
  enforcement: {enforcement}
  credentials:
    secretRef: {{name: ipsec-credentials, namespace: strongmesh-system}}
"""
READY = (
    '{"status": {"summary": {"ready": "3/3", "establishedSAs": 6}, "conditions": '
    '[{"type": "Ready", "status": "True", "reason": "AllNodesEnforcing", "message": "ok", '
    '"lastTransitionTime": "2026-01-01T00:00:00Z"}]}}'
)


def apply_policy(apiserver: KubeApiServer, enforcement: str = "Required", *extra: str) -> str:
    text = POLICY.format(enforcement=enforcement)
    return apiserver.kubectl("apply", *extra, "-f", "-", input=text).stdout


def rows(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def jsonpath(apiserver: KubeApiServer, path: str) -> str:
    return apiserver.kubectl("get", "ipp", "mesh", "-o", f"jsonpath={{{path}}}").stdout


@contextmanager
def kubectl_process(apiserver: KubeApiServer, *args: str) -> Iterator[subprocess.Popen[str]]:
    """kubectl running in the background (killed after 60 s, and at the end, if still on)."""
    with subprocess.Popen(
        [str(apiserver.plane.binaries.kubectl), "--kubeconfig", str(apiserver.kubeconfig), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            yield proc
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_apply_creates_then_reports_unchanged_then_configured(apiserver: KubeApiServer) -> None:
    assert apply_policy(apiserver).strip() == "ipsecpolicy.strongmesh.io/mesh created"
    assert apply_policy(apiserver).strip() == "ipsecpolicy.strongmesh.io/mesh unchanged"
    assert apply_policy(apiserver, "Optional").strip() == (
        "ipsecpolicy.strongmesh.io/mesh configured"
    )
    assert jsonpath(apiserver, ".metadata.generation") == "2"


def test_get_prints_the_printer_columns_by_short_name_and_category(
    apiserver: KubeApiServer,
) -> None:
    apply_policy(apiserver)
    apiserver.kubectl("patch", "ipp", "mesh", "--subresource=status", "--type=merge", "-p", READY)
    table = rows(apiserver.kubectl("get", "ipp").stdout)
    assert table[0] == ["NAME", "READY", "SAS", "ENFORCEMENT", "MODE", "AGE"]
    assert table[1][:5] == ["mesh", "3/3", "6", "Required", "Transport"]
    by_category = rows(apiserver.kubectl("get", "strongmesh").stdout)
    assert by_category[1][0] == "ipsecpolicy.strongmesh.io/mesh"


def test_get_o_yaml_shows_defaults_and_server_metadata(apiserver: KubeApiServer) -> None:
    apply_policy(apiserver)
    obj = yaml.safe_load(apiserver.kubectl("get", "ipsecpolicy", "mesh", "-o", "yaml").stdout)
    assert obj["spec"]["mode"] == "Transport"
    assert obj["spec"]["ike"]["proposals"] == ["aes128-sha256-modp2048!"]
    assert obj["metadata"]["generation"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", obj["metadata"]["uid"])


def test_apply_of_an_invalid_policy_prints_the_servers_field_errors(
    apiserver: KubeApiServer,
) -> None:
    bad = POLICY.format(enforcement="Sometimes")
    result = apiserver.kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert (
        'spec.enforcement: Unsupported value: "Sometimes": supported values: "Required", '
        '"Optional"' in result.stderr
    )
    typo = POLICY.format(enforcement="Optional").replace("ipsecSubnets", "ipsecSubnet")
    result = apiserver.kubectl("apply", "-f", "-", input=typo, check=False)
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "spec.ipsecSubnet"' in result.stderr


def test_wait_for_ready_returns_when_the_status_changes(apiserver: KubeApiServer) -> None:
    apply_policy(apiserver)
    mark = apiserver.audit.mark()
    with kubectl_process(
        apiserver, "wait", "--for=condition=Ready", "ipp/mesh", "--timeout=30s"
    ) as waiting:
        # Once kubectl has read the policy (not Ready), the change can reach it only through
        # its watch.
        apiserver.audit.wait_for(
            mark, lambda events: any(
                e.resource == "ipsecpolicies" and e.verb in ("get", "list")
                and e.user_agent.startswith("kubectl") for e in events),
            username=ADMIN, what="kubectl wait reading the policy",
        )
        assert waiting.poll() is None
        apiserver.kubectl("patch", "ipp", "mesh", "--subresource=status", "--type=merge",
                          "-p", READY)
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.strip() == "ipsecpolicy.strongmesh.io/mesh condition met"


def test_get_watch_prints_changes(apiserver: KubeApiServer) -> None:
    apply_policy(apiserver)
    with kubectl_process(apiserver, "get", "ipp", "-w", "--output-watch-events") as watching:
        assert watching.stdout is not None
        assert watching.stdout.readline().split()[:2] == ["EVENT", "NAME"]
        assert watching.stdout.readline().split()[:2] == ["ADDED", "mesh"]
        apply_policy(apiserver, "Optional")
        modified = watching.stdout.readline().split()
        assert modified[:2] == ["MODIFIED", "mesh"]
        assert "Optional" in modified


def test_describe_shows_the_spec_and_the_operators_events(
    apiserver: KubeApiServer, cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    apply_policy(apiserver)  # its Secret does not exist
    wait_for(lambda: cluster.events(reason="CredentialsInvalid"), what="the operator's event")
    out = apiserver.kubectl("describe", "ipp", "mesh").stdout
    assert re.search(r"^\s+Enforcement:\s+Required$", out, re.M)
    events = out[out.index("Events:"):]
    assert re.search(
        r"Warning\s+CredentialsInvalid\s+.*strongmesh-operator\s+"
        r"Secret strongmesh-system/ipsec-credentials not found", events
    ), events


def test_delete_waits_for_the_operators_teardown_finalizer(
    apiserver: KubeApiServer, cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.secret("ipsec-credentials")
    apply_policy(apiserver)
    cluster.report("node-1", {"mesh": 1})
    wait_for(lambda: jsonpath(apiserver, ".metadata.finalizers") == f'["{FINALIZER}"]',
             what="the operator's finalizer")
    with kubectl_process(apiserver, "delete", "ipp", "mesh", "--timeout=60s") as deleting:
        wait_for(lambda: jsonpath(apiserver, ".metadata.deletionTimestamp").endswith("Z"),
                 what="the policy marked for deletion")
        wait_for(lambda: (cluster.condition("Ready") or {}).get("reason") == "Deleting",
                 what="Ready=False/Deleting")
        assert deleting.poll() is None  # the finalizer holds the policy: kubectl still waits
        cluster.report("node-1", {})  # the agent has torn down
        out, err = deleting.communicate(timeout=60)
    assert deleting.returncode == 0, err
    assert out.strip() == 'ipsecpolicy.strongmesh.io "mesh" deleted'
    result = apiserver.kubectl("get", "ipp", "mesh", check=False)
    assert 'ipsecpolicies.strongmesh.io "mesh" not found' in result.stderr


def test_server_side_apply_leaves_the_operators_fields_alone(
    apiserver: KubeApiServer, cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.node("node-1")
    cluster.secret("ipsec-credentials")
    out = apply_policy(apiserver, "Required", "--server-side")
    assert out.strip() == "ipsecpolicy.strongmesh.io/mesh serverside-applied"
    wait_for(lambda: cluster.condition_is("CredentialsValid", "True"), what="the status")
    wait_for(lambda: jsonpath(apiserver, ".metadata.finalizers") == f'["{FINALIZER}"]',
             what="the operator's finalizer")
    # The user's manager owns the spec, the operator its finalizer and the status: no conflict.
    apply_policy(apiserver, "Optional", "--server-side")
    assert jsonpath(apiserver, ".spec.enforcement") == "Optional"
    assert jsonpath(apiserver, ".metadata.finalizers") == f'["{FINALIZER}"]'
    managers = yaml.safe_load(apiserver.kubectl(
        "get", "ipp", "mesh", "--show-managed-fields", "-o", "yaml").stdout)["metadata"][
        "managedFields"]
    owners = {(m["manager"], m["operation"], m.get("subresource", "")) for m in managers}
    assert ("kubectl", "Apply", "") in owners
    assert ("strongmesh", "Update", "status") in owners


def test_explain_reads_the_crd_schema(apiserver: KubeApiServer) -> None:
    out = apiserver.kubectl("explain", "ipsecpolicy.spec.enforcement").stdout
    assert "FIELD: enforcement <string>" in out
    assert re.search(r"ENUM:\s+Required\s+Optional", out)
    assert "rollout without downtime" in " ".join(out.split())


def test_api_resources_lists_short_names_and_categories(apiserver: KubeApiServer) -> None:
    out = apiserver.kubectl("api-resources", "--api-group=strongmesh.io", "-o", "wide").stdout
    table = {row[0]: row for row in rows(out)[1:]}
    assert table["ipsecpolicies"][1] == "ipp"
    assert table["ipsecpolicies"][-1] == "strongmesh"
    assert table["ipsecnodes"][-1] == "strongmesh"
