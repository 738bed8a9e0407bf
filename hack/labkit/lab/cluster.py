"""The lab's ``cluster`` mode, inside user-mode-linux: agents and the scenario via the API.

Standard library only (imported by ``inside.py``, where every import goes through hostfs).

The control plane (a real kube-apiserver + etcd) and the operator run on the host
(``clusterhost.py``), which also created the Node objects and each agent's identity. Layout
inside: the lab switch ``sw0`` carries only lab traffic (10.77.0.0/24). A second bridge
``mgmt0`` in the root network namespace holds ``vec0``, the lab kernel's end of the host's tap
device (the API server listens on the host end, ``<prefix>.254``); each lab node gets a second
link ``mgmt`` into it (``<prefix>.i/24``), so that its agent (which runs in the node's
namespace, beside its charon and xfrm state) reaches the API while neither the capture on
``sw0`` nor the policies for 10.77.0.0/24 ever see API traffic. The scenario's API calls and
``kubectl`` run in the root namespace (``<prefix>.253``) as the cluster's admin.

Each lab node is a ``Node`` object ``node-i`` with labels ``strongmesh.io/lab-index: "i"`` and
``lab.strongmesh.io/group`` (``a``, but ``b`` for the last node, so a selector can pick a
subset), the InternalIP ``10.77.0.i`` and the pod CIDR ``10.244.i.0/24`` (``spec.podCIDR`` and
``spec.podCIDRs``, set when the host creates the Node: an admin may set them on create, and they
are immutable once set; with ``--pods`` that is where the node's pod host lives). Manifests
(the ``--policy`` file and ``--file`` extras) arrive as JSON documents (the host parsed the
YAML) and are applied like ``kubectl apply`` would: create, or replace the existing object
keeping its resourceVersion.

``Cluster`` is what ``inside.Lab`` holds in cluster mode; the scenario steps that use it are
in ``steps_cluster``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hack.labkit.lab.netns import bridge_port
from hack.labkit.lab.network import Host
from hack.labkit.lab.shell import sh
from hack.labkit.lab.topology import node_address, node_name, node_pod_cidr
from hack.labkit.lab.xfrm import esp_states

MGMT_BRIDGE = "mgmt0"
UPLINK = "vec0"  # UML's vector network device on the host's tap (clusterhost.py)
GROUP_VERSION = "strongmesh.io/v1alpha1"

# kind -> (API path prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Secret": ("/api/v1", "secrets", True),
    "Node": ("/api/v1", "nodes", False),
    "IPsecPolicy": ("/apis/strongmesh.io/v1alpha1", "ipsecpolicies", False),
    "IPsecNode": ("/apis/strongmesh.io/v1alpha1", "ipsecnodes", False),
}


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def object_path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    """The REST path of a kind's collection, or of one object when ``name`` is given."""
    prefix, plural, namespaced = KINDS[kind]
    path = prefix
    if namespaced:
        path += f"/namespaces/{namespace or 'default'}"
    path += f"/{plural}"
    return path if name is None else f"{path}/{name}"


def node_object(index: int, count: int) -> dict[str, Any]:
    """The Node of lab node ``index`` (1-based) of ``count``: labels, pod CIDR, InternalIP."""
    name = node_name(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "strongmesh.io/lab-index": str(index),
                "lab.strongmesh.io/group": "b" if index == count and count > 1 else "a",
                "kubernetes.io/hostname": name,
            },
        },
        "spec": {"podCIDR": node_pod_cidr(index), "podCIDRs": [node_pod_cidr(index)]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node_address(index)},
            {"type": "Hostname", "address": name},
        ]},
    }


def secret_text(secret: Mapping[str, Any], key: str) -> str:
    """A Secret's value for ``key`` (``data`` base64, else ``stringData``), '' when absent."""
    data = (secret.get("data") or {}).get(key)
    if data:
        return base64.b64decode(data).decode()
    return str((secret.get("stringData") or {}).get(key, ""))


def policy_certificates(ipsecnodes: Sequence[Mapping[str, Any]], policy: str
                        ) -> dict[str, dict[str, Any] | None]:
    """Node -> the certificate its IPsecNode says it uses for ``policy`` (None: none)."""
    out: dict[str, dict[str, Any] | None] = {}
    for obj in ipsecnodes:
        name = str((obj.get("metadata") or {}).get("name"))
        rows = [p for p in ((obj.get("status") or {}).get("policies") or [])
                if p.get("name") == policy]
        out[name] = dict(rows[0]["certificate"]) if rows and rows[0].get("certificate") else None
    return out


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def policy_ready(obj: Mapping[str, Any] | None) -> bool:
    """Ready=True for the object's current generation, as the operator wrote it."""
    if not obj:
        return False
    status = obj.get("status") or {}
    if status.get("observedGeneration") != (obj.get("metadata") or {}).get("generation"):
        return False
    ready = condition(obj, "Ready")
    return ready is not None and ready.get("status") == "True"


