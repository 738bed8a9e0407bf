"""The lab in cluster mode: policies applied, changed and deleted through the embedded API.

The operator's view (``policy_status``, kubectl output run inside the lab) is asserted together
with what the switch carried, so every claim the API makes is checked against the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.lab.conftest import (
    EXAMPLE,
    bystander_pairs,
    cleartext_from_nodes,
    matrix,
    node_pairs,
    policy_variant,
)

Lab = Callable[..., dict[str, Any]]
POLICY = "node-mesh"
NEW_PROPOSALS = {
    "ike": {"version": 2, "proposals": ["aes256-sha384-ecp384!"]},
    "esp": {"proposals": ["aes256gcm16!"]},
}
MALFORMED_CA = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def kubectl_tables(stdout: str) -> list[list[dict[str, str]]]:
    """kubectl's table output (one table per resource kind, blank-line separated) as rows."""
    tables = []
    for block in stdout.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        header = lines[0].split()
        tables.append([dict(zip(header, line.split(), strict=False)) for line in lines[1:]])
    return tables


def step(report: dict[str, Any], action: str, index: int = 0) -> Any:
    """The detail of the index-th step of that kind (steps must have succeeded)."""
    return [s for s in report["steps"] if s["do"] == action][index]["detail"]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def spis(snapshot: dict[str, Any]) -> dict[str, set[str]]:
    """Per node, the inbound SPIs of its installed CHILD_SAs (from its IPsecNode)."""
    return {
        node: {sa["spiIn"] for sa in doc["status"]["sas"] if sa["state"] == "INSTALLED"}
        for node, doc in snapshot.items()
    }


def secret_with_ca(path: Path, ca_pem: str) -> Path:
    """The example's Secret alone, with ``ca.crt`` replaced (the policy object is unchanged)."""
    (secret,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "Secret"]
    secret.setdefault("stringData", {})["ca.crt"] = ca_pem
    secret.get("data", {}).pop("ca.crt", None)
    path.write_text(yaml.safe_dump(secret))
    return path


def test_policy_applied_through_the_api_is_ready_everywhere_and_kubectl_shows_it(
    lab: Lab,
) -> None:
    report = lab(EXAMPLE, nodes=3)
    assert report["mode"] == "cluster"
    seen = matrix(report)
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert {seen[p] for p in bystander_pairs(report)} == {("cleartext", True)}
    assert [c for c in cleartext_from_nodes(report) if c[2] != "bystander"] == []

    status = report["policy_statuses"][POLICY]
    assert condition(status, "Ready")["status"] == "True"
    assert status["summary"]["ready"] == "3/3"
    sas = status["summary"]["establishedSAs"]
    assert sas >= 6  # at least one CHILD_SA per node and peer, counted on both ends

    get = report["kubectl"]["get"]
    assert get["exit"] == 0, get["stderr"]
    policies, ipsecnodes = kubectl_tables(get["stdout"])
    assert [(r["NAME"], r["READY"], r["SAS"]) for r in policies] == [
        (f"ipsecpolicy.strongmesh.io/{POLICY}", "3/3", str(sas))
    ]
    assert sorted(r["NAME"] for r in ipsecnodes) == [
        f"ipsecnode.strongmesh.io/node-{i}" for i in (1, 2, 3)
    ]
    assert all(int(r["SAS"]) >= 2 for r in ipsecnodes), ipsecnodes

    shown = report["kubectl"][f"yaml {POLICY}"]
    assert shown["exit"] == 0, shown["stderr"]
    rows = {r["name"]: r for r in yaml.safe_load(shown["stdout"])["status"]["nodes"]}
    assert sorted(rows) == ["node-1", "node-2", "node-3"]
    for i, name in enumerate(sorted(rows), start=1):
        others = sorted(f"10.77.0.{j}" for j in (1, 2, 3) if j != i)
        assert rows[name]["enforcing"] is True
        assert rows[name]["peers"] == others
        assert rows[name]["establishedSAs"] >= 2
    assert sum(r["establishedSAs"] for r in rows.values()) == sas


def test_policy_update_with_new_proposals_renegotiates_sas_with_the_new_algorithms(
    lab: Lab, tmp_path: Path
) -> None:
    updated = policy_variant(tmp_path / "updated.yaml", NEW_PROPOSALS)
    report = lab(
        EXAMPLE,
        nodes=3,
        files={"updated.yaml": updated},
        steps=[
            {"do": "apply", "file": "updated.yaml"},
            {"do": "wait_policy", "name": POLICY, "condition": "Ready", "timeout": 60},
            {"do": "probe", "label": "after-update", "timeout": 30},
            {"do": "wait_sas", "timeout": 20},
            {"do": "snapshot", "label": "after-update"},
        ],
    )
    assert step(report, "wait_policy")["generation"] == 2
    after = matrix(report, "after-update")
    assert {after[p] for p in node_pairs(report)} == {("esp", True)}
    assert [c for c in cleartext_from_nodes(report) if c[2] != "bystander"] == []
    for node, doc in report["snapshots"]["after-update"].items():
        installed = [sa for sa in doc["status"]["sas"] if sa["state"] == "INSTALLED"]
        assert installed, f"{node} holds no SAs after the update"
        assert {sa["encryption"] for sa in installed} == {"AES_GCM_16-256"}, node
        assert {sa["ikeAlgorithms"] for sa in installed} == {
            "AES_CBC-256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384"
        }, node
    main_spis = {s["spi"] for states in report["states"]["main"].values() for s in states}
    new_spis = set().union(*spis(report["snapshots"]["after-update"]).values())
    assert not main_spis & new_spis, "SAs of the old proposals survived the update"


