"""A lean asyncio client of the Kubernetes API (aiohttp), for the agent and the operator.

Why not the official ``kubernetes`` package: the agent starts inside user-mode-linux, where
every imported file costs a hostfs round trip. Measured on the host: ``import kubernetes`` loads
526 modules (0.71 s), ``import aiohttp`` 226 (0.45 s); inside UML file access dominates, so the
difference scales accordingly. The agent needs six verbs on four resource paths, a watch, and
kubeconfig / in-cluster credentials: this module, and nothing generated.

``Reflector`` is the list+watch loop of client-go in miniature: it keeps a cache of one
collection current, resumes the watch from the last resourceVersion after a disconnect,
re-lists after ``410 Gone``, and never drops its cache during an API outage (the agent keeps
enforcing what it last knew).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp is imported lazily: `strongmesh agent --help` must stay fast
    import aiohttp

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ApiUnavailableError(Exception):
    """The API server could not be reached (connection refused, reset, timeout)."""


@dataclass(frozen=True)
class KubeConfig:
    """Where the API is and how to authenticate (one context of a kubeconfig)."""

    server: str
    ca_data: bytes | None = None
    insecure: bool = False
    cert_data: bytes | None = None
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None  # re-read on every request (projected tokens rotate)
    namespace: str = "default"

    def __repr__(self) -> str:  # never print credentials
        return f"KubeConfig(server={self.server!r})"


def _data(entry: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = Path(entry[key])
        return (path if path.is_absolute() else base / path).read_bytes()
    return None


def parse_kubeconfig(doc: Mapping[str, Any], base: Path, context: str | None = None) -> KubeConfig:
    """The current (or named) context of a kubeconfig document (PURE apart from file reads)."""
    name = context or doc.get("current-context")
    contexts = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    if name not in contexts:
        if len(contexts) != 1:
            raise ValueError(f"kubeconfig has no context {name!r}")
        name = next(iter(contexts))
    ctx = contexts[name]
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in doc.get("users") or []}
    cluster = clusters.get(ctx.get("cluster", ""))
    if cluster is None:
        raise ValueError(f"kubeconfig context {name!r} names no known cluster")
    user = users.get(ctx.get("user", ""), {})
    return KubeConfig(
        server=str(cluster["server"]).rstrip("/"),
        ca_data=_data(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        cert_data=_data(user, "client-certificate", base),
        key_data=_data(user, "client-key", base),
        token=user.get("token"),
        token_file=user.get("tokenFile"),
        namespace=ctx.get("namespace", "default"),
    )


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """``kubeconfig``, else $KUBECONFIG, else in-cluster service account, else ~/.kube/config."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if path is None and host and (SERVICE_ACCOUNT_DIR / "token").exists():
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
        return KubeConfig(
            server=server,
            ca_data=(SERVICE_ACCOUNT_DIR / "ca.crt").read_bytes(),
            token_file=str(SERVICE_ACCOUNT_DIR / "token"),
            namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
        )
    file = Path(path) if path else Path.home() / ".kube" / "config"
    import yaml  # only when a kubeconfig file is really read

    return parse_kubeconfig(yaml.safe_load(file.read_text()) or {}, file.parent)


def ssl_context(config: KubeConfig) -> ssl.SSLContext | None:
    """TLS settings for an https server (None for plain http)."""
    if not config.server.startswith("https:"):
        return None
    if config.ca_data:
        context = ssl.create_default_context(cadata=config.ca_data.decode())
    else:
        context = ssl.create_default_context()
    if config.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_data and config.key_data:
        # load_cert_chain reads files only: write them to a private temporary directory.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(config.cert_data)
            key.touch(mode=0o600)
            key.write_bytes(config.key_data)
            context.load_cert_chain(cert, key)
    return context


def selector(**fields: str) -> str:
    """A fieldSelector/labelSelector string: ``metadata.name=x,...``."""
    return ",".join(f"{k}={v}" for k, v in fields.items())


