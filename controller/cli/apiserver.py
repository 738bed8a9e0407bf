"""``strongmesh apiserver``: the embedded Kubernetes API (in-memory, plain HTTP)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = (
    "Serve an in-memory Kubernetes API over plain HTTP with the CRDs found in --crds: "
    "discovery, OpenAPI v3, CRUD with resourceVersion/generation/status subresource, "
    "finalizers, patches (JSON, merge, strategic, apply), watches with resume and bookmarks, "
    "label/field selectors and server-side printer columns. kubectl, kopf and the official "
    "client work against it. Authentication is not checked: bind to a trusted address only."
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "apiserver", help="run the embedded Kubernetes API server", description=DESCRIPTION
    )
    parser.add_argument(
        "--address", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to listen on, 0 for any free port (default: %(default)s)",
    )
    parser.add_argument(
        "--crds",
        action="append",
        default=None,
        metavar="PATH",
        help="CRD file or directory of CRD YAML files; repeatable (default: crds)",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="OUT",
        help="write a kubeconfig for the server to OUT once it listens",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=10_000,
        help="changes kept for watch resume; older resourceVersions get "
        "410 Gone (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys

    from controller.apiserver import serve, write_kubeconfig

    async def main() -> None:
        server = await serve(args.address, args.port, args.crds or ["crds"], history=args.history)
        if args.kubeconfig:
            write_kubeconfig(args.kubeconfig, server.url)
        print(f"strongmesh apiserver listening on {server.url}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())
    return 0
