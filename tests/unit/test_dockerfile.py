"""The Dockerfile keeps its promises (no container engine here to build it). hadolint's verdict:
tests/integration/test_dockerfile_hadolint.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "build-essential", "make", "python3-dev", "python3-pip", "python3-venv")


def stages(text: str) -> list[str]:
    """The Dockerfile split at each FROM (logical lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    parts = re.split(r"^(?=FROM\s)", joined, flags=re.MULTILINE)
    return [p for p in parts if p.startswith("FROM")]


def test_image_is_multi_stage_from_debian() -> None:
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], s.splitlines()[0])
             for s in stages(text)]
    assert len(froms) >= 2
    assert all("debian:" in f for f in froms)
    assert " AS build" in froms[0]


def test_final_stage_installs_strongswan_from_debian_and_no_build_tools() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    for package in ("strongswan-charon", "strongswan-swanctl", "libstrongswan-standard-plugins"):
        assert re.search(rf"\b{package}\b", final), package
    for tool in BUILD_TOOLS:
        assert not re.search(rf"\s{re.escape(tool)}\s", final), tool
    assert "--no-install-recommends" in final
    assert "COPY --from=build" in final


def test_final_stage_runs_as_a_non_root_user() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root")


def test_build_stage_removes_pip_from_the_shipped_virtualenv() -> None:
    build = stages(DOCKERFILE.read_text())[0]
    assert "pip uninstall -y pip" in build


@pytest.mark.parametrize("path", [".venv", ".git", "tests", "charts", ".mypy_cache"])
def test_dockerignore_keeps_the_context_small(path: str) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Allow-list style: everything excluded, then only the package re-included.
    assert lines[0] == "*"
    assert not any(line == f"!{path}" or line.startswith(f"!{path}/") for line in lines)
