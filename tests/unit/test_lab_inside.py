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
