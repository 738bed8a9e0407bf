"""The lab's PID 1 runs inside user-mode-linux, where every import goes through hostfs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import controller.lab.inside as inside


def test_inside_runner_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(inside.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules - {"__future__"} <= set(sys.stdlib_module_names)


def test_steps_are_exactly_the_documented_ones() -> None:
    documented = {
        "probe", "flush_xfrm", "restart_charon", "kill_agent", "start_agent", "write_policy",
        "wait_ready", "wait_policies", "wait_sas", "wait_status", "snapshot", "sleep",
        "measure_agents", "measure_pass",
    }
    implemented = {name.removeprefix("step_") for name in dir(inside.Lab)
                   if name.startswith("step_")}
    assert implemented == documented
    docs = sys.modules["controller.lab"].__doc__ or ""
    assert all(f'"do": "{name}"' in docs for name in documented)
