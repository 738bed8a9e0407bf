"""hack/lab removes everything it started, also when the run fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from hack.labkit.lab.host import LabError, LabOptions, run_lab
from tests.lab.conftest import EXAMPLE


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_timeout_kills_user_mode_linux_and_removes_the_lab_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0 or shutil.which("linux.uml") is None:
        pytest.fail("lab tests need root and user-mode-linux (run hack/install-system-deps)")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(LabError, match="did not finish within 3"):
        run_lab(LabOptions(nodes=2, policy=EXAMPLE, timeout=3))
    assert list(tmp_path.iterdir()) == []
    assert processes_mentioning(str(tmp_path)) == []
