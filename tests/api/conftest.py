"""Fixtures for API-tier tests: a real kube-apiserver with the chart installed.

``control_plane`` (session): etcd + kube-apiserver from ``hack/control-plane`` with the audit
log on, the chart applied with kubectl (``hack.labkit.identities.install_chart``); stopped at the
end of the session, also when it fails. ``clean`` (every test, automatically) removes what the
test created once it is over — every object of our CRDs (finalizers stripped first), Nodes,
Secrets, ConfigMaps and Events of the test namespaces, CSRs, throwaway CRDs — and waits until
the server no longer serves any of it, so tests never see each other's objects.

``apiserver`` is one test's ``KubeApiServer`` (admin client, kubectl, the chart's identities,
the audit log); ``cluster`` drives it as an admin plus simulated agents; ``operator`` runs the
real operator with the chart's operator identity.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controller.operator.run import OperatorThread
from hack.labkit.controlplane import ControlPlane, ControlPlaneError, up
from hack.labkit.identities import install_chart, operator_kubeconfig
from tests.api.operator_support import Cluster, G, running_operator
from tests.api.server import (
    CHART_VALUES,
    OTHER_NAMESPACE,
    TEST_NAMESPACES,
    KubeApiServer,
    new_client,
)
from tests.environment import missing

# CRDs that tests create for themselves (the Reflector's tests) live in this group.
THROWAWAY_GROUP = "test.strongmesh.io"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The session's control plane with the chart installed (once)."""
    directory = tmp_path_factory.mktemp("control-plane")
    try:
        plane = up(directory, audit=True)
    except ControlPlaneError as error:
        missing(f"no Kubernetes control plane: {error}")
    try:
        install_chart(plane, CHART_VALUES)
        plane.kubectl("create", "namespace", OTHER_NAMESPACE)
        yield plane
    finally:
        plane.down()
        # etcd preallocates its WAL (64 MB); pytest keeps the last runs' directories.
        shutil.rmtree(directory / "etcd", ignore_errors=True)


@pytest.fixture(scope="session")
def operator_config(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's kubeconfig (a token of its ServiceAccount), minted once."""
    return operator_kubeconfig(control_plane, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="session")
def installed(control_plane: ControlPlane) -> set[tuple[str, str, str]]:
    """Secrets and ConfigMaps that exist before any test ran, the chart's (spared by
    ``clean``): (kind, namespace, name)."""
    admin: Any = k8s.CoreV1Api(_admin_client(control_plane))
    try:
        return {
            (kind, ns, item.metadata.name)
            for ns in TEST_NAMESPACES
            for kind, listing in (("Secret", admin.list_namespaced_secret),
                                  ("ConfigMap", admin.list_namespaced_config_map))
            for item in listing(ns).items
        }
    finally:
        admin.api_client.close()


def _admin_client(plane: ControlPlane) -> Any:
    return new_client(plane.kubeconfig)


def _gone(what: str, listing: Callable[[], list[Any]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while left := listing():
        if time.monotonic() > deadline:
            raise AssertionError(f"cleanup: {what} still there: {left}")
        time.sleep(0.05)


def _ignore_missing(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except ApiException as error:
        if error.status != 404:
            raise


def remove_test_objects(plane: ControlPlane, spare: set[tuple[str, str, str]]) -> None:
    """Delete what tests create and wait until it is gone."""
    api_client = _admin_client(plane)
    try:
        core: Any = k8s.CoreV1Api(api_client)
        custom: Any = k8s.CustomObjectsApi(api_client)
        ext: Any = k8s.ApiextensionsV1Api(api_client)
        csr: Any = k8s.CertificatesV1Api(api_client)
        crds = ext.list_custom_resource_definition().items
        # Every kind of ours (policies, IPsecNodes, peer slices, ...), finalizers stripped
        # first: no operator runs any more to release them.
        ours = [(c.spec.versions[0].name, c.spec.names.plural) for c in crds if c.spec.group == G]

        def objects(version: str, plural: str) -> list[str]:
            listing = custom.list_cluster_custom_object(G, version, plural)["items"]
            return [item["metadata"]["name"] for item in listing]

        def secrets(namespace: str) -> list[str]:
            return [
                s.metadata.name for s in core.list_namespaced_secret(namespace).items
                if ("Secret", namespace, s.metadata.name) not in spare
            ]

        def config_maps(namespace: str) -> list[str]:
            return [
                c.metadata.name for c in core.list_namespaced_config_map(namespace).items
                if ("ConfigMap", namespace, c.metadata.name) not in spare
            ]

        def throwaway() -> list[str]:
            return [
                c.metadata.name for c in ext.list_custom_resource_definition().items
                if c.spec.group == THROWAWAY_GROUP
            ]

        for version, plural in ours:
            for item in custom.list_cluster_custom_object(G, version, plural)["items"]:
                name = item["metadata"]["name"]
                if item["metadata"].get("finalizers"):
                    _ignore_missing(custom.patch_cluster_custom_object, G, version, plural,
                                    name, {"metadata": {"finalizers": None}})
                _ignore_missing(custom.delete_cluster_custom_object, G, version, plural, name)
        core.delete_collection_node()
        for namespace in TEST_NAMESPACES:
            core.delete_collection_namespaced_event(namespace)
            for name in secrets(namespace):
                _ignore_missing(core.delete_namespaced_secret, name, namespace)
            for name in config_maps(namespace):
                _ignore_missing(core.delete_namespaced_config_map, name, namespace)
        csr.delete_collection_certificate_signing_request()
        for name in throwaway():
            _ignore_missing(ext.delete_custom_resource_definition, name)

        for version, plural in ours:
            _gone(plural, partial(objects, version, plural))
        _gone("Nodes", lambda: core.list_node().items)
        for namespace in TEST_NAMESPACES:
            _gone(f"Events in {namespace}",
                  partial(lambda ns: core.list_namespaced_event(ns).items, namespace))
            _gone(f"Secrets in {namespace}", partial(secrets, namespace))
            _gone(f"ConfigMaps in {namespace}", partial(config_maps, namespace))
        _gone("CSRs", lambda: csr.list_certificate_signing_request().items)
        _gone("throwaway CRDs", throwaway)
    finally:
        api_client.close()


@pytest.fixture(autouse=True)
def clean(control_plane: ControlPlane, installed: set[tuple[str, str, str]]) -> Iterator[None]:
    """After each test (set up first, so torn down last): remove what it created."""
    yield
    remove_test_objects(control_plane, installed)


@pytest.fixture
def apiserver(
    control_plane: ControlPlane, operator_config: Path, tmp_path: Path
) -> Iterator[KubeApiServer]:
    """The session's kube-apiserver, as this test sees it."""
    server = KubeApiServer(control_plane, tmp_path, operator_config)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def cluster(apiserver: KubeApiServer) -> Cluster:
    """Create Nodes, Secrets and policies as an admin; report IPsecNodes as each node's agent."""
    return Cluster(apiserver)


@pytest.fixture
def operator(apiserver: KubeApiServer) -> Iterator[OperatorThread]:
    """The real operator (kopf) with the chart's operator identity, in its own thread."""
    with running_operator(str(apiserver.operator_kubeconfig())) as running:
        yield running
