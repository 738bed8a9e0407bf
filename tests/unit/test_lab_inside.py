"""The lab's PID 1 runs inside user-mode-linux, where every import goes through hostfs."""

from __future__ import annotations

import ast
import dataclasses
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hack.labkit.lab.inside as inside
from hack.labkit.lab import processes, steps_cluster, steps_core, steps_mtu
from hack.labkit.lab.charon_view import log_lines_of_ike_sas, parse_list_sas, peer_authentication
from hack.labkit.lab.steps import REGISTRY, StepError, parse_steps
from hack.labkit.lab.steps_identity import impostor_swanctl_conf
from hack.labkit.lab.topology import pod_network_commands

PROJECT = Path(inside.__file__).parents[3]


def runtime_imports(path: Path) -> set[str]:
    """The modules a file imports when it runs (``if TYPE_CHECKING:`` blocks left out); for
    ``from PACKAGE import NAME`` also ``PACKAGE.NAME``, in case NAME is a module."""

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
        for node in nodes:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                yield from walk(node.orelse)
                continue
            yield from ast.walk(node)

    modules = set()
    for node in walk(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return modules


def test_inside_runner_imports_only_the_standard_library() -> None:
    """inside.py and the lab modules it imports (followed transitively) import nothing but
    the standard library and, of the product, the pure ``controller.ownership``."""
    todo, seen, outside = [Path(inside.__file__)], set(), set()
    while todo:
        path = todo.pop()
        seen.add(path)
        for module in runtime_imports(path):
            target = PROJECT / f"{module.replace('.', '/')}.py"
            if module.startswith(("hack.", "controller.")):
                if target.exists() and target not in seen:
                    todo.append(target)
            elif module not in ("hack", "controller"):
                outside.add(module.split(".")[0])
    assert outside - {"__future__"} <= set(sys.stdlib_module_names)
    lab_dir = PROJECT / "hack" / "labkit" / "lab"
    assert {lab_dir / "cluster.py", lab_dir / "steps_ops.py"} <= seen
    product = {p for p in seen if lab_dir not in p.parents}
    assert product == {PROJECT / "controller" / "ownership.py"}


DOCUMENTED = {
    "probe", "flush_xfrm", "restart_charon", "kill_agent", "start_agent", "write_policy",
    "wait_ready", "wait_policies", "wait_sas", "wait_one_sa_per_peer", "wait_status",
    "snapshot", "sleep",
    "measure_agents", "measure_pass",
    # cluster mode (steps_cluster.py)
    "apply", "delete", "get", "wait_policy", "wait_gone", "kubectl", "label_node",
    "owned_policies", "wait_certificates",
    # identities and trust (steps_identity.py)
    "start_stream", "stop_stream", "wait_authorities", "peer_cas", "impostor",
    # operations (steps_ops.py)
    "metrics", "gentle_shutdown",
    # MTU (steps_mtu.py)
    "mtu",
}


def documented_steps() -> Iterator[tuple[str, set[str]]]:
    """Each ``{"do": "KIND", ...}`` in the package docstring and the step modules' docstrings,
    with the field names it shows (a quoted word before ``:``, ``?``, ``,`` or ``}`` that is
    not itself a value)."""
    text = "".join(sys.modules[f"hack.labkit.lab{m}"].__doc__ or "" for m in (
        "", ".steps_core", ".steps_cluster", ".steps_identity", ".steps_ops", ".steps_mtu"))
    for match in re.finditer(r'\{"do": "(\w+)"', text):
        depth, end = 0, match.start()
        while True:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
            if depth == 0:
                break
        body = text[match.end():end]
        yield match.group(1), set(re.findall(r'(?<!: )"(\w+)"\??(?=[:,}])', body))


def test_steps_are_exactly_the_documented_ones() -> None:
    assert set(REGISTRY) == DOCUMENTED
    shown = dict(documented_steps())
    assert set(shown) == DOCUMENTED
    for name, kind in REGISTRY.items():
        fields = dataclasses.fields(kind.record)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        assert required <= shown[name] <= {f.name for f in fields}, name
        assert vars(kind.record)["__dataclass_params__"].frozen, name


def test_the_steps_the_lab_tests_send_parse_into_their_records() -> None:
    assert parse_steps([
        {"do": "probe", "label": "after", "timeout": 20},
        {"do": "wait_ready", "expected": {"node-mesh": 1}, "timeout": 60},
        {"do": "label_node", "node": "node-3", "labels": {"group": "out", "gone": None}},
        {"do": "mtu", "label": "mtu", "pairs": [["node-1", "node-2"]], "sizes": [1400, 1500]},
        {"do": "owned_policies"},
    ]) == [
        steps_core.Probe("after", 20),
        steps_core.WaitReady({"node-mesh": 1}, 60),
        steps_cluster.LabelNode("node-3", {"group": "out", "gone": None}),
        steps_mtu.Mtu((("node-1", "node-2"),), (1400, 1500), label="mtu"),
        steps_cluster.OwnedPolicies(),
    ]


@pytest.mark.parametrize(("steps", "message"), [
    ([{"do": "probe", "label": "a"}, {"do": "prob", "label": "b"}],
     "step 1: unknown \"do\": 'prob' (known: apply, "),
    ([{"label": "a"}], "step 0: unknown \"do\": None"),
    ([{"do": "probe"}], "step 0 (probe): missing field 'label'"),
    ([{"do": "probe", "label": 7}], "step 0 (probe): field 'label': expected a string, got 7"),
    ([{"do": "sleep", "seconds": "3"}],
     "step 0 (sleep): field 'seconds': expected a number, got '3'"),
    ([{"do": "measure_pass", "repeat": True}],
     "step 0 (measure_pass): field 'repeat': expected an integer, got True"),
    ([{"do": "flush_xfrm", "what": "routes"}],
     "step 0 (flush_xfrm): field 'what': expected one of 'policy', 'state', 'all', got 'routes'"),
    ([{"do": "mtu", "pairs": [["node-1"]], "sizes": [1400]}],
     "step 0 (mtu): field 'pairs': expected a list of 2, got ['node-1']"),
    ([{"do": "wait_ready", "expected": {"node-mesh": "1"}}],
     "step 0 (wait_ready): field 'expected': expected an integer, got '1'"),
    ([{"do": "probe", "label": "a", "timout": 5}],
     "step 0 (probe): unknown field 'timout' (fields: label, timeout)"),
    ([{"do": "probe", "label": "a"}, "probe"], "step 1: expected an object with \"do\""),
    ({"do": "probe"}, "the steps must be a list, got dict"),
])
def test_a_bad_step_is_named_with_its_index_kind_and_field(steps: Any, message: str) -> None:
    with pytest.raises(StepError) as caught:
        parse_steps(steps)
    assert str(caught.value).startswith(message)


def test_the_host_refuses_a_bad_step_before_booting() -> None:
    from hack.labkit.lab.host import LabError, LabOptions, run_lab

    with pytest.raises(LabError, match="step 0 \\(probe\\): missing field 'label'"):
        run_lab(LabOptions(steps=[{"do": "probe"}]))


def test_pod_network_is_plain_routing_through_the_nodes() -> None:
    assert pod_network_commands(2, 3) == {
        "node-2": [
            "link add pods type veth peer name eth0 netns node-2-pod",
            "addr add 10.244.2.1/24 dev pods",
            "link set pods up",
            "route add 10.244.1.0/24 via 10.77.0.1 dev eth0",
            "route add 10.244.3.0/24 via 10.77.0.3 dev eth0",
        ],
        "node-2-pod": [
            "link set lo up",
            "addr add 10.244.2.10/24 dev eth0",
            "link set eth0 up",
            "route add default via 10.244.2.1 dev eth0",
        ],
        "bystander": ["route add 10.244.2.0/24 via 10.77.0.2 dev eth0"],
    }


def test_pods_are_probed_hosts_behind_their_nodes_and_run_nothing() -> None:
    lab = inside.Lab({"nodes": 2, "pods": True})
    assert [h.name for h in lab.network.hosts] == ["node-1", "node-2", "node-1-pod", "node-2-pod",
                                           "bystander"]
    assert [h.name for h in lab.network.on_switch] == ["node-1", "node-2", "bystander"]
    assert [h.name for h in lab.network.nodes] == ["node-1", "node-2"]  # charons and agents: these
    assert lab.results["hosts"][2] == {
        "name": "node-1-pod", "address": "10.244.1.10", "role": "pod", "node": "node-1",
        "carrier": "10.77.0.1", "podCIDR": "10.244.1.0/24"}
    assert lab.results["hosts"][4] == {
        "name": "bystander", "address": "10.77.0.200", "role": "bystander", "node": None,
        "carrier": "10.77.0.200", "podCIDR": None}
    assert [h.name for h in inside.Lab({"nodes": 2}).network.hosts] == ["node-1", "node-2",
                                                                "bystander"]


def test_hack_lab_run_takes_pods() -> None:
    import argparse

    from hack.labkit.lab.host import LabOptions, add_arguments, options_from

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from(parser.parse_args(["--pods"])).pods is True
    assert options_from(parser.parse_args([])).pods is False
    assert LabOptions().pods is False


LIST_SAS = """\
sm-node-mesh@node-2: #2, ESTABLISHED, IKEv2, 0a1b2c3d4e5f6a7b_i* 1122334455667788_r
  local  'O=strongmesh, CN=node-1' @ 10.77.0.1[500]
  remote 'O=strongmesh, CN=node-2' @ 10.77.0.2[500]
  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048
  established 5s ago, rekeying in 14000s
  sm-node-mesh@node-2: #1, reqid 1397584171, INSTALLED, TRANSPORT, ESP:AES_GCM_16-128
    installed 5s ago, rekeying in 3000s, expires in 3900s
    in  c1234567,      0 bytes,     0 packets
    out c7654321,      0 bytes,     0 packets
    local  10.77.0.1/32
    remote 10.77.0.2/32
impostor: #1, CONNECTING, IKEv2, 99aa99aa99aa99aa_i* 0000000000000000_r
  local  'O=strongmesh, CN=node-3' @ 10.77.0.2[5000]
  remote '%any' @ 10.77.0.1[500]
"""


def test_list_sas_gives_each_ike_sa_its_id_endpoints_and_installed_children() -> None:
    assert parse_list_sas(LIST_SAS) == [
        {"name": "sm-node-mesh@node-2", "id": "2", "state": "ESTABLISHED",
         "local_id": "O=strongmesh, CN=node-1", "local": "10.77.0.1",
         "remote_id": "O=strongmesh, CN=node-2", "remote": "10.77.0.2", "remote_port": 500,
         "children_installed": 1},
        {"name": "impostor", "id": "1", "state": "CONNECTING",
         "local_id": "O=strongmesh, CN=node-3", "local": "10.77.0.2",
         "remote_id": "%any", "remote": "10.77.0.1", "remote_port": 500,
         "children_installed": 0},
    ]
    assert parse_list_sas("") == []


CHARON_LOG = [
    "06:18:56 10[IKE] <sm-node-mesh@node-2|2> authentication of 'O=strongmesh, CN=node-1' "
    "(myself) with ECDSA_WITH_SHA256_DER successful",
    '06:18:56 07[CFG] <sm-node-mesh@node-2|2>   using certificate "O=strongmesh, CN=node-2"',
    '06:18:56 07[CFG] <sm-node-mesh@node-2|2>   using trusted ca certificate "C=US, '
    'O=strongmesh, CN=CA1"',
    "06:18:56 07[IKE] <sm-node-mesh@node-2|2> authentication of 'O=strongmesh, CN=node-2' with "
    "ECDSA_WITH_SHA256_DER successful",
    '06:18:57 15[CFG] <sm-node-mesh@node-3|12>   using trusted ca certificate "C=US, '
    'O=strongmesh, CN=CA2"',
    "06:19:01 16[NET] <2> received packet: from 10.77.0.2[5000] to 10.77.0.1[500] (464 bytes)",
    "06:19:01 14[CFG] <2> no matching peer config found",
    "06:19:02 11[CFG] vici initiate CHILD_SA 'sm-node-mesh@node-2'",
]


def test_the_log_tells_which_ca_verified_the_peer_of_an_ike_sa() -> None:
    found = peer_authentication(CHARON_LOG, "2")
    assert (found["cert"], found["ca"]) == ("O=strongmesh, CN=node-2", "C=US, O=strongmesh, CN=CA1")
    assert found["lines"] == CHARON_LOG[:4]
    assert peer_authentication(CHARON_LOG, "12")["ca"] == "C=US, O=strongmesh, CN=CA2"
    assert peer_authentication(CHARON_LOG, "7") == {"ca": None, "cert": None, "lines": []}


def test_lines_of_an_ike_sa_include_those_before_it_had_a_config() -> None:
    assert log_lines_of_ike_sas(CHARON_LOG, {"2"}) == CHARON_LOG[:4] + CHARON_LOG[5:7]
    assert log_lines_of_ike_sas(CHARON_LOG, {"1"}) == []


def test_the_impostor_connects_from_the_claimed_address_with_its_own_certificate() -> None:
    conf = impostor_swanctl_conf("10.77.0.2", "10.77.0.1", "aes128-sha256-modp2048",
                                        "aes128gcm16")
    for line in ("local_addrs = 10.77.0.2", "remote_addrs = 10.77.0.1", "remote_port = 500",
                 "certs = node.crt", "cacerts = ca.crt", "id = %any", "mode = transport",
                 "local_ts = 10.77.0.2/32", "remote_ts = 10.77.0.1/32"):
        assert line in conf, line
    assert conf.count("{") == conf.count("}")


def test_cluster_agents_keep_their_identity_in_their_state_dir() -> None:
    config = {"nodes": 2, "mode": "cluster",
              "api": {"agent_kubeconfigs": {"node-2": "/k/node-2.kubeconfig"}}}
    lab = inside.Lab(config)
    assert processes.agent_input_args(config, lab.network.nodes[1]) == [
        "--kubeconfig", "/k/node-2.kubeconfig", "--identity-dir", "/mnt/state/node-2/identity"]
    standalone = {"nodes": 1, "mode": "standalone"}
    assert "--identity-dir" not in processes.agent_input_args(
        standalone, inside.Lab(standalone).network.nodes[0])
