"""``net.core.xfrm_acq_expires``: seconds a failed acquire blocks new attempts.

Per network namespace (the namespace of the thread that opens the file). The kernel default is
30 on current kernels (165 on old ones); the PCF add-on lowered it to 6 so that a peer that
comes up is reached within seconds instead of minutes.
"""

from __future__ import annotations

from pathlib import Path

ACQ_EXPIRES = Path("/proc/sys/net/core/xfrm_acq_expires")


def read_acq_expires(path: Path = ACQ_EXPIRES) -> int:
    return int(path.read_text().strip())


def write_acq_expires(seconds: int, path: Path = ACQ_EXPIRES) -> None:
    """Write only when different, so that a reconcile pass with nothing to do writes nothing."""
    if seconds < 1:
        raise ValueError(f"xfrm_acq_expires must be at least 1 second, not {seconds}")
    if read_acq_expires(path) != seconds:
        path.write_text(f"{seconds}\n")
