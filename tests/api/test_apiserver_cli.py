"""``strongmesh apiserver`` as a process: writes a kubeconfig, serves, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.api
REPO = Path(__file__).resolve().parents[2]


def test_cli_serves_the_crds_and_writes_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "apiserver",
            "--port",
            "0",
            "--crds",
            str(REPO / "crds"),
            "--kubeconfig",
            str(kubeconfig),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            while not kubeconfig.exists() and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(f"{url}/apis/strongmesh.io/v1alpha1", timeout=10) as r:
                names = {res["name"] for res in json.loads(r.read())["resources"]}
            assert {"ipsecpolicies", "ipsecpolicies/status", "ipsecnodes"} <= names
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0
