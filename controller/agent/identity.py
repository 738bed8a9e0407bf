"""This node's own identity in issuer mode: its key, and certificates through the CSR API.

The key is generated here, on the node, once (ECDSA P-256, ``<dir>/node.key``, mode 0600 in a
0700 directory) and is never sent anywhere: only a CSR of it leaves the node. Per issuer a
policy names (``credentials.issuer``), the node asks for a certificate with a
CertificateSigningRequest (``controller.pki``), watches that one object by name until the
operator signed or refused it, and keeps the certificate beside the key (``<issuer>.crt``),
so a restarted agent needs no new one. It asks again before the renewal window, and when the
operator publishes that another CA signs now (a CA rotation): until the new certificate
arrives the node keeps using the one it has, so SAs never wait for a signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.agent.slices import PublishedPolicy
from controller.kubeapi import ApiError, ApiUnavailableError, KubeClient, Reflector, selector
from controller.models.common import duration_seconds
from controller.pki import csr_object, new_node_key, node_csr, renewal_reason

log = logging.getLogger(__name__)

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
RETRY_SECONDS = 30.0


def issuer_key(policy: PublishedPolicy) -> str | None:
    """``<namespace>/<name>`` of the policy's issuer Secret (None: not issuer mode)."""
    issuer = policy.spec.credentials.issuer
    return None if issuer is None else f"{issuer.secret_ref.namespace}/{issuer.secret_ref.name}"


def _file_name(issuer: str) -> str:
    return issuer.replace("/", "_") + ".crt"


def write_private(path: Path, text: str) -> None:
    """Created 0600 from the first byte, then moved into place (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class _Request:
    name: str
    reflector: Reflector
    task: asyncio.Task[None]
    reason: str
    refused: str = ""
    retry_at: float = 0.0


class NodeIdentity:
    """Key and certificates of one node; ``credentials`` is what a pass uses."""

    def __init__(
        self, client: KubeClient, node: str, directory: Path, changed: Callable[[], None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.node = node
        self.directory = directory
        self._changed = changed
        self._now = now
        self._key: str | None = None
        self._requests: dict[str, _Request] = {}

    # -- the key and stored certificates -------------------------------------------------------
    def key(self) -> str:
        if self._key is None:
            path = self.directory / "node.key"
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            if path.exists():
                self._key = path.read_text()
            else:
                self._key = new_node_key()
                write_private(path, self._key)
                log.info("generated this node's private key (%s, mode 0600)", path)
        return self._key

    def certificate(self, issuer: str) -> str | None:
        path = self.directory / _file_name(issuer)
        return path.read_text() if path.exists() else None

    # -- what a pass needs ---------------------------------------------------------------------
    def credentials(self, policy: PublishedPolicy) -> tuple[dict[str, str] | None, str | None]:
        """Credentials of the policy as Secret data (so the same checks run on them), or None
        and why not yet. Starts (or keeps waiting for) a CSR when one is due."""
        issuer = issuer_key(policy)
        spec = policy.spec.credentials.issuer
        assert issuer is not None
        assert spec is not None
        key = self.key()
        cert = self.certificate(issuer)
        bundle = _pem_blocks(policy.trust_bundle)
        reason = renewal_reason(cert, key, self.node, policy.signer, bundle,
                                _delta(spec.renew_before), self._now())
        if reason is not None:
            self._request(issuer, reason, duration_seconds(spec.duration))
        if cert is None:
            pending = self._requests.get(issuer)
            why = (f"CSR {pending.name} was refused: {pending.refused}" if pending and
                   pending.refused else f"waiting for CSR {pending.name} to be signed"
                   if pending else "no certificate yet")
            return None, f"waiting for this node's certificate from issuer {issuer}: {why}"
        return {"tls.crt": cert, "tls.key": key, "ca.crt": policy.trust_bundle}, None

    # -- CSRs ----------------------------------------------------------------------------------
    def _request(self, issuer: str, reason: str, seconds: int) -> None:
        current = self._requests.get(issuer)
        loop = asyncio.get_running_loop()
        if current is not None and (not current.refused or loop.time() < current.retry_at):
            return  # one request at a time; a refused one is retried later
        if current is not None:
            self._forget(issuer)
        name = f"strongmesh-{self.node}-{secrets.token_hex(4)}"[:253]
        body = csr_object(name, self.node, node_csr(self.key(), self.node), issuer, seconds)
        reflector = Reflector(self.client, CSRS, lambda: self._check(issuer),
                              field_selector=selector(**{"metadata.name": name}),
                              relevant=lambda obj: obj.get("status"))
        task = asyncio.create_task(self._create_then_watch(name, body, reflector))
        self._requests[issuer] = _Request(name, reflector, task, reason)
        log.info("requesting a certificate from issuer %s (%s): CSR %s", issuer, reason, name)

    async def _create_then_watch(self, name: str, body: dict[str, Any],
                                 reflector: Reflector) -> None:
        delay = 1.0
        while True:
            try:
                await self.client.create(CSRS, body)
                break
            except ApiError as error:
                if error.status == 409:
                    break
                log.warning("could not create CSR %s: %s", name, error)
            except ApiUnavailableError as error:
                log.warning("could not create CSR %s: %s", name, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_SECONDS)
        await reflector.run()

    def _check(self, issuer: str) -> None:
        request = self._requests.get(issuer)
        if request is None:
            return
        csr = request.reflector.items.get(request.name)
        status = (csr or {}).get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") in ("Denied", "Failed") and condition.get("status") != "False":
                request.refused = (f"{condition.get('type')}: {condition.get('reason', '')} "
                                   f"{condition.get('message', '')}").strip()
                request.retry_at = asyncio.get_running_loop().time() + RETRY_SECONDS
                log.warning("CSR %s: %s", request.name, request.refused)
                self._changed()
                return
        encoded = status.get("certificate")
        if encoded:
            import base64

            write_private(self.directory / _file_name(issuer),
                          base64.b64decode(encoded).decode())
            log.info("CSR %s signed: certificate from issuer %s stored", request.name, issuer)
            self._forget(issuer)
            self._changed()

    def _forget(self, issuer: str) -> None:
        request = self._requests.pop(issuer, None)
        if request is not None:
            request.task.cancel()

    async def close(self) -> None:
        tasks = [r.task for r in self._requests.values()]
        self._requests.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _pem_blocks(text: str) -> list[str]:
    out, current = [], []
    for line in text.splitlines(keepends=True):
        current.append(line)
        if line.startswith("-----END "):
            out.append("".join(current))
            current = []
    return out


def _delta(duration: str) -> Any:
    from datetime import timedelta

    return timedelta(seconds=duration_seconds(duration))
