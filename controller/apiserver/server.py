"""Running the API server: in an event loop (``serve``) or in a background thread
(``ServerThread``, for tests and for tools that are not async), and writing a kubeconfig.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from controller.apiserver.api import Api
from controller.apiserver.handlers import Handlers


def read_crds(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """CustomResourceDefinitions from YAML/JSON files or directories of them (sorted)."""
    crds: list[dict[str, Any]] = []
    for entry in paths:
        path = Path(entry)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            with file.open(encoding="utf-8") as stream:
                for doc in yaml.safe_load_all(stream):
                    if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                        crds.append(doc)
    return crds


def kubeconfig(url: str, name: str = "strongmesh") -> dict[str, Any]:
    """A kubeconfig for the plain-HTTP server (any token is accepted)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": "strongmesh"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(path: str | Path, url: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig(url), sort_keys=False), encoding="utf-8")
    return target


class Server:
    """A running server; ``await stop()`` ends it (open watches are closed)."""

    def __init__(
        self, api: Api, handlers: Handlers, runner: web.AppRunner, host: str, port: int
    ) -> None:
        self.api = api
        self._handlers = handlers
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self._handlers.closing = True
        self.api.store.close_watches()
        await self._runner.cleanup()


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    crd_paths: Iterable[str | Path] = (),
    history: int = 10_000,
    bookmark_interval: float = 10.0,
    controller_delay: float = 0.2,
) -> Server:
    """Start serving on ``host:port`` (0: any free port) in the running loop.

    ``history``: changes kept for watch resume; ``bookmark_interval``: seconds between watch
    bookmarks; ``controller_delay``: seconds before garbage collection and namespace cleanup
    act on a deletion (asynchronous, as the controllers of a cluster are).
    """
    api = Api(history=history, controller_delay=controller_delay)
    for crd in read_crds(crd_paths):
        api.load_crd(crd)
    handlers = Handlers(api, bookmark_interval=bookmark_interval)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handlers.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        site = web.SockSite(runner, sock)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return Server(api, handlers, runner, host, sock.getsockname()[1])


class ServerThread:
    """The server in its own thread and event loop; ``with ServerThread(...) as s:``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        crd_paths: Iterable[str | Path] = (),
        **options: Any,
    ) -> None:
        self._args = (host, port, list(crd_paths))
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="apiserver", daemon=True
        )
        self.server: Server | None = None

    def start(self) -> ServerThread:
        self._thread.start()
        host, port, crds = self._args
        future = asyncio.run_coroutine_threadsafe(
            serve(host, port, crds, **self._options), self._loop
        )
        try:
            self.server = future.result(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        return self.server.url

    @property
    def api(self) -> Api:
        assert self.server is not None, "not started"
        return self.server.api

    def call(self, func: Any, *args: Any) -> Any:
        """Run ``func(*args)`` in the server's loop (the store is not thread-safe)."""

        async def run() -> Any:
            return func(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
            self.server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
