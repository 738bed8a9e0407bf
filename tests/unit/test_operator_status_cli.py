"""`strongmesh status` lays out server-side tables the way kubectl does."""

from __future__ import annotations

from typing import Any

from controller.cli.status import render

POLICIES: dict[str, Any] = {
    "kind": "Table",
    "columnDefinitions": [
        {"name": "Name"}, {"name": "Ready"}, {"name": "SAs"}, {"name": "Hidden", "priority": 1},
        {"name": "Age"},
    ],
    "rows": [{"cells": ["mesh", "2/3", 4, "x", "5m"]}, {"cells": ["other", None, 0, "y", "1h"]}],
}
NODES: dict[str, Any] = {
    "kind": "Table",
    "columnDefinitions": [{"name": "Name"}, {"name": "Addresses"}],
    "rows": [{"cells": ["node-1", ["10.77.0.1", "fd00::1"]]}],
}


def test_several_kinds_get_prefixed_names_and_a_blank_line_between_tables() -> None:
    tables = [("ipsecpolicy.strongmesh.io", POLICIES), ("ipsecnode.strongmesh.io", NODES)]
    assert render(tables).splitlines() == [
        "NAME" + " " * 30 + "READY" + " " * 4 + "SAS   AGE",
        "ipsecpolicy.strongmesh.io/mesh" + " " * 4 + "2/3" + " " * 6 + "4     5m",
        "ipsecpolicy.strongmesh.io/other" + " " * 3 + "<none>   0     1h",
        "",
        "NAME" + " " * 29 + "ADDRESSES",
        "ipsecnode.strongmesh.io/node-1   [10.77.0.1 fd00::1]",
    ]


def test_a_plain_list_shows_names_and_nothing_shows_kubectls_message() -> None:
    listing = {"kind": "IPsecPolicyList", "items": [{"metadata": {"name": "mesh"}}]}
    assert render([("ipsecpolicy.strongmesh.io", listing)]) == "NAME\nmesh"
    empty = {"kind": "Table", "columnDefinitions": [{"name": "Name"}], "rows": []}
    assert render([("a", empty), ("b", empty)]) == "No resources found"
