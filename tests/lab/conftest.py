"""Lab tests: boot the user-mode-linux lab (one boot per test) and assert on its report.

Each test writes a policy variant of ``examples/policy.yaml``, runs ``hack/lab`` in-process
(``hack.labkit.lab.host.run_lab``) with a short agent resync timer, and asserts on the traffic
matrix the switch capture produced. The lab runs in ``cluster`` mode (API server, operator,
policy applied through the API) unless a test asks for ``standalone`` (agents fed the file).
They need root, strongSwan and user-mode-linux, which ``make test`` installs
(``hack/install-system-deps``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.labkit.lab.host import LabOptions, run_lab

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
# the same policy with per-node identities (credentials.issuer) and its issuer Secret mesh-ca
EXAMPLE_ISSUER = EXAMPLE.with_name("policy-issuer.yaml")
RESYNC_SECONDS = 4.0

Report = dict[str, Any]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


def policy_variant(
    path: Path,
    spec: Mapping[str, Any] | None = None,
    *,
    generation: int | None = None,
    ca_pem: str | None = None,
) -> Path:
    """examples/policy.yaml with spec fields replaced (None deletes), written to ``path``."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc.get("kind") == "IPsecPolicy":
            for key, value in (spec or {}).items():
                if value is None:
                    doc["spec"].pop(key, None)
                else:
                    doc["spec"][key] = value
            if generation is not None:
                doc["metadata"]["generation"] = generation
        if doc.get("kind") == "Secret" and ca_pem is not None:
            doc.setdefault("stringData", {})["ca.crt"] = ca_pem
            doc.get("data", {}).pop("ca.crt", None)
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture
def lab(tmp_path: Path) -> Callable[..., Report]:
    """Run the lab; on failure the lab directory is kept under the test's tmp_path."""
    if os.geteuid() != 0 or shutil.which("linux.uml") is None:
        pytest.fail("lab tests need root and user-mode-linux (run hack/install-system-deps)")

    def run(
        policy: Path,
        *,
        nodes: int = 2,
        steps: list[dict[str, Any]] | None = None,
        files: Mapping[str, Path] | None = None,
        mode: str = "cluster",
        pods: bool = False,
    ) -> Report:
        report = run_lab(
            LabOptions(
                nodes=nodes,
                mode=mode,
                pods=pods,
                policy=policy,
                steps=steps or [],
                extra_files=files or {},
                resync_seconds=RESYNC_SECONDS,
                timeout=400,
                keep_logs=tmp_path / "lab",
            )
        )
        (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
        assert not report["errors"], report["errors"]
        assert report["ready"], "agents never reported the policy enforced"
        failed = [s for s in report["steps"] if not s["ok"]]
        assert not failed, failed
        return report

    return run


def matrix(
    report: Report, round_label: str | None = None
) -> dict[tuple[str, str], tuple[str, bool]]:
    """(src, dst) -> (seen, delivered) of the main probe round or a named one."""
    rows = report["traffic"] if round_label is None else report["rounds"][round_label]["traffic"]
    return {(r["src"], r["dst"]): (r["seen"], r["delivered"]) for r in rows}


def node_pairs(report: Report) -> list[tuple[str, str]]:
    names = [n["name"] for n in report["nodes"]]
    return [(a, b) for a in names for b in names if a != b]


def bystander_pairs(report: Report) -> list[tuple[str, str]]:
    names = [n["name"] for n in report["nodes"]]
    return [(n, "bystander") for n in names] + [("bystander", n) for n in names]


def cleartext_from_nodes(report: Report) -> list[tuple[str, str, str]]:
    """Every (round, src, dst) where a probe sent by a node was visible in the clear."""
    nodes = {n["name"] for n in report["nodes"]}
    return [
        (label, r["src"], r["dst"])
        for label, rnd in report["rounds"].items()
        for r in rnd["traffic"]
        if r["src"] in nodes and r["seen"] == "cleartext"
    ]
