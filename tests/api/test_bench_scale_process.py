"""``hack/bench-scale`` keeps its contract: a small run on its own real control plane.

Acceptance checks run it at 250 to 1000 nodes; this runs it at 4 (about 30 s), so that a
change that breaks the harness or the JSON keys it promises fails here, not there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMISED = (
    "nodes", "create_p50_seconds", "create_p99_seconds", "update_p50_seconds",
    "update_p99_seconds", "status_complete_seconds", "writes_per_node_per_minute_at_rest",
    "watch_events_per_agent_per_join", "operator_rss_mib", "delete_seconds", "control_plane",
)


def test_bench_scale_runs_every_step_and_reports_the_promised_keys() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "bench-scale"), "--nodes", "4", "--workers", "2",
         "--rest-seconds", "2", "--timeout", "120", "--json"],
        capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [key for key in PROMISED if result.get(key) is None] == []
    assert result["nodes"] == 4
    assert result["create_enforcing_nodes"] == 4
    assert result["control_plane"].startswith("v1.")
    for rollout in ("create_stages", "update_stages"):
        stages = result[rollout]
        assert None not in stages.values(), stages
        # the order the path imposes: published, then passed, then written
        assert stages["slices_published_seconds"] <= stages["agents_passed_p99_seconds"]
        assert stages["agents_passed_p50_seconds"] <= stages["agents_wrote_p50_seconds"]
    # a policy change is one slice write, one status write per node and one pass each
    assert result["update_writes"]["PATCH ipsecpeerslices"] == 1
    assert result["update_stages"]["passes_per_agent"] <= 2
    assert result["writes_per_node_per_minute_at_rest"] <= 1
    assert result["watch_events_per_agent_per_status_change"]["max"] == 0
