"""charts/strongmesh renders with the real Helm engine into objects valid for Kubernetes 1.28-1.33.

Rendering goes through helm-python-sdk (Helm's own Go library), so template syntax, value
coalescing and values.schema.json are checked exactly as `helm install` would check them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "strongmesh"
RELEASE = "strongmesh"
NAMESPACE = "strongmesh-system"
K8S_VERSIONS = ["1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]
WRITE_VERBS = {
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "escalate",
    "bind",
    "impersonate",
}
# Kinds that are not built into Kubernetes; kubernetes-validate has no schema for them.
NOT_BUILT_IN = {"ServiceMonitor"}
VICI_URI = "unix:///var/run/strongmesh/charon.vici"

Json = dict[str, Any]


@cache
def _chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_files(values: Json | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    return _chart().render(
        copy.deepcopy(values or {}), name=RELEASE, namespace=namespace, is_install=True
    )


def render(values: Json | None = None, namespace: str = NAMESPACE) -> list[Json]:
    """Every object the chart renders with these values (NOTES.txt left out)."""
    objects: list[Json] = []
    for path, text in sorted(render_files(values, namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[Json], kind: str) -> list[Json]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Json], kind: str, name_suffix: str = "") -> Json:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def containers(objects: list[Json], kind: str) -> dict[str, Json]:
    pod = one(objects, kind)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def values_for(version: str) -> Json:
    """What an operator of a cluster at this version would set (as values.yaml documents)."""
    minor = int(version.split(".")[1])
    return {"agent": {"nodeRestriction": {"enabled": minor >= 30}}}


# --- renders, lints, validates -------------------------------------------------------------


def test_chart_lints_without_warnings() -> None:
    report = helm.lint(str(CHART), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_chart_lints_for_each_kubernetes_version(version: str) -> None:
    report = helm.lint(str(CHART), values_for(version), strict=True, kube_version=f"v{version}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


FULL_VALUES: Json = {
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "imagePullSecrets": [{"name": "registry"}],
    "commonLabels": {"team": "net"},
    "credentials": {"namespace": "certs", "secretNames": ["a", "b"]},
    "operator": {"extraArgs": ["--verbose"], "priorityClassName": "high"},
    "agent": {"extraArgs": ["--resync-seconds", "60"]},
    "charon": {"extraConfig": "retransmit_tries = 3"},
}


@pytest.mark.parametrize("variant", ["defaults", "everything-on", "everything-off"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_is_valid_for_kubernetes(version: str, variant: str) -> None:
    values = values_for(version)
    if variant == "everything-on":
        values = {**FULL_VALUES, "agent": {**FULL_VALUES["agent"], **values["agent"]}}
    elif variant == "everything-off":
        values = {
            "metrics": {"enabled": False},
            "crds": {"keep": False},
            "agent": {"nodeRestriction": {"enabled": False}},
        }
    objects = render(values)
    assert len(objects) >= 10
    for obj in objects:
        if obj["kind"] in NOT_BUILT_IN:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:  # pragma: no cover - message on failure
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {e}")


def test_validating_admission_policy_needs_kubernetes_1_30() -> None:
    # Why values.yaml says to disable nodeRestriction on 1.28/1.29: the API is not there.
    vap = one(render(), "ValidatingAdmissionPolicy")
    kubernetes_validate.validate(vap, "1.30", strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(vap, "1.29", strict=True)


def test_service_monitors_select_the_metrics_services() -> None:
    objects = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    services = of_kind(objects, "Service")
    monitors = of_kind(objects, "ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1
        assert monitor["spec"]["endpoints"][0]["port"] == matching[0]["spec"]["ports"][0]["name"]


def test_namespaced_objects_land_in_the_release_namespace() -> None:
    cluster_scoped = {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for obj in render(namespace="ipsec"):
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["kind"]
        else:
            assert obj["metadata"]["namespace"] == "ipsec", obj["kind"]


def test_notes_tell_how_to_apply_a_policy_and_read_status() -> None:
    notes = render_files({"credentials": {"secretNames": ["node-certs"]}})[
        "strongmesh/templates/NOTES.txt"
    ]
    assert "kind: IPsecPolicy" in notes
    assert "name: node-certs" in notes
    assert "kubectl get ipsecpolicies" in notes
    assert "kubectl get ipsecnodes" in notes


# --- CRDs ----------------------------------------------------------------------------------


def test_chart_installs_the_generated_crds() -> None:
    crds = {c["metadata"]["name"]: c for c in of_kind(render(), "CustomResourceDefinition")}
    assert set(crds) == {"ipsecpolicies.strongmesh.io", "ipsecnodes.strongmesh.io",
                         "ipsecpeerslices.strongmesh.io"}
    for name, crd in crds.items():
        on_disk = yaml.safe_load((ROOT / "crds" / f"{name}.yaml").read_text())
        assert crd["spec"] == on_disk["spec"]


@pytest.mark.parametrize(("keep", "annotated"), [(True, True), (False, False)])
def test_crds_keep_adds_the_helm_keep_annotation(keep: bool, annotated: bool) -> None:
    for crd in of_kind(render({"crds": {"keep": keep}}), "CustomResourceDefinition"):
        annotations = crd["metadata"].get("annotations", {})
        assert (annotations.get("helm.sh/resource-policy") == "keep") is annotated


def test_crds_are_kept_on_uninstall_by_default() -> None:
    for crd in of_kind(render(), "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_disabled_renders_no_crds() -> None:
    assert of_kind(render({"crds": {"enabled": False}}), "CustomResourceDefinition") == []


# --- RBAC ----------------------------------------------------------------------------------


def rules(objects: list[Json], kind: str) -> Iterator[tuple[str, Json]]:
    for role in of_kind(objects, kind):
        for rule in role.get("rules", []):
            yield role["metadata"]["name"], rule


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["defaults", "everything-on"])
def test_rbac_has_no_wildcards(values: Json) -> None:
    objects = render(values)
    for kind in ("ClusterRole", "Role"):
        for name, rule in rules(objects, kind):
            for key in ("verbs", "resources", "apiGroups", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{kind} {name}: {key} {rule}"
            assert "nonResourceURLs" not in rule


def test_no_cluster_wide_access_to_secrets() -> None:
    objects = render(FULL_VALUES)
    for name, rule in rules(objects, "ClusterRole"):
        assert "secrets" not in rule["resources"], name
    secret_rules = [(n, r) for n, r in rules(objects, "Role") if "secrets" in r["resources"]]
    assert len(secret_rules) == 2  # operator and agent
    for name, rule in secret_rules:
        # only the operator reads the issuer Secrets (the CA's private key)
        issuers = ["mesh-ca"] if "operator" in name else []
        assert rule["resourceNames"] == ["a", "b", *issuers], name
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, name
    for role in of_kind(objects, "Role"):
        assert role["metadata"]["namespace"] == "certs"


def test_credential_secrets_default_to_the_release_namespace() -> None:
    for role in of_kind(render(), "Role"):
        assert role["metadata"]["namespace"] == NAMESPACE
        issuers = ["mesh-ca"] if "operator" in role["metadata"]["name"] else []
        assert role["rules"][0]["resourceNames"] == ["ipsec-credentials", *issuers]


def test_agent_writes_only_ipsecnodes_and_its_certificate_requests() -> None:
    agent_role = one(render(), "ClusterRole", "-agent")
    written = {
        resource
        for rule in agent_role["rules"]
        if WRITE_VERBS & set(rule["verbs"])
        for resource in rule["resources"]
    }
    assert written == {"ipsecnodes", "ipsecnodes/status", "certificatesigningrequests"}
    (csrs,) = [r for r in agent_role["rules"] if "certificatesigningrequests" in r["resources"]]
    assert WRITE_VERBS & set(csrs["verbs"]) == {"create"}  # never approve or sign
    for rule in agent_role["rules"]:
        if "ipsecnodes" in rule["resources"]:
            assert "delete" not in rule["verbs"]


def test_operator_is_the_only_writer_of_policy_status() -> None:
    objects = render()
    writers = {
        name
        for name, rule in rules(objects, "ClusterRole")
        if "ipsecpolicies/status" in rule["resources"] and WRITE_VERBS & set(rule["verbs"])
    }
    assert writers == {f"{RELEASE}-operator"}


def test_bindings_grant_each_role_to_its_own_service_account() -> None:
    objects = render()
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in of_kind(objects, kind):
            role = binding["roleRef"]["name"]
            component = "agent" if "-agent" in role else "operator"
            (subject,) = binding["subjects"]
            assert subject == {
                "kind": "ServiceAccount",
                "name": f"{RELEASE}-{component}",
                "namespace": NAMESPACE,
            }


@pytest.mark.parametrize("template", ["agent-rbac.yaml", "operator-rbac.yaml"])
def test_every_write_verb_is_justified_by_a_comment(template: str) -> None:
    lines = (CHART / "templates" / template).read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"\s*verbs: \[(.*)\]", line)
        if not match or not WRITE_VERBS & {v.strip() for v in match.group(1).split(",")}:
            continue
        start = max(j for j in range(i) if lines[j].lstrip().startswith("- apiGroups"))
        above = lines[start - 1].strip()
        assert above.startswith("#"), f"{template}:{i + 1}: write verbs without a comment"


def test_admission_policy_ties_ipsecnode_writes_to_the_token_node_claim() -> None:
    objects = render()
    vap = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"ipsecnodes", "ipsecnodes/status"}
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    (condition,) = vap["spec"]["matchConditions"]
    assert f"system:serviceaccount:{NAMESPACE}:{RELEASE}-agent" in condition["expression"]
    text = yaml.safe_dump(vap["spec"])
    assert "authentication.kubernetes.io/node-name" in text
    assert any(
        "object.metadata.name == variables.nodeName" in v["expression"]
        for v in vap["spec"]["validations"]
    )


def test_node_restriction_can_be_disabled_for_old_clusters() -> None:
    objects = render({"agent": {"nodeRestriction": {"enabled": False}}})
    assert of_kind(objects, "ValidatingAdmissionPolicy") == []
    assert of_kind(objects, "ValidatingAdmissionPolicyBinding") == []


# --- the agent DaemonSet -------------------------------------------------------------------


def test_agent_runs_on_the_host_network_of_every_node() -> None:
    pod = one(render(), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert not pod.get("hostPID")
    assert not pod.get("hostIPC")


def test_agent_containers_are_not_privileged_and_drop_all_capabilities() -> None:
    for name, container in containers(render(), "DaemonSet").items():
        context = container["securityContext"]
        assert context["privileged"] is False, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert set(context["capabilities"]["add"]) <= {"NET_ADMIN", "NET_BIND_SERVICE"}, name
        assert "NET_ADMIN" in context["capabilities"]["add"], name


def test_charon_and_agent_are_separate_containers_sharing_the_vici_socket() -> None:
    pod = one(render(), "DaemonSet")["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in pod["containers"]}
    assert set(by_name) == {"charon", "agent"}
    assert by_name["charon"]["command"] == ["/usr/lib/ipsec/charon"]
    assert by_name["agent"]["command"] == ["strongmesh", "agent"]

    def mount_of(container: Json, path: str) -> str:
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        return str(mount["name"])

    shared = mount_of(by_name["charon"], "/var/run/strongmesh")
    assert shared == mount_of(by_name["agent"], "/var/run/strongmesh")
    (volume,) = [v for v in pod["volumes"] if v["name"] == shared]
    assert "emptyDir" in volume
    args = by_name["agent"]["args"]
    assert args[args.index("--vici") + 1] == VICI_URI


def test_agent_learns_its_node_name_from_the_downward_api() -> None:
    agent = containers(render(), "DaemonSet")["agent"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    args = agent["args"]
    assert args[args.index("--node") + 1] == "$(NODE_NAME)"


def test_charon_reads_the_chart_strongswan_conf() -> None:
    objects = render()
    charon = containers(objects, "DaemonSet")["charon"]
    env = {e["name"]: e.get("value") for e in charon["env"]}
    assert env["STRONGSWAN_CONF"] == "/etc/strongmesh/strongswan.conf"
    (mount,) = [m for m in charon["volumeMounts"] if m["mountPath"] == "/etc/strongmesh"]
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = one(objects, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert "strongswan.conf" in config_map["data"]


def strongswan_conf(values: Json | None = None) -> str:
    return str(one(render(values), "ConfigMap")["data"]["strongswan.conf"])


def test_strongswan_conf_loads_a_restricted_plugin_set_without_a_load_list() -> None:
    conf = strongswan_conf()
    assert "load_modular = yes" in conf
    assert "install_routes = no" in conf
    assert f"socket = {VICI_URI}" in conf
    assert not re.search(r"^\s*include", conf, flags=re.MULTILINE)
    assert not re.search(r"^  load\s*=", conf, flags=re.MULTILINE)  # no charon.load list
    loaded = re.findall(r"^\s+([a-z0-9-]+) \{\n\s+load = yes", conf, flags=re.MULTILINE)
    assert {"kdf", "vici", "kernel-netlink", "socket-default", "x509"} <= set(loaded)
    assert "stroke" not in loaded


def test_strongswan_conf_has_balanced_braces_with_extra_config() -> None:
    conf = strongswan_conf({"charon": {"extraConfig": "threads = 32\n"}})
    assert conf.count("{") == conf.count("}")
    assert re.search(r"^    threads = 32\n}", conf, flags=re.MULTILINE)


def parse_strongswan_conf(text: str) -> Json:
    """strongswan.conf as nested dicts (sections, `key = value`; comments dropped)."""
    root: Json = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            section: Json = {}
            stack[-1][line[:-1].strip()] = section
            stack.append(section)
        elif line == "}":
            stack.pop()
        else:
            key, value = (part.strip() for part in line.split("=", 1))
            stack[-1][key] = value
    assert len(stack) == 1, "unbalanced braces"
    return root


def test_chart_strongswan_conf_matches_the_agent_renderer() -> None:
    # Kubernetes nodes and standalone hosts/lab must run charon with the same settings.
    from controller.strongswan.conf import DEFAULT_PLUGINS, render_strongswan_conf

    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert tuple(chart_values["charon"]["plugins"]) == DEFAULT_PLUGINS
    expected = render_strongswan_conf(vici_socket=VICI_URI, log_level=1)
    assert parse_strongswan_conf(strongswan_conf()) == parse_strongswan_conf(expected)


def test_charon_log_level_comes_from_values() -> None:
    conf = parse_strongswan_conf(strongswan_conf({"charon": {"logLevel": 3}}))
    assert conf["charon"]["filelog"]["stderr"]["default"] == "3"


def test_config_change_rolls_the_agent_pods() -> None:
    def checksum(values: Json) -> str:
        template = one(render(values), "DaemonSet")["spec"]["template"]
        return str(template["metadata"]["annotations"]["checksum/charon-config"])

    assert checksum({}) != checksum({"charon": {"logLevel": 2}})


def test_charon_pre_stop_drains_and_grace_period_outlasts_the_default_timeout() -> None:
    objects = render()
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    charon = containers(objects, "DaemonSet")["charon"]
    command = charon["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["strongmesh", "drain"]
    assert command[command.index("--state-dir") + 1] == "/var/run/strongmesh"
    assert pod["terminationGracePeriodSeconds"] == 45
    assert pod["terminationGracePeriodSeconds"] > 30  # policies' default shutdownTimeoutSeconds
    env = {e["name"] for e in charon["env"]}
    assert {"NODE_NAME", "POD_NAME"} <= env  # what `strongmesh drain` reads


def test_grace_period_comes_from_values() -> None:
    pod = one(render({"agent": {"terminationGracePeriodSeconds": 400}}), "DaemonSet")
    assert pod["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 400


def test_agent_and_charon_have_probes() -> None:
    by_name = containers(render(), "DaemonSet")
    assert "livenessProbe" in by_name["charon"]
    assert "startupProbe" in by_name["charon"]
    assert "livenessProbe" in by_name["agent"]
    assert "readinessProbe" in by_name["agent"]


def commands(objects: list[Json]) -> Iterator[tuple[str, list[str]]]:
    """Every strongmesh command line the chart runs: containers and lifecycle hooks."""
    for kind in ("DaemonSet", "Deployment"):
        for name, container in containers(objects, kind).items():
            argv = [*container.get("command", []), *container.get("args", [])]
            yield f"{kind}/{name}", argv
            hook = container.get("lifecycle", {}).get("preStop", {}).get("exec")
            if hook:
                yield f"{kind}/{name}/preStop", list(hook["command"])


@pytest.mark.parametrize("values", [{}, {"metrics": {"enabled": False}}], ids=["on", "off"])
def test_every_strongmesh_command_the_chart_runs_parses_with_the_cli(values: Json) -> None:
    from controller.cli import build_parser

    seen = set()
    for where, argv in commands(render(values)):
        if not argv or argv[0] != "strongmesh":
            continue
        seen.add(argv[1])
        expanded = [re.sub(r"\$\((\w+)\)", "node-1", arg) for arg in argv[1:]]
        try:
            build_parser().parse_args(expanded)
        except SystemExit:
            pytest.fail(f"{where}: `strongmesh {' '.join(expanded)}` is not a valid command line")
    assert seen == {"agent", "operator", "drain"}


# --- the operator Deployment ---------------------------------------------------------------


def test_operator_runs_one_replica_as_non_root_and_never_two_at_once() -> None:
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["strongmesh", "operator"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# --- metrics -------------------------------------------------------------------------------


def metrics_port_arg(container: Json) -> str:
    args = container["args"]
    return str(args[args.index("--metrics-port") + 1])


def test_metrics_are_served_on_the_agreed_ports() -> None:
    objects = render()
    agent = containers(objects, "DaemonSet")["agent"]
    operator = containers(objects, "Deployment")["operator"]
    assert metrics_port_arg(agent) == "9476"
    assert metrics_port_arg(operator) == "9477"
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9476, "protocol": "TCP"}]
    assert operator["ports"] == [{"name": "metrics", "containerPort": 9477, "protocol": "TCP"}]
    assert {s["spec"]["ports"][0]["port"] for s in of_kind(objects, "Service")} == {9476, 9477}
    assert of_kind(objects, "ServiceMonitor") == []


def test_metrics_off_removes_ports_services_and_http_probes() -> None:
    objects = render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    for kind in ("DaemonSet", "Deployment"):
        for name, container in containers(objects, kind).items():
            assert "ports" not in container, name
            assert "httpGet" not in yaml.safe_dump(container), name
            if name != "charon":
                assert metrics_port_arg(container) == "0"
    assert of_kind(objects, "Service") == []
    assert of_kind(objects, "ServiceMonitor") == []


def test_custom_metrics_port_moves_port_argument_and_service_together() -> None:
    objects = render({"agent": {"metricsPort": 19476}})
    agent = containers(objects, "DaemonSet")["agent"]
    assert metrics_port_arg(agent) == "19476"
    assert agent["ports"][0]["containerPort"] == 19476
    assert 19476 in {s["spec"]["ports"][0]["port"] for s in of_kind(objects, "Service")}


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "strongmesh:0.1.0"),
        ({"tag": "dev"}, "strongmesh:dev"),
        (
            {"repository": "r.example/x/sm", "digest": "sha256:" + "a" * 64},
            "r.example/x/sm@sha256:" + "a" * 64,
        ),
    ],
)
def test_one_image_for_every_container(image: Json, expected: str) -> None:
    objects = render({"image": image})
    images = {
        c["image"]
        for kind in ("DaemonSet", "Deployment")
        for c in containers(objects, kind).values()
    }
    assert images == {expected}


# --- values and their schema ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"unknownKey": 1},
        {"agent": {"metricPort": 1}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"operator": {"replicaCount": 2}},
        {"credentials": {"secretNames": []}},
        {"credentials": {"secretNames": ["Not_A_Name"]}},
        {"charon": {"plugins": ["random", "vici"]}},  # no kdf: IKE would fail
        {"agent": {"metricsPort": 70000}},
        {"metrics": {"enabled": "yes"}},
    ],
    ids=str,
)
def test_values_schema_rejects_bad_values(values: Json) -> None:
    with pytest.raises(helm.HelmError):
        render(values)


def walk_schema(node: Json, path: str = "") -> Iterator[tuple[str, Json]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk_schema(sub, f"{path}.{name}")


def test_values_schema_forbids_unknown_keys_everywhere() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for path, node in walk_schema(schema):
        if "properties" in node:
            assert node.get("additionalProperties") is False, path or "<root>"


def test_default_values_satisfy_the_schema() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


def test_every_value_is_documented_above_it() -> None:
    """cert-manager style: prose above each key of values.yaml that the schema declares."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    declared = {path for path, _ in walk_schema(schema) if path}
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [key])
        stack.append((indent, key))
        parent = path.rsplit(".", 1)[0]
        if f".{path}" not in declared or parent.endswith("resources"):
            continue
        above = lines[i - 1].strip() if i else ""
        # A section header (a map whose keys carry the prose) needs no sentence of its own.
        is_section = (
            i + 1 < len(lines)
            and re.match(r"^\s*(#|[\w-]+:)", lines[i + 1])
            and (line.rstrip().endswith(":"))
        )
        if not above.startswith("#") and not is_section:
            undocumented.append(path)
    assert undocumented == []
