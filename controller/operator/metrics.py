"""The operator's Prometheus metrics, fed from the status it computes (one place, no I/O).

The metric families themselves are ``controller.metrics.OperatorMetrics`` (shared naming with
the agent's); this wrapper maps a policy's computed status onto them and forgets a policy's
series when the policy is deleted, so that dashboards do not show ghosts.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from controller import metrics
from controller.models.policy import IPsecPolicyStatus


class OperatorMetrics(metrics.OperatorMetrics):
    def observe(
        self, policy: str, status: IPsecPolicyStatus, not_after: datetime | None, now: datetime
    ) -> None:
        self.policies_ready.labels(policy=policy).set(status.summary.ready_nodes)
        self.policies_selected.labels(policy=policy).set(status.summary.selected_nodes)
        self.established_sas.labels(policy=policy).set(status.summary.established_sas)
        if not_after is not None:
            self.cert_expiry.labels(policy=policy).set(metrics.seconds_until(not_after, now))

    def forget(self, policy: str) -> None:
        for gauge in (
            self.policies_ready, self.policies_selected, self.established_sas, self.cert_expiry
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(policy)
