"""The operator's gauges follow the computed status and vanish with the policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.models.policy import IPsecPolicyStatus, PolicySummary
from controller.operator.metrics import OperatorMetrics

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def value(metrics: OperatorMetrics, name: str, policy: str) -> float | None:
    result: float | None = metrics.registry.get_sample_value(name, {"policy": policy})
    return result


def test_status_sets_the_policy_gauges_and_forget_removes_them() -> None:
    metrics = OperatorMetrics()
    summary = PolicySummary(selected_nodes=3, ready_nodes=2, ready="2/3", established_sas=4)
    metrics.observe("mesh", IPsecPolicyStatus(summary=summary), NOW + timedelta(days=2), NOW)
    assert value(metrics, "strongmesh_policy_selected_nodes", "mesh") == 3
    assert value(metrics, "strongmesh_policy_ready_nodes", "mesh") == 2
    assert value(metrics, "strongmesh_policy_established_sas", "mesh") == 4
    assert value(metrics, "strongmesh_certificate_expiry_seconds", "mesh") == 2 * 86400
    metrics.forget("mesh")
    metrics.forget("mesh")  # twice: nothing left to remove is fine
    assert value(metrics, "strongmesh_policy_ready_nodes", "mesh") is None
