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
        "owned_policies",
        # operations (steps_ops.py)
        "metrics", "gentle_shutdown",
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
