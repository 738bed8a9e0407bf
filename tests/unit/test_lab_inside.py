"""The lab's PID 1 runs inside user-mode-linux, where every import goes through hostfs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import hack.labkit.lab.inside as inside


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_inside_runner_imports_only_the_standard_library() -> None:
    """inside.py and the lab modules mixed into it (followed transitively) import nothing
    but the standard library."""
    lab_dir = Path(inside.__file__).parent
    todo, seen, outside = [Path(inside.__file__)], set(), set()
    while todo:
        path = todo.pop()
        seen.add(path)
        for module in imported_modules(path):
            if module.startswith("hack.labkit.lab."):
                target = lab_dir / f"{module.removeprefix('hack.labkit.lab.')}.py"
                if target not in seen:
                    todo.append(target)
            else:
                outside.add(module.split(".")[0])
    assert outside - {"__future__"} <= set(sys.stdlib_module_names)
    assert lab_dir / "cluster.py" in seen


def test_steps_are_exactly_the_documented_ones() -> None:
    documented = {
        "probe", "flush_xfrm", "restart_charon", "kill_agent", "start_agent", "write_policy",
        "wait_ready", "wait_policies", "wait_sas", "wait_one_sa_per_peer", "wait_status",
        "snapshot", "sleep",
        "measure_agents", "measure_pass",
        # cluster mode (cluster.py)
        "apply", "delete", "get", "wait_policy", "wait_gone", "kubectl", "label_node",
        "owned_policies", "wait_certificates",
        # identities and trust (inside.py)
        "start_stream", "stop_stream", "wait_authorities", "peer_cas", "impostor",
        # operations (steps_ops.py)
        "metrics", "gentle_shutdown",
        # MTU (steps_mtu.py)
        "mtu",
    }
    implemented = {name.removeprefix("step_") for name in dir(inside.Lab)
                   if name.startswith("step_")}
    assert implemented == documented
    for name in documented:  # in the package docstring or that of the module defining it
        module = sys.modules[getattr(inside.Lab, f"step_{name}").__module__]
        docs = (sys.modules["hack.labkit.lab"].__doc__ or "") + (module.__doc__ or "")
        assert f'"do": "{name}"' in docs, name


def test_pod_network_is_plain_routing_through_the_nodes() -> None:
    assert inside.pod_network_commands(2, 3) == {
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
    assert [h.name for h in lab.hosts] == ["node-1", "node-2", "node-1-pod", "node-2-pod",
                                           "bystander"]
    assert [h.name for h in lab.on_switch] == ["node-1", "node-2", "bystander"]
    assert [h.name for h in lab.nodes] == ["node-1", "node-2"]  # charons and agents: these
    assert lab.results["hosts"][2] == {
        "name": "node-1-pod", "address": "10.244.1.10", "role": "pod", "node": "node-1",
        "carrier": "10.77.0.1", "podCIDR": "10.244.1.0/24"}
    assert lab.results["hosts"][4] == {
        "name": "bystander", "address": "10.77.0.200", "role": "bystander", "node": None,
        "carrier": "10.77.0.200", "podCIDR": None}
    assert [h.name for h in inside.Lab({"nodes": 2}).hosts] == ["node-1", "node-2",
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
    assert inside.parse_list_sas(LIST_SAS) == [
        {"name": "sm-node-mesh@node-2", "id": "2", "state": "ESTABLISHED",
         "local_id": "O=strongmesh, CN=node-1", "local": "10.77.0.1",
         "remote_id": "O=strongmesh, CN=node-2", "remote": "10.77.0.2", "remote_port": 500,
         "children_installed": 1},
        {"name": "impostor", "id": "1", "state": "CONNECTING",
         "local_id": "O=strongmesh, CN=node-3", "local": "10.77.0.2",
         "remote_id": "%any", "remote": "10.77.0.1", "remote_port": 500,
         "children_installed": 0},
    ]
    assert inside.parse_list_sas("") == []


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
    found = inside.peer_authentication(CHARON_LOG, "2")
    assert (found["cert"], found["ca"]) == ("O=strongmesh, CN=node-2", "C=US, O=strongmesh, CN=CA1")
    assert found["lines"] == CHARON_LOG[:4]
    assert inside.peer_authentication(CHARON_LOG, "12")["ca"] == "C=US, O=strongmesh, CN=CA2"
    assert inside.peer_authentication(CHARON_LOG, "7") == {"ca": None, "cert": None, "lines": []}


def test_lines_of_an_ike_sa_include_those_before_it_had_a_config() -> None:
    assert inside.log_lines_of_ike_sas(CHARON_LOG, {"2"}) == CHARON_LOG[:4] + CHARON_LOG[5:7]
    assert inside.log_lines_of_ike_sas(CHARON_LOG, {"1"}) == []


def test_the_impostor_connects_from_the_claimed_address_with_its_own_certificate() -> None:
    conf = inside.impostor_swanctl_conf("10.77.0.2", "10.77.0.1", "aes128-sha256-modp2048",
                                        "aes128gcm16")
    for line in ("local_addrs = 10.77.0.2", "remote_addrs = 10.77.0.1", "remote_port = 500",
                 "certs = node.crt", "cacerts = ca.crt", "id = %any", "mode = transport",
                 "local_ts = 10.77.0.2/32", "remote_ts = 10.77.0.1/32"):
        assert line in conf, line
    assert conf.count("{") == conf.count("}")


def test_cluster_agents_keep_their_identity_in_their_state_dir() -> None:
    lab = inside.Lab({"nodes": 2, "mode": "cluster",
                      "api": {"agent_kubeconfigs": {"node-2": "/k/node-2.kubeconfig"}}})
    assert lab.agent_input_args(lab.nodes[1]) == [
        "--kubeconfig", "/k/node-2.kubeconfig", "--identity-dir", "/mnt/state/node-2/identity"]
    standalone = inside.Lab({"nodes": 1, "mode": "standalone"})
    assert "--identity-dir" not in standalone.agent_input_args(standalone.nodes[0])