class KubeClient:
    """JSON over HTTP to one API server. Create and close inside the event loop that uses it."""

    def __init__(self, config: KubeConfig, timeout: float = 30.0) -> None:
        self.config = config
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": JSON, "User-Agent": "strongmesh"}
        token = self.config.token
        if self.config.token_file:
            token = Path(self.config.token_file).read_text().strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=ssl_context(self.config) or False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        body: Any = None, content_type: str = JSON, accept: str | None = None,
    ) -> Any:
        """One request, its decoded JSON answer; ApiError (HTTP error) or ApiUnavailableError."""
        import aiohttp

        session = self._get_session()
        headers = self._headers(content_type if body is not None else None)
        if accept:
            headers["Accept"] = accept
        try:
            async with session.request(
                method, self.config.server + path, params=params, headers=headers,
                data=None if body is None else json.dumps(body),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise ApiError(response.status, _error_message(text))
                return json.loads(text) if text else None
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            reason = f"{method} {path}: {str(error) or type(error).__name__}"
            raise ApiUnavailableError(reason) from error

    async def get(self, path: str, **params: str) -> Any:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("POST", path, body=body)

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Any:
        return await self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    async def delete(self, path: str, **params: str) -> Any:
        return await self.request("DELETE", path, params=params or None)

    async def watch(
        self, path: str, params: Mapping[str, str]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events ``(type, object)`` until the server ends the stream."""
        import aiohttp

        session = self._get_session()
        query = dict(params) | {"watch": "true"}
        server_timeout = float(query.get("timeoutSeconds", "300"))
        try:
            async with session.get(
                self.config.server + path, params=query, headers=self._headers(),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=server_timeout + 30
                ),
            ) as response:
                if response.status >= 400:
                    raise ApiError(response.status, _error_message(await response.text()))
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if line.strip():
                            event = json.loads(line)
                            yield event.get("type", ""), event.get("object") or {}
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            reason = f"watch {path}: {str(error) or type(error).__name__}"
            raise ApiUnavailableError(reason) from error


def _error_message(text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("reason") or text[:200])
    return text[:200]


async def abort_leftover_connections() -> int:
    """Abort the connections of the running loop that are still open; call before closing it.

    A cancelled watch closes its TLS connection gracefully (close_notify, then the server's
    answer); a loop closed before that answer arrives leaves the socket to the garbage
    collector (``ResourceWarning: unclosed transport``). This drops what is left at once and
    lets the loop run the resulting callbacks. Returns how many were aborted. (It enumerates
    the loop's transports through CPython's selector loop; elsewhere it does nothing.)
    """
    loop = asyncio.get_running_loop()
    transports = list(getattr(loop, "_transports", {}).values())
    aborted = 0
    for transport in transports:
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.fileno() != -1:
            transport.abort()
            aborted += 1
    for _ in range(3):  # abort() closes the socket in a callback of the next loop turn
        await asyncio.sleep(0)
    return aborted


class Reflector:
    """Keeps ``items`` (name -> object) equal to one collection; calls ``on_change`` on change.

    List, then watch from the list's resourceVersion; on a dropped stream resume from the last
    seen resourceVersion (bookmarks keep it fresh); on ``410 Gone`` list again. During an API
    outage ``items`` keeps its last content and ``synced`` stays True: callers keep working
    from what they last knew, and ``connected`` says whether the view is live.
    """

    def __init__(
        self, client: KubeClient, path: str, on_change: Callable[[], None],
        field_selector: str | None = None, timeout_seconds: int = 300,
        backoff: tuple[float, float] = (0.5, 10.0),
        relevant: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.items: dict[str, dict[str, Any]] = {}
        self.synced = False
        self.connected = False
        self.last_error = ""
        # The server's refusal (403) of the last list/watch, "" otherwise: a definite answer
        # (RBAC), unlike an outage; the reflector keeps retrying in case RBAC changes.
        self.refused = ""
        self.events = 0  # watch events received (bookmarks not counted): what scale costs
        self._on_change = on_change
        # What of an object matters to the caller: changes elsewhere (a policy's status, a
        # Node's heartbeat conditions) update ``items`` but do not call ``on_change``.
        self._relevant = relevant or (lambda obj: obj)
        self._field_selector = field_selector
        self._timeout_seconds = timeout_seconds
        self._backoff = backoff

    def _params(self) -> dict[str, str]:
        return {"fieldSelector": self._field_selector} if self._field_selector else {}

    async def _list(self) -> str:
        doc = await self.client.get(self.path, **self._params())
        items = {obj["metadata"]["name"]: obj for obj in doc.get("items") or []}
        changed = not self.synced or self._view(items) != self._view(self.items)
        self.items = items
        self.synced = True
        self.connected = True
        self.refused = ""
        if changed:
            self._on_change()
        return str(doc.get("metadata", {}).get("resourceVersion", ""))

    async def run(self) -> None:
        """Forever (cancel to stop)."""
        delay = self._backoff[0]
        version = ""
        while True:
            try:
                if not version:
                    version = await self._list()
                params = self._params() | {
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(self._timeout_seconds),
                }
                self.connected = True
                started, events = asyncio.get_running_loop().time(), 0
                async for kind, obj in self.client.watch(self.path, params):
                    delay = self._backoff[0]
                    events += 1
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            version = ""  # too old: list again
                            break
                        raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "")))
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        continue
                    self._apply(kind, obj)
                if not events and asyncio.get_running_loop().time() - started < 1.0:
                    await asyncio.sleep(delay)  # a stream that ends at once: do not spin
                    delay = min(delay * 2, self._backoff[1])
            except asyncio.CancelledError:
                raise
            except (ApiError, ApiUnavailableError, ValueError, KeyError) as error:
                if isinstance(error, ApiError) and error.status == 410:
                    version = ""
                self.connected = False
                self.last_error = str(error)
                refused = isinstance(error, ApiError) and error.status == 403
                self.refused = str(error) if refused else ""
                # jittered: a thousand agents refused at once (429) must not return at once
                wait = delay * (1 - random.random() / 2)
                log.warning("%s: %s; retrying in %.1fs", self.path, error, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self._backoff[1])

    def _view(self, items: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {name: self._relevant(obj) for name, obj in items.items()}

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        self.events += 1
        name = obj.get("metadata", {}).get("name")
        if not name:
            return
        if kind == "DELETED":
            if self.items.pop(name, None) is not None:
                self._on_change()
        elif kind in ("ADDED", "MODIFIED"):
            old = self.items.get(name)
            self.items[name] = obj
            if old is None or self._relevant(old) != self._relevant(obj):
                self._on_change()
