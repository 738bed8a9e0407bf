"""Thin kopf registrations: every watch event goes to the ``PolicyReconciler``, nothing else.

Handlers are ``async`` so that they run on the operator's loop (kopf runs sync handlers in a
thread pool, and the state is not thread-safe). Only ``@kopf.on.event`` handlers are used, on
purpose: they make kopf a watcher and nothing more. kopf's change-detecting handlers
(create/update/delete) would store their progress and a diff base in the policy's annotations
and add kopf's own finalizer; the operator must write nothing but the policy's status and the
``strongmesh.io/teardown`` finalizer, which the ``PolicyReconciler`` manages itself. Secrets are
not watched through kopf (that would be a cluster-wide Secret watch): see ``secrets``.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from controller.kubeapi import ApiError, ApiUnavailableError, KubeConfig
from controller.models.common import GROUP, VERSION
from controller.operator.reconciler import PolicyReconciler

log = logging.getLogger(__name__)


def connection_info(config: KubeConfig) -> kopf.ConnectionInfo:
    """kopf credentials from the same kubeconfig the operator's own client uses."""
    token = config.token
    if config.token_file:
        with open(config.token_file) as file:
            token = file.read().strip()
    return kopf.ConnectionInfo(
        server=config.server,
        ca_data=config.ca_data,
        insecure=config.insecure or None,
        scheme="Bearer" if token else None,
        token=token,
        certificate_data=config.cert_data,
        private_key_data=config.key_data,
        default_namespace=config.namespace,
    )


def build_registry(reconciler: PolicyReconciler, config: KubeConfig) -> kopf.OperatorRegistry:
    """A registry of its own per operator instance (tests run several, one after another)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(config)

    @kopf.on.event(GROUP, VERSION, "ipsecpolicies", registry=registry)
    async def policy_event(event: kopf.RawEvent, **_: Any) -> None:
        reconciler.on_policy(event.get("type"), dict(event["object"]))

    @kopf.on.event(GROUP, VERSION, "ipsecnodes", registry=registry)
    async def ipsec_node_event(event: kopf.RawEvent, **_: Any) -> None:
        reconciler.on_ipsec_node(event.get("type"), dict(event["object"]))

    @kopf.on.event("certificates.k8s.io", "v1", "certificatesigningrequests",
                   registry=registry)
    async def csr_event(event: kopf.RawEvent, **_: Any) -> None:
        reconciler.signer.on_csr(event.get("type"), dict(event["object"]))

    @kopf.on.event(GROUP, VERSION, "ipsecpeerslices", registry=registry)
    async def slice_event(event: kopf.RawEvent, **_: Any) -> None:
        reconciler.on_slice(event.get("type"), dict(event["object"]))

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(event: kopf.RawEvent, **_: Any) -> None:
        reconciler.on_node(event.get("type"), dict(event["object"]))
        if event.get("type") == "DELETED":
            name = event["object"]["metadata"]["name"]
            try:
                await reconciler.collect(name)
            except (ApiError, ApiUnavailableError) as error:  # the periodic sweep retries
                log.warning("could not collect IPsecNode %s: %s", name, error)

    return registry