def test_node_selector_puts_two_of_three_nodes_under_the_policy(
    lab: Lab, tmp_path: Path
) -> None:
    # node-3 (group b) is outside the policy, like the bystander: the two selected nodes
    # protect 10.77.0.0/24 in Required, so it is reachable only because it is listed in
    # noIpsecSubnets (without that, node-1/2 would drop its cleartext and never reach it)
    policy = policy_variant(
        tmp_path / "p.yaml",
        {
            "nodeSelector": {"matchLabels": {"lab.strongmesh.io/group": "a"}},
            "noIpsecSubnets": ["10.77.0.200/32", "10.77.0.3/32"],
        },
    )
    report = lab(policy, nodes=3)
    status = report["policy_statuses"][POLICY]
    assert status["summary"]["ready"] == "2/2"
    assert sorted(r["name"] for r in status["nodes"]) == ["node-1", "node-2"]
    get = report["kubectl"]["get"]
    assert get["command"] == "kubectl get ipsecpolicies,ipsecnodes"
    assert get["exit"] == 0, get["stderr"]
    policies, ipsecnodes = kubectl_tables(get["stdout"])
    assert [(r["NAME"], r["READY"]) for r in policies] == [
        (f"ipsecpolicy.strongmesh.io/{POLICY}", "2/2")
    ]
    assert len(ipsecnodes) == 3  # every agent writes its IPsecNode, selected or not
    shown = yaml.safe_load(report["kubectl"][f"yaml {POLICY}"]["stdout"])
    assert [r["name"] for r in shown["status"]["nodes"]] == ["node-1", "node-2"]
    seen = matrix(report)
    assert seen[("node-1", "node-2")] == seen[("node-2", "node-1")] == ("esp", True)
    for other in ("node-1", "node-2", "bystander"):
        assert seen[("node-3", other)] == ("cleartext", True), other
        assert seen[(other, "node-3")] == ("cleartext", True), other
    nodes = {n["name"]: n for n in report["nodes"]}
    assert nodes["node-3"]["policies"] == []
    assert nodes["node-3"]["sas"] == []
    assert report["owned_policies"]["node-3"] == 0
    assert report["owned_policies"]["node-1"] > 0


def test_malformed_ca_sets_credentials_invalid_and_no_node_changes_its_state(
    lab: Lab, tmp_path: Path
) -> None:
    bad = secret_with_ca(tmp_path / "bad-secret.yaml", MALFORMED_CA)
    report = lab(
        EXAMPLE,
        nodes=3,
        files={"bad-secret.yaml": bad},
        steps=[
            {"do": "snapshot", "label": "before"},
            {"do": "owned_policies"},
            {"do": "apply", "file": "bad-secret.yaml"},
            {"do": "wait_policy", "name": POLICY, "condition": "CredentialsValid",
             "status": "False", "message_contains": "ca.crt", "timeout": 60},
            {"do": "wait_status", "error_contains": "ca.crt", "timeout": 30},
            {"do": "snapshot", "label": "after-bad"},
            {"do": "owned_policies"},
            {"do": "probe", "label": "after-bad", "timeout": 10},
        ],
    )
    creds = condition(step(report, "wait_policy")["status"], "CredentialsValid")
    assert creds["status"] == "False"
    assert "ca.crt" in creds["message"]
    assert spis(report["snapshots"]["after-bad"]) == spis(report["snapshots"]["before"])
    assert all(spis(report["snapshots"]["before"]).values())
    assert step(report, "owned_policies", 1) == step(report, "owned_policies", 0)
    seen = matrix(report, "after-bad")
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    assert {seen[p] for p in bystander_pairs(report)} == {("cleartext", True)}


def test_deleted_policy_is_torn_down_everywhere_before_its_finalizer_goes(
    lab: Lab,
) -> None:
    report = lab(
        EXAMPLE,
        nodes=3,
        steps=[
            {"do": "get", "name": POLICY},
            {"do": "delete", "name": POLICY},
            {"do": "wait_gone", "name": POLICY, "timeout": 90},
            {"do": "owned_policies"},
            {"do": "probe", "label": "after-delete", "timeout": 10},
        ],
    )
    assert step(report, "get")["metadata"]["finalizers"] == ["strongmesh.io/teardown"]
    assert step(report, "owned_policies") == {"node-1": 0, "node-2": 0, "node-3": 0}
    after = matrix(report, "after-delete")
    assert {after[p] for p in node_pairs(report)} == {("cleartext", True)}
    assert report["policy_status"] == {}
    for node in report["nodes"]:
        assert node["policies"] == [], node["name"]
        assert [sa for sa in node["sas"] if sa["state"] == "INSTALLED"] == [], node["name"]
