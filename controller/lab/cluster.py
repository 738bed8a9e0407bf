"""The lab's ``cluster`` mode, inside user-mode-linux: API server, operator, agents via the API.

Standard library only (imported by ``inside.py``, where every import goes through hostfs).

Layout: the lab switch ``sw0`` carries only lab traffic (10.77.0.0/24). A second bridge
``mgmt0`` in the root network namespace holds the API server's address ``10.78.0.254``; each
lab node gets a second link ``mgmt`` into it (``10.78.0.i/24``), so that its agent (which runs
in the node's namespace, beside its charon and xfrm state) reaches the API while neither the
capture on ``sw0`` nor the policies for 10.77.0.0/24 ever see API traffic. The operator and
``kubectl`` run in the root namespace.

Each lab node is a ``Node`` object ``node-i`` with labels ``strongmesh.io/lab-index: "i"`` and
``lab.strongmesh.io/group`` (``a``, but ``b`` for the last node, so a selector can pick a
subset) and the InternalIP ``10.77.0.i``. Manifests (the ``--policy`` file and ``--file``
extras) arrive as JSON documents (the host parsed the YAML) and are applied like ``kubectl
apply`` would: create, or replace the existing object keeping its resourceVersion.

``ClusterMode`` is mixed into ``inside.Lab``; its ``step_*`` methods are scenario steps.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

MGMT_BRIDGE = "mgmt0"
API_ADDRESS = "10.78.0.254"
API_PORT = 6443
KUBECONFIG = "/mnt/state/kubeconfig"
GROUP_VERSION = "strongmesh.io/v1alpha1"
KUBECTL = "/usr/bin/kubectl"

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
    """The Node of lab node ``index`` (1-based) of ``count``: labels and InternalIP."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"node-{index}",
            "labels": {
                "strongmesh.io/lab-index": str(index),
                "lab.strongmesh.io/group": "b" if index == count and count > 1 else "a",
                "kubernetes.io/hostname": f"node-{index}",
            },
        },
        "status": {"addresses": [
            {"type": "InternalIP", "address": f"10.77.0.{index}"},
            {"type": "Hostname", "address": f"node-{index}"},
        ]},
    }


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
    """A tiny JSON client for the lab's API server (plain HTTP, no auth)."""

    def __init__(self, host: str = API_ADDRESS, port: int = API_PORT) -> None:
        self.host = host
        self.port = port

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
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


