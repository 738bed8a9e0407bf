"""hack/gen-crds run as a process: ``--check`` reports drift as a diff and exits 1, a plain run
writes what is missing. The in-process drift check of crds/: tests/unit/test_crds.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hack.labkit import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_gen_crds_check_reports_drift_with_a_diff_and_exit_1(tmp_path: Path) -> None:
    for rel, text in crdgen.generated_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    script = [sys.executable, str(ROOT / "hack" / "gen-crds"), "--root", str(tmp_path)]

    clean = subprocess.run([*script, "--check"], capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    target = tmp_path / "crds" / "ipsecpolicies.strongmesh.io.yaml"
    target.write_text(
        target.read_text().replace("shortNames:\n    - ipp", "shortNames:\n    - pol")
    )
    drifted = subprocess.run([*script, "--check"], capture_output=True, text=True, check=False)
    assert drifted.returncode == 1
    assert "-    - pol" in drifted.stdout
    assert "+    - ipp" in drifted.stdout

    regenerated = subprocess.run(script, capture_output=True, text=True, check=False)
    assert regenerated.returncode == 0
    assert "- ipp" in target.read_text()


def test_gen_crds_recreates_missing_files(tmp_path: Path) -> None:
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir()
    subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen-crds"), "--root", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for rel, text in crdgen.generated_files().items():
        assert (tmp_path / rel).read_text() == text
