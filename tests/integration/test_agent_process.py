"""The agent as a process on the host: real charon (in a netns) and real xfrm policies.

The host kernel has no ESP, so no CHILD_SA completes here (the kernel lab proves those); what
is checked is the process's contract: it enforces the policy file, writes its status, leaves
everything in place when stopped, and tears down only when the policy goes away.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.certs import make_ca, make_cert, secret_data, secret_manifest
from tests.charon import CharonProcess, start_charon

ROOT = Path(__file__).resolve().parents[2]
CA = make_ca()
SECRET = secret_manifest(secret_data(make_cert(CA, "strongmesh-node"), cas=[CA]),
                         name="creds", namespace="ns")
POLICY = {
    "apiVersion": "strongmesh.io/v1alpha1",
    "kind": "IPsecPolicy",
    "metadata": {"name": "mesh"},
    "spec": {
        "ipsecSubnets": ["10.77.0.0/24"],
        "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
    },
}


@pytest.fixture
def charon() -> Iterator[CharonProcess]:
    with start_charon() as process:
        yield process


def wait_for(condition: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def owned_policies(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "xfrm", "policy"], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if " priority 7" in line or " priority 8" in line]


def conns(charon: CharonProcess) -> str:
    return subprocess.run(["swanctl", "--list-conns", "--uri", charon.uri], capture_output=True,
                          text=True, check=True).stdout


def start_agent(charon: CharonProcess, policy_file: Path, status: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", charon.netns, sys.executable, "-m", "controller.cli.agent",
         "--node", "node-1", "--address", "10.77.0.1", "--policy-file", str(policy_file),
         "--status-file", str(status), "--vici", charon.uri, "--resync-seconds", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def enforcing(status: Path) -> bool:
    try:
        data = json.loads(status.read_text())
    except (OSError, ValueError):
        return False
    policies = data["status"]["policies"]
    return bool(policies) and all(p["enforcing"] for p in policies)


def test_agent_enforces_survives_its_stop_and_tears_down_only_when_policy_goes(
    charon: CharonProcess, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump_all([POLICY, SECRET]))
    status = tmp_path / "status.json"
    agent = start_agent(charon, policy_file, status)
    try:
        wait_for(lambda: enforcing(status))
        data = json.loads(status.read_text())
        assert data["identity"] == "C=US, O=strongmesh, CN=strongmesh-node"
        assert data["status"]["errors"] == []
        installed = owned_policies(charon.netns)
        assert len(installed) == 4  # self bypass in/out, protect in/out
        assert "sm-mesh" in conns(charon)
        # strongmesh drain reads the policies' shutdownTimeoutSeconds beside the VICI socket
        assert (charon.workdir / "shutdown-timeout-seconds").read_text() == "30\n"

        agent.send_signal(signal.SIGTERM)
        first_output = agent.communicate(timeout=10)[0]
        assert agent.returncode == 0, first_output
        assert "stopping after" in first_output
        assert owned_policies(charon.netns) == installed, "stopping must not tear down"
        assert "sm-mesh" in conns(charon)

        status.unlink()
        agent = start_agent(charon, policy_file, status)
        wait_for(lambda: enforcing(status))
        policy_file.write_text(yaml.safe_dump_all([SECRET]))  # the policy is gone
        wait_for(lambda: owned_policies(charon.netns) == [])
        wait_for(lambda: "sm-mesh" not in conns(charon))
    finally:
        agent.kill()
        output = agent.communicate()[0]
        print(output)
    assert "Traceback" not in output