class ClusterMode:
    """Cluster-mode parts of ``inside.Lab`` (a mixin: uses the Lab's hosts and config)."""

    # provided by inside.Lab
    config: dict[str, Any]
    results: dict[str, Any]
    nodes: list[Any]
    start_agent: Callable[[Any], None]

    api = Api()
    apiserver: subprocess.Popen[bytes] | None = None
    operator: subprocess.Popen[bytes] | None = None

    @property
    def cluster(self) -> bool:
        return bool(self.config.get("mode") == "cluster")

    def manifests(self, name: str) -> list[dict[str, Any]]:
        docs = (self.config.get("manifests") or {}).get(name)
        if docs is None:
            raise KeyError(f"no manifest {name!r} in the lab (pass it with --file)")
        return list(docs)

    # ------------------------------------------------------------ start-up
    def build_management_network(self) -> None:
        run("ip", "link", "add", MGMT_BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{API_ADDRESS}/24", "dev", MGMT_BRIDGE)
        run("ip", "link", "set", MGMT_BRIDGE, "up")
        for index, host in enumerate(self.nodes, start=1):
            run("ip", "link", "add", f"m-{host.name}", "type", "veth", "peer", "name", "mgmt",
                "netns", host.name)
            run("ip", "link", "set", f"m-{host.name}", "master", MGMT_BRIDGE, "up")
            run("ip", "-n", host.name, "addr", "add", f"10.78.0.{index}/24", "dev", "mgmt")
            run("ip", "-n", host.name, "link", "set", "mgmt", "up")

    def python_process(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": self.config["project"],
            "HOME": "/tmp",
        }
        return subprocess.Popen(
            [self.config["python"], "-B", "-m", "controller", *args],
            env=env, cwd="/tmp", stdin=subprocess.DEVNULL,
            stdout=open(f"/mnt/lab/logs/{log_name}.log", "ab"),
            stderr=subprocess.STDOUT,
        )

    def start_apiserver(self) -> None:
        crds = os.path.join(self.config["project"], "crds")
        self.apiserver = self.python_process(
            ["apiserver", "--address", API_ADDRESS, "--port", str(API_PORT), "--crds", crds,
             "--kubeconfig", KUBECONFIG], "apiserver")
        deadline = time.time() + 90
        while True:
            try:
                self.api.get("/version")
                break
            except (OSError, ApiError):
                if self.apiserver.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        "the API server did not start (logs/apiserver.log)") from None
                time.sleep(0.1)
        with open(KUBECONFIG) as f:
            text = f.read()
        with open("/mnt/lab/kubeconfig", "w") as f:
            f.write(text)

    def register_nodes(self) -> None:
        self.apply_documents([{"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "strongmesh-system"}}])
        for index in range(1, len(self.nodes) + 1):
            node = node_object(index, len(self.nodes))
            self.api.apply({k: v for k, v in node.items() if k != "status"})
            self.api.merge_status("Node", node["metadata"]["name"], node["status"])

    def start_operator(self) -> None:
        self.operator = self.python_process(
            ["operator", "--kubeconfig", KUBECONFIG, "--status-interval", "0.5",
             "--teardown-timeout", "120", "--resync-interval", "10"], "operator")

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

    def agent_input_args(self, host: Any) -> list[str]:
        """How an agent gets its inputs: the API (cluster) or the shared policy file."""
        if self.cluster:
            return ["--kubeconfig", KUBECONFIG]
        return ["--policy-file", str(getattr(self, "policy_file")),  # noqa: B009
                "--status-file", host.status_file]

    def start_cluster(self) -> None:
        """Management network, API server, Nodes, operator, agents, then the policy file."""
        self.build_management_network()
        self.start_apiserver()
        self.mark_event("api server")
        self.register_nodes()
        self.start_operator()
        for host in self.nodes:
            self.start_agent(host)
        self.wait_ipsecnodes(float(self.config.get("ready_timeout", 120)))
        self.mark_event("agents up")
        self.results["applied"] = self.apply_documents(self.manifests("policy.yaml"))

    def wait_ipsecnodes(self, timeout: float) -> None:
        """Until every agent wrote its IPsecNode (first pass done), so that the time to Ready
        measured from the policy's creation is the system's, not the agents' start-up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_control_plane()
            items = self.api.get(object_path("IPsecNode")).get("items", [])
            if {o["metadata"]["name"] for o in items} >= {h.name for h in self.nodes}:
                return
            for host in self.nodes:
                if host.agent is not None and host.agent.poll() is not None:
                    raise RuntimeError(f"agent on {host.name} exited with {host.agent.returncode}")
            time.sleep(0.2)
        raise RuntimeError(f"not every agent wrote its IPsecNode within {timeout} s")

    def refresh_cluster(self, timeout: float = 10.0) -> bool:
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
        states = getattr(self, "xfrm_states")  # noqa: B009 - provided by inside.Lab
        items = self.api.get(object_path("IPsecNode")).get("items", [])
        reported = {
            o["metadata"]["name"]: int((o.get("status") or {}).get("establishedSAs", 0))
            for o in items
        }
        for host in self.nodes:
            if reported.get(host.name, 0) * 2 != len(states(host)):
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

    def check_control_plane(self) -> None:
        for what, proc in (("API server", self.apiserver), ("operator", self.operator)):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the {what} exited with {proc.returncode}")

    def cluster_status(self, name: str) -> dict[str, Any] | None:
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
        """Run kubectl against the lab API; where it is absent (config ``kubectl`` names no
        file), ``strongmesh status`` stands in for ``get ipsecpolicies,ipsecnodes`` and the
        API's JSON (which YAML readers read) for ``get KIND NAME -o yaml``."""
        kubectl = str(self.config.get("kubectl", KUBECTL))
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp",
               "PYTHONPATH": self.config["project"], "PYTHONDONTWRITEBYTECODE": "1"}
        if kubectl and os.path.exists(kubectl):
            argv, shown = [kubectl, "--kubeconfig", KUBECONFIG, *args], ["kubectl", *args]
        elif list(args) == ["get", "ipsecpolicies,ipsecnodes"]:
            argv = [self.config["python"], "-B", "-m", "controller", "status",
                    "--kubeconfig", KUBECONFIG]
            shown = ["strongmesh", "status"]
        elif len(args) == 5 and args[0] == "get" and args[3:] == ("-o", "yaml"):
            kind = {"ipsecpolicy": "IPsecPolicy", "ipsecnode": "IPsecNode"}.get(args[1], "")
            obj = self.api.get_or_none(object_path(kind, args[2])) if kind else None
            return {"command": f"GET {kind}/{args[2]} (kubectl absent; JSON is YAML)",
                    "exit": 0 if obj is not None else 1,
                    "stdout": json.dumps(obj, indent=2) + "\n" if obj is not None else "",
                    "stderr": "" if obj is not None else "not found"}
        else:
            return {"command": " ".join(["kubectl", *args]), "exit": 127, "stdout": "",
                    "stderr": f"kubectl not found at {kubectl!r}"}
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                                check=False)
        return {"command": " ".join(shown), "exit": result.returncode,
                "stdout": result.stdout, "stderr": result.stderr}

    def collect_cluster(self) -> None:
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

    # --------------------------------------------------------------- steps
    def step_apply(self, step: dict[str, Any]) -> list[str]:
        """``{"do": "apply", "file": NAME}``: apply a manifest file (``--file NAME=PATH``)."""
        return self.apply_documents(self.manifests(step["file"]))

    def step_delete(self, step: dict[str, Any]) -> str:
        """``{"do": "delete", "kind": K, "name": N, "namespace"?: NS}``."""
        self.api.delete(step.get("kind", "IPsecPolicy"), step["name"], step.get("namespace"))
        return f"{step.get('kind', 'IPsecPolicy')}/{step['name']} deleted"

    def step_get(self, step: dict[str, Any]) -> Any:
        """``{"do": "get", "kind": K, "name": N}``: the object as served (None if absent)."""
        return self.api.get_or_none(
            object_path(step.get("kind", "IPsecPolicy"), step["name"], step.get("namespace"))
        )

    def step_wait_policy(self, step: dict[str, Any]) -> dict[str, Any]:
        """Wait until a policy's condition has a status (and message text) for its current
        generation: ``{"do": "wait_policy", "name": N, "condition": "Ready", "status":
        "True", "message_contains"?: T, "timeout"?: s}``. Returns the object's status."""
        name = step["name"]
        type_ = step.get("condition", "Ready")
        want = step.get("status", "True")
        needle = step.get("message_contains")
        started = time.time()
        deadline = started + float(step.get("timeout", 60))
        last: Any = None
        while time.time() < deadline:
            last = self.api.get_or_none(object_path("IPsecPolicy", name))
            status = (last or {}).get("status") or {}
            cond = condition(last, type_)
            if (
                last is not None
                and status.get("observedGeneration") == last["metadata"].get("generation")
                and cond is not None
                and cond.get("status") == want
                and (needle is None or needle in str(cond.get("message", "")))
            ):
                return {"seconds": round(time.time() - started, 3), "status": status,
                        "generation": last["metadata"].get("generation")}
            time.sleep(0.2)
        raise RuntimeError(f"{name}: {type_} never became {want} ({needle or ''}); last "
                           f"status: {json.dumps((last or {}).get('status'))[:600]}")

    def step_wait_gone(self, step: dict[str, Any]) -> float:
        """``{"do": "wait_gone", "kind"?: K, "name": N}``: until the API answers 404."""
        path = object_path(step.get("kind", "IPsecPolicy"), step["name"], step.get("namespace"))
        started = time.time()
        deadline = started + float(step.get("timeout", 60))
        while time.time() < deadline:
            if self.api.get_or_none(path) is None:
                return round(time.time() - started, 3)
            time.sleep(0.2)
        raise RuntimeError(f"{path} still exists after {step.get('timeout', 60)} s")

    def step_kubectl(self, step: dict[str, Any]) -> dict[str, Any]:
        """``{"do": "kubectl", "args": [...], "label": L}``: output kept in ``kubectl[L]``."""
        result = self.kubectl(*step["args"])
        self.results.setdefault("kubectl", {})[step.get("label", " ".join(step["args"]))] = result
        return result

    def step_owned_policies(self, step: dict[str, Any]) -> dict[str, int]:
        """``{"do": "owned_policies"}``: each node's count of xfrm policies in our bands."""
        counter = getattr(self, "owned_policies")  # noqa: B009 - provided by inside.Lab
        return {h.name: int(counter(h)) for h in self.nodes}


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout
