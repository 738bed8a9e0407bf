"""Start the operator: kopf (watching) and the PolicyReconciler (writing) on one event loop.

kopf runs ``standalone`` (no peering objects: one operator replica, the chart's Deployment
uses the Recreate strategy) and ``clusterwide`` (every resource involved is cluster-scoped,
Secrets are looked up in their own namespaces). ``OperatorThread`` runs the whole thing in a
thread with its own loop: kopf cancels every task of its loop at shutdown, so it must never
share the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from controller.kubeapi import KubeClient, KubeConfig, abort_leftover_connections
from controller.operator.metrics import OperatorMetrics
from controller.operator.reconciler import Clocks, OperatorConfig, PolicyReconciler

if TYPE_CHECKING:
    import kopf

log = logging.getLogger(__name__)


def settings() -> kopf.OperatorSettings:
    """kopf settings: quiet, no annotations, no kopf finalizer, prompt watch resumption."""
    import kopf

    result = kopf.OperatorSettings()
    result.posting.enabled = False  # the PolicyReconciler posts our Events, with our reasons
    result.watching.server_timeout = 300
    result.watching.client_timeout = 330
    result.watching.connect_timeout = 10
    result.watching.reconnect_backoff = 1.0
    # kopf gives up (and the operator exits) when these run out: ride out ~5 minutes of API
    # outage in-process; the Deployment restarts the operator after that.
    result.networking.error_backoffs = [1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30, 30, 30, 30, 30]
    # NOT our finalizer: kopf removes "its" finalizer from objects that have no handler
    # needing one (we use only event handlers), which would undo the teardown finalizer.
    result.persistence.finalizer = "strongmesh.io/kopf"
    result.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="strongmesh.io")
    result.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="strongmesh.io", key="last-handled-configuration"
    )
    return result


async def operate(
    config: KubeConfig,
    operator_config: OperatorConfig | None = None,
    stop_flag: threading.Event | asyncio.Event | None = None,
    ready_flag: threading.Event | None = None,
    reconciler_box: list[PolicyReconciler] | None = None,
    metrics: OperatorMetrics | None = None,
    clocks: Clocks | None = None,
) -> None:
    """Run until ``stop_flag`` is set (or forever)."""
    import kopf

    from controller.operator.handlers import build_registry

    async with KubeClient(config) as client:
        reconciler = PolicyReconciler(client, operator_config, clocks, metrics)
        if reconciler_box is not None:
            reconciler_box.append(reconciler)
        # kopf, at shutdown, waits 5 s for every task created after it started before it
        # cancels them (the Secret watches start whenever a policy appears). So our tasks are
        # started before kopf, and on ``stop_flag`` we stop ours first, then kopf.
        kopf_stop = asyncio.Event()
        background = asyncio.create_task(reconciler.run())
        stopper = asyncio.create_task(_stop_in_order(stop_flag, background, kopf_stop))
        await asyncio.sleep(0)
        try:
            await kopf.operator(
                registry=build_registry(reconciler, config),
                settings=settings(),
                standalone=True,
                clusterwide=True,
                stop_flag=kopf_stop,
                ready_flag=ready_flag,
            )
        finally:
            for task in (stopper, background):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _stop_in_order(
    stop_flag: threading.Event | asyncio.Event | None,
    background: asyncio.Task[None],
    kopf_stop: asyncio.Event,
) -> None:
    if stop_flag is None:
        return  # kopf stops on SIGTERM/SIGINT by itself
    if isinstance(stop_flag, asyncio.Event):
        await stop_flag.wait()
    else:
        while not stop_flag.is_set():
            await asyncio.sleep(0.1)
    background.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await background
    kopf_stop.set()


class OperatorThread:
    """The operator in a thread of its own (tests, the lab). ``reconciler`` once started."""

    def __init__(
        self, config: KubeConfig, operator_config: OperatorConfig | None = None,
        clocks: Clocks | None = None,
    ) -> None:
        self.config = config
        self.operator_config = operator_config
        self.clocks = clocks
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._box: list[PolicyReconciler] = []
        self._thread = threading.Thread(target=self._main, name="strongmesh-operator", daemon=True)

    @property
    def reconciler(self) -> PolicyReconciler:
        return self._box[0]

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(operate(
                self.config, self.operator_config, self.stop_flag, self.ready_flag, self._box,
                clocks=self.clocks,
            ))
        except BaseException as error:  # reported to the thread's owner by stop()
            self.error = error
            log.exception("operator thread failed")
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            # kopf's and our cancelled watches may still be saying TLS goodbye
            loop.run_until_complete(abort_leftover_connections())
            loop.close()

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self._thread.start()
        if not self.ready_flag.wait(timeout):
            self.stop()
            raise RuntimeError(f"the operator did not become ready within {timeout}s")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the operator thread did not stop")
        if self.error is not None:
            raise RuntimeError(f"the operator failed: {self.error!r}") from self.error

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
