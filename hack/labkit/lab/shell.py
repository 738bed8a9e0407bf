"""Running commands and telling progress, inside the lab (standard library only)."""

from __future__ import annotations

import subprocess
import time


def log(message: str) -> None:
    """Progress on the console (the host keeps it as console.log)."""
    print(f"[lab {time.monotonic():8.2f}] {message}", flush=True)


def sh(*argv: str, check: bool = True) -> str:
    """Run a command, return its output; with ``check`` a failure raises with its stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout
