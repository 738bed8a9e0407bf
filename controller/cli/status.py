"""``strongmesh status``: the tables of ``kubectl get ipsecpolicies,ipsecnodes``, without kubectl.

The API server renders the rows (server-side printing, the CRDs' printer columns), exactly as
it does for kubectl; this command only lays them out the way kubectl does, so the lab and
machines without kubectl show the same thing.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

DESCRIPTION = """\
Print the IPsecPolicy and IPsecNode tables, like `kubectl get ipsecpolicies,ipsecnodes`
(printer columns as the API server renders them). Credentials: --kubeconfig, else
$KUBECONFIG, else the in-cluster service account, else ~/.kube/config.
"""

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
RESOURCES = (
    ("ipsecpolicies", "ipsecpolicy.strongmesh.io"),
    ("ipsecnodes", "ipsecnode.strongmesh.io"),
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="print the IPsecPolicy and IPsecNode tables (like kubectl get)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig to use")


def render_table(table: Mapping[str, Any], prefix: str | None) -> list[str]:
    """kubectl's layout of a meta.k8s.io Table: upper-case headers, columns padded by 3 spaces,
    only priority-0 columns; names prefixed with ``kind.group/`` when several kinds are shown."""
    columns = [c for c in table.get("columnDefinitions") or [] if not c.get("priority")]
    indexes = [
        i for i, c in enumerate(table.get("columnDefinitions") or []) if not c.get("priority")
    ]
    rows: list[list[str]] = [[str(c["name"]).upper() for c in columns]]
    for row in table.get("rows") or []:
        cells = row.get("cells") or []
        values = [_cell(cells[i]) if i < len(cells) else "" for i in indexes]
        if prefix and values:
            values[0] = f"{prefix}/{values[0]}"
        rows.append(values)
    if len(rows) == 1:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return [
        "   ".join(value.ljust(width) for value, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def as_table(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """A server that ignores the Table Accept header sends a list: show at least the names."""
    if doc.get("kind") == "Table":
        return doc
    return {
        "columnDefinitions": [{"name": "Name"}],
        "rows": [{"cells": [item["metadata"]["name"]]} for item in doc.get("items") or []],
    }


def _cell(value: Any) -> str:
    if value is None:
        return "<none>"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):  # as kubectl prints a Go slice (%v)
        return "[" + " ".join(_cell(v) for v in value) + "]"
    return str(value)


def render(tables: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """All tables, a blank line between them, as ``kubectl get a,b`` prints them."""
    blocks = []
    several = len(tables) > 1
    for prefix, table in tables:
        lines = render_table(as_table(table), prefix if several else None)
        if lines:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "No resources found"


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from controller.kubeapi import ApiError, ApiUnavailableError, KubeClient, load_config
    from controller.models.common import GROUP, VERSION

    async def fetch() -> list[tuple[str, Any]]:
        async with KubeClient(load_config(args.kubeconfig)) as client:
            return [
                (prefix, await client.request(
                    "GET", f"/apis/{GROUP}/{VERSION}/{plural}", accept=TABLE_ACCEPT
                ))
                for plural, prefix in RESOURCES
            ]

    try:
        tables = asyncio.run(fetch())
    except (ApiError, ApiUnavailableError, OSError, ValueError) as error:
        print(f"strongmesh status: {error}", file=sys.stderr)
        return 1
    print(render(tables))
    return 0
