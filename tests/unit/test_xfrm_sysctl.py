"""net.core.xfrm_acq_expires file handling (the per-namespace behaviour is an integration test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.xfrm.sysctl import read_acq_expires, write_acq_expires


def test_value_is_written_and_read_back(tmp_path: Path) -> None:
    knob = tmp_path / "xfrm_acq_expires"
    knob.write_text("30\n")
    write_acq_expires(6, knob)
    assert read_acq_expires(knob) == 6


def test_unchanged_value_is_not_rewritten(tmp_path: Path) -> None:
    knob = tmp_path / "xfrm_acq_expires"
    knob.write_text("6\n")
    knob.chmod(0o444)  # a write would fail (unless root, hence the content check too)
    write_acq_expires(6, knob)
    assert knob.read_text() == "6\n"


@pytest.mark.parametrize("seconds", [0, -1])
def test_values_below_one_second_are_refused(tmp_path: Path, seconds: int) -> None:
    knob = tmp_path / "xfrm_acq_expires"
    knob.write_text("30\n")
    with pytest.raises(ValueError, match="at least 1"):
        write_acq_expires(seconds, knob)
    assert knob.read_text() == "30\n"
