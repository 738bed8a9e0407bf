"""The signer ``strongmesh.io/ipsec-node``: approve and sign the nodes' CSRs (I/O).

What may be approved is decided by ``controller.pki.judge_csr`` (pure): a CSR made by a node's
agent (the agent ServiceAccount, with that node's node-name claim in its token), for exactly
that node's subject, naming an issuer that a policy selecting the node uses. An approved CSR
is signed at once with the issuer's CA (read from its Secret, which only the operator may
read); a refused one is denied with the reason, so that ``kubectl get csr`` and the agent's
status say why. Every write goes through the CSR API's approval and status subresources, which
kube-apiserver authorizes against the ``approve`` and ``sign`` verbs on this one signer.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.kubeapi import ApiError, ApiUnavailableError, KubeClient
from controller.models.common import duration_seconds
from controller.models.policy import IPsecPolicySpec
from controller.operator.events import EventSpec
from controller.pki import ISSUER_ANNOTATION, SIGNER, CsrVerdict, judge_csr, sign
from controller.validation import IssuerCA

log = logging.getLogger(__name__)

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def pending(csr: Mapping[str, Any]) -> bool:
    """Ours, not signed, and neither denied nor failed (approved but unsigned is pending)."""
    spec, status = csr.get("spec") or {}, csr.get("status") or {}
    if spec.get("signerName") != SIGNER or status.get("certificate"):
        return False
    decided = {c.get("type") for c in status.get("conditions") or [] if c.get("status") != "False"}
    return not decided & {"Denied", "Failed"}


def issuers_of_nodes(
    policies: Mapping[str, IPsecPolicySpec], nodes: Mapping[str, Mapping[str, str]]
) -> dict[str, set[str]]:
    """Per node, the issuers (``ns/name``) of the policies that select it."""
    out: dict[str, set[str]] = {}
    for spec in policies.values():
        issuer = spec.credentials.issuer
        if issuer is None:
            continue
        key = f"{issuer.secret_ref.namespace}/{issuer.secret_ref.name}"
        for node, labels in nodes.items():
            if spec.node_selector.matches(dict(labels)):
                out.setdefault(node, set()).add(key)
    return out


def _lifetime(policies: Mapping[str, IPsecPolicySpec], issuer: str) -> timedelta:
    """The shortest duration any policy using the issuer asks for."""
    seconds = [
        duration_seconds(spec.credentials.issuer.duration)
        for spec in policies.values()
        if spec.credentials.issuer is not None
        and f"{spec.credentials.issuer.secret_ref.namespace}/"
            f"{spec.credentials.issuer.secret_ref.name}" == issuer
    ]
    return timedelta(seconds=min(seconds, default=720 * 3600))


class CsrSigner:
    """Approves, denies and signs CSRs for the strongmesh signer, one at a time."""

    def __init__(
        self,
        client: KubeClient,
        agent_user: str,
        policies: Callable[[], Mapping[str, IPsecPolicySpec]],  # the policies in force
        nodes: Callable[[], Mapping[str, Mapping[str, str]]],
        issuer_ca: Callable[[str], Awaitable[IssuerCA | None]],
        post_event: Callable[[Mapping[str, Any], EventSpec], Awaitable[None]],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.agent_user = agent_user
        self._policies = policies
        self._nodes = nodes
        self._issuer_ca = issuer_ca
        self._post_event = post_event
        self._now = now
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self.signed = 0
        self.denied = 0

    def on_csr(self, kind: str | None, body: Mapping[str, Any]) -> None:
        name = (body.get("metadata") or {}).get("name")
        if kind != "DELETED" and name and pending(body) and name not in self._queued:
            self._queued.add(name)
            self._queue.put_nowait(name)

    async def run(self) -> None:
        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            try:
                await self.handle(name)
            except (ApiError, ApiUnavailableError) as error:
                log.warning("CSR %s: %s; retrying", name, error)
                await asyncio.sleep(1.0)
                self.on_csr("MODIFIED", await self._get_or_empty(name))

    async def _get_or_empty(self, name: str) -> Mapping[str, Any]:
        try:
            result: Mapping[str, Any] = await self.client.get(f"{CSRS}/{name}")
            return result
        except (ApiError, ApiUnavailableError):
            return {}

    async def handle(self, name: str) -> None:
        csr = await self.client.get(f"{CSRS}/{name}")
        if not pending(csr):
            return
        approved = any(c.get("type") == "Approved"
                       for c in (csr.get("status") or {}).get("conditions") or [])
        policies = self._policies()
        verdict = judge_csr(csr, self.agent_user, self._nodes(),
                            issuers_of_nodes(policies, self._nodes()))
        if not approved and not verdict.approve:
            await self._decide(csr, "Denied", verdict)
            self.denied += 1
            log.warning("CSR %s denied: %s", name, verdict.message)
            await self._post_event(
                csr, EventSpec("Warning", "CertificateDenied", f"{name}: {verdict.message}"))
            return
        issuer = str(((csr.get("metadata") or {}).get("annotations") or {}).get(
            ISSUER_ANNOTATION, ""))
        ca = await self._issuer_ca(issuer)
        if ca is None:
            log.warning("CSR %s: the issuer %s is not usable now; it waits", name, issuer)
            return  # re-queued when the issuer Secret becomes valid (resync)
        if not approved:
            csr = await self._decide(csr, "Approved", verdict)
        certificate = sign(csr, ca.cert_pem, ca.key_pem, _lifetime(policies, issuer), self._now())
        status = dict(csr.get("status") or {})
        status["certificate"] = base64.b64encode(certificate.encode()).decode()
        await self.client.request("PUT", f"{CSRS}/{name}/status",
                                  body={**csr, "status": status})
        self.signed += 1
        log.info("CSR %s signed for node %s by issuer %s", name, verdict.node, issuer)

    async def _decide(self, csr: Mapping[str, Any], kind: str,
                      verdict: CsrVerdict) -> dict[str, Any]:
        stamp = self._now().strftime("%Y-%m-%dT%H:%M:%SZ")
        status = dict(csr.get("status") or {})
        status["conditions"] = [*(status.get("conditions") or []), {
            "type": kind, "status": "True", "reason": verdict.reason,
            "message": verdict.message, "lastUpdateTime": stamp, "lastTransitionTime": stamp,
        }]
        name = csr["metadata"]["name"]
        result: dict[str, Any] = await self.client.request(
            "PUT", f"{CSRS}/{name}/approval", body={**csr, "status": status})
        return result

    def requeue_pending(self, csrs: list[Mapping[str, Any]]) -> None:
        for csr in csrs:
            self.on_csr("MODIFIED", csr)
