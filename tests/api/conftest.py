"""Fixtures for API-tier tests: the embedded Kubernetes API on a free localhost port.

``apiserver`` (function-scoped: every test gets an empty cluster with the CRDs of ``crds/``)
yields an ``ApiServer`` with ``.url``, ``.kubeconfig`` (a kubeconfig file for kubectl or
``kubernetes.config.load_kube_config``) and ``.client()`` (an official-client ``ApiClient``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from controller.apiserver import ServerThread, write_kubeconfig
from controller.operator.run import OperatorThread
from tests.api.operator_support import Cluster, running_operator
from tests.environment import missing

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


@dataclass
class ApiServer:
    """A running embedded API server and ways to talk to it."""

    thread: ServerThread
    kubeconfig: Path
    _clients: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.thread.url

    def client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for this server (closed at teardown)."""
        config = k8s.Configuration()
        config.host = self.url
        api_client = k8s.ApiClient(config)
        self._clients.append(api_client)
        return api_client

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this server (tests skip when it is absent)."""
        binary = shutil.which("kubectl")
        if binary is None:
            missing("kubectl is not on PATH")
        result = subprocess.run(
            [binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def close(self) -> None:
        for api_client in self._clients:
            api_client.close()
        self.thread.stop()


def start_apiserver(tmp_path: Path, **options: Any) -> ApiServer:
    """Start a server with ``crds/`` loaded and a kubeconfig in ``tmp_path``."""
    thread = ServerThread(crd_paths=[CRDS] if CRDS.is_dir() else [], **options).start()
    config = write_kubeconfig(tmp_path / "kubeconfig", thread.url)
    return ApiServer(thread, config)


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServer]:
    """An embedded API server with the project's CRDs, fresh for each test."""
    server = start_apiserver(tmp_path)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def cluster(apiserver: ApiServer) -> Cluster:
    """Helpers to create Nodes, Secrets, policies and IPsecNodes in the test's API server."""
    return Cluster(apiserver.client())


@pytest.fixture
def operator(apiserver: ApiServer) -> Iterator[OperatorThread]:
    """The real operator (kopf) running against the test's API server in its own thread."""
    with running_operator(str(apiserver.kubeconfig)) as running:
        yield running