def status_document(ipsecnode: Mapping[str, Any]) -> dict[str, Any]:
    """An IPsecNode in the shape of a standalone agent's status file (what the report reads)."""
    spec = ipsecnode.get("spec") or {}
    return {
        "node": (ipsecnode.get("metadata") or {}).get("name"),
        "addresses": spec.get("addresses", []),
        "identity": spec.get("identity", ""),
        "status": ipsecnode.get("status") or {},
    }


class Api:
    """A tiny JSON client for the lab's API server: HTTPS, the admin's client certificate."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        server = str(config["server"]).removeprefix("https://")
        self.host, _, port = server.rpartition(":")
        self.port = int(port)
        self.context = ssl.create_default_context(cafile=str(config["ca"]))
        self.context.load_cert_chain(str(config["client_cert"]), str(config["client_key"]))

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=15,
                                           context=self.context)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            conn.close()
        if response.status >= 400:
            raise ApiError(response.status, text)
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def ready(self) -> bool:
        """``/readyz`` answers ``ok`` (plain text, not JSON)."""
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=5,
                                           context=self.context)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            return response.status == 200 and response.read().strip() == b"ok"
        finally:
            conn.close()

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def apply(self, doc: Mapping[str, Any]) -> str:
        """Create the object, or replace it (keeping its resourceVersion): ``created``/..."""
        kind = str(doc["kind"])
        meta = doc.get("metadata") or {}
        name, namespace = str(meta["name"]), meta.get("namespace")
        path = object_path(kind, name, namespace)
        current = self.get_or_none(path)
        if current is None:
            self.request("POST", object_path(kind, None, namespace), dict(doc))
            return "created"
        body = json.loads(json.dumps(doc))
        body.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        for key in ("finalizers", "labels", "annotations"):
            if key in current["metadata"] and key not in body["metadata"]:
                body["metadata"][key] = current["metadata"][key]
        self.request("PUT", path, body)
        return "replaced"

    def merge_status(self, kind: str, name: str, status: Mapping[str, Any]) -> None:
        self.request("PATCH", object_path(kind, name) + "/status", {"status": dict(status)},
                     "application/merge-patch+json")

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.request("DELETE", object_path(kind, name, namespace))


class Cluster:
    """Cluster mode inside the lab: the management network to the host's API server, the
    agents started against it, readiness and statuses as the API serves them, and what it
    serves at the end. The scenario's cluster steps are in ``steps_cluster``."""

    def __init__(self, config: Mapping[str, Any], results: dict[str, Any],
                 nodes: Sequence[Host]) -> None:
        self.config = config
        self.results = results
        self.nodes = nodes
        self._api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.config["api"])
        return self._api

    @property
    def mgmt_prefix(self) -> str:
        return str(self.config["api"]["mgmt_prefix"])

    def manifests(self, name: str) -> list[dict[str, Any]]:
        docs = (self.config.get("manifests") or {}).get(name)
        if docs is None:
            raise KeyError(f"no manifest {name!r} in the lab (pass it with --file)")
        return list(docs)

    # ------------------------------------------------------------ start-up
    def build_management_network(self) -> None:
        sh("ip", "link", "add", MGMT_BRIDGE, "type", "bridge")
        sh("ip", "link", "set", UPLINK, "master", MGMT_BRIDGE, "up")
        sh("ip", "addr", "add", f"{self.mgmt_prefix}.253/24", "dev", MGMT_BRIDGE)
        sh("ip", "link", "set", MGMT_BRIDGE, "up")
        for index, host in enumerate(self.nodes, start=1):
            bridge_port(MGMT_BRIDGE, host.name, f"m-{host.name}", "mgmt",
                        f"{self.mgmt_prefix}.{index}/24")
        self.wait_api(30.0)

    def wait_api(self, timeout: float) -> None:
        """Until the host's API server answers through the tap (the link takes a moment)."""
        deadline = time.time() + timeout
        while True:
            try:
                if self.api.ready():
                    return
                raise OSError("/readyz is not ok yet")
            except OSError as exc:
                if time.time() > deadline:
                    raise RuntimeError(f"the API server at {self.config['api']['server']} is "
                                       f"not reachable from the lab: {exc}") from None
                time.sleep(0.1)

    def apply_documents(self, docs: list[dict[str, Any]]) -> list[str]:
        """Namespaces first (as kubectl users must), then the rest in file order."""
        done = []
        ordered = [d for d in docs if d.get("kind") == "Namespace"]
        ordered += [d for d in docs if d.get("kind") != "Namespace"]
        for doc in ordered:
            meta = doc.get("metadata") or {}
            namespace = meta.get("namespace")
            if namespace and doc.get("kind") != "Namespace":
                self.ensure_namespace(str(namespace))
            verb = self.api.apply(doc)
            done.append(f"{doc.get('kind')}/{meta.get('name')} {verb}")
        return done

    def ensure_namespace(self, name: str) -> None:
        if self.api.get_or_none(object_path("Namespace", name)) is None:
            self.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def start(self, start_agent: Callable[[Host], None]) -> None:
        """Management network to the host's API server, agents, then the policy file (the
        Nodes and the operator are there already: the host started them)."""
        self.build_management_network()
        self.mark_event("api reachable")
        self.ensure_namespace("strongmesh-system")
        for host in self.nodes:
            start_agent(host)
        self.wait_ipsecnodes(float(self.config.get("ready_timeout", 120)))
        self.mark_event("agents up")
        self.results["applied"] = self.apply_documents(self.manifests("policy.yaml"))

    def wait_ipsecnodes(self, timeout: float) -> None:
        """Until every agent wrote its IPsecNode (first pass done), so that the time to Ready
        measured from the policy's creation is the system's, not the agents' start-up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            items = self.api.get(object_path("IPsecNode")).get("items", [])
            if {o["metadata"]["name"] for o in items} >= {h.name for h in self.nodes}:
                return
            for host in self.nodes:
                if host.agent is not None and host.agent.poll() is not None:
                    raise RuntimeError(f"agent on {host.name} exited with {host.agent.returncode}")
            time.sleep(0.2)
        raise RuntimeError(f"not every agent wrote its IPsecNode within {timeout} s")

    def refresh(self, timeout: float = 10.0) -> bool:
        """Ask every running agent for a pass (SIGHUP), then wait until the API agrees with
        the kernels: an IPsecNode is rewritten only when something changed, so there is no
        write to wait for; instead each node's ``establishedSAs`` must match its ESP states
        (two per CHILD_SA) and the policies' totals the nodes' (the operator aggregated).
        False if they did not agree within ``timeout`` (SAs still coming and going)."""
        for host in self.nodes:
            if host.agent is not None and host.agent.poll() is None:
                host.agent.send_signal(signal.SIGHUP)
        deadline = time.time() + timeout
        time.sleep(0.5)
        while time.time() < deadline:
            try:
                if self.api_agrees_with_kernels():
                    self.results.setdefault("refreshes", []).append(True)
                    return True
            except (OSError, ApiError):
                pass
            time.sleep(0.25)
        self.results.setdefault("refreshes", []).append(False)
        return False

    def api_agrees_with_kernels(self) -> bool:
        items = self.api.get(object_path("IPsecNode")).get("items", [])
        reported = {
            o["metadata"]["name"]: int((o.get("status") or {}).get("establishedSAs", 0))
            for o in items
        }
        for host in self.nodes:
            if reported.get(host.name, 0) * 2 != len(esp_states(host)):
                return False
        policies = self.api.get(object_path("IPsecPolicy")).get("items", [])
        aggregated = sum(
            int(((p.get("status") or {}).get("summary") or {}).get("establishedSAs", 0))
            for p in policies
        )
        return not policies or aggregated == sum(reported.values())

    def mark_event(self, event: str) -> None:
        self.results["timeline"][event] = round(time.time() - self.results["started"], 3)

    # ----------------------------------------------------------- readiness
    def policies_ready(self, names: list[str]) -> bool:
        for name in names:
            try:
                obj = self.api.get_or_none(object_path("IPsecPolicy", name))
            except (OSError, ApiError):
                return False
            if not policy_ready(obj):
                return False
        return True

    def node_status(self, name: str) -> dict[str, Any] | None:
        """A node's IPsecNode in the shape of a status file (None: not served)."""
        try:
            obj = self.api.get_or_none(object_path("IPsecNode", name))
        except (OSError, ApiError):
            return None
        return None if obj is None else status_document(obj)

    def policy_statuses(self) -> dict[str, Any]:
        """Each IPsecPolicy's ``.status`` as the API serves it."""
        items = self.api.get(object_path("IPsecPolicy")).get("items", [])
        return {o["metadata"]["name"]: o.get("status") or {} for o in items}

    def kubectl(self, *args: str) -> dict[str, Any]:
        """Run kubectl (built with the control plane, same release) as the cluster's admin."""
        api = self.config["api"]
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp"}
        result = subprocess.run(
            [str(api["kubectl"]), "--kubeconfig", str(api["admin_kubeconfig"]), *args],
            capture_output=True, text=True, env=env, timeout=60, check=False)
        return {"command": " ".join(["kubectl", *args]), "exit": result.returncode,
                "stdout": result.stdout, "stderr": result.stderr}

    def collect(self) -> None:
        """What the API serves at the end: policy statuses and kubectl's views of them."""
        try:
            statuses = self.policy_statuses()
        except (OSError, ApiError) as exc:
            self.results["errors"].append(f"cannot read policies at the end: {exc}")
            return
        self.results["policy_status"] = statuses
        outputs = self.results.setdefault("kubectl", {})
        outputs["get"] = self.kubectl("get", "ipsecpolicies,ipsecnodes")
        for name in statuses:
            outputs[f"yaml {name}"] = self.kubectl("get", "ipsecpolicy", name, "-o", "yaml")
        outputs["ipsecnodes"] = self.kubectl("get", "ipsecnodes", "-o", "wide")

    def issuer_secret(self, reference: str) -> dict[str, Any]:
        """The issuer Secret ``namespace/name`` as the API serves it (read as the admin)."""
        namespace, _, name = reference.partition("/")
        secret = self.api.get_or_none(object_path("Secret", name, namespace))
        if secret is None:
            raise RuntimeError(f"no Secret {reference}")
        return dict(secret)
