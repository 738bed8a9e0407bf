"""Per-node identities in the kernel lab: each node proves its own name, a stolen address buys
nothing, and the issuing CA rotates under traffic without a datagram lost or in the clear.

Cluster mode, three nodes, ``examples/policy-issuer.yaml`` (the policy ``node-mesh`` with
``credentials.issuer`` -> the Secret ``mesh-ca``): every agent generates its node's key in
its identity directory and gets ``O=strongmesh, CN=<node>`` signed by the operator.

- Identities: every SA names the peer node it is with, every node's certificate is its own,
  from the example CA, and each IKE_SA's peer certificate was verified with that CA.
- Impostor: node-3, with its own valid certificate and key, claims node-2's address towards
  node-1 (``impostor`` step: a namespace of its own behind node-1, nothing on the switch).
  node-1's connection for 10.77.0.2 requires ``O=strongmesh, CN=node-2``, and the catch-all
  does not answer 10.77.0.2 at all (its ``remote_addrs`` leave out every known peer), so there
  is no config for node-3 at that address: AUTHENTICATION_FAILED. The genuine pairs keep
  their SAs and their traffic (a stream of datagrams runs through the attempt).
- Rotation: the issuer Secret moves to CA2 (bundle CA1+CA2), every node gets a CA2
  certificate, then CA1 leaves the bundle; a stream of datagrams (one per pair every 0.25 s,
  each sent once) runs throughout: none may be seen in the clear, and none lost except where
  strongSwan 5.9.8 cannot help it. A changed credential re-authenticates the pair (a new
  IKE_SA, made before the old one breaks); the responder of an IKE_AUTH installs its new
  outbound SA before it sends the response (``child_create.c``: only rekeyings delay it), so
  a datagram it sends in the moment before the initiator has processed that response reaches
  an initiator without the inbound SA yet. Such a datagram is the first on its SA (ESP
  sequence number 1); any other loss fails the drill.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.certs import make_ca, secret_manifest
from tests.lab.conftest import EXAMPLE_ISSUER, matrix, node_pairs

Lab = Callable[..., dict[str, Any]]
POLICY = "node-mesh"
EXAMPLE_CA = "C=US, O=strongmesh, CN=strongmesh Example Issuer CA"
CA2_CN = "strongmesh Lab CA2"
CA2 = f"C=US, O=strongmesh, CN={CA2_CN}"


def _identity(address: str) -> str:
    """The identity of the lab node at ``address`` (10.77.0.i is node-i)."""
    return f"O=strongmesh, CN=node-{address.rsplit('.', 1)[1]}"


def _step(report: dict[str, Any], action: str, index: int = 0) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in report["steps"] if s["do"] == action]
    return found[index]


def _example_ca_pem() -> str:
    for doc in yaml.safe_load_all(EXAMPLE_ISSUER.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            return base64.b64decode(doc["data"]["tls.crt"]).decode()
    raise AssertionError(f"no issuer Secret in {EXAMPLE_ISSUER}")


def _connections(list_conns: str) -> dict[str, list[str]]:
    """``swanctl --list-conns`` output by connection: its own lines (indented by two: its
    addresses; deeper ones: authentication and children), stripped."""
    out: dict[str, list[str]] = {}
    name = ""
    for line in list_conns.splitlines():
        if line and not line.startswith(" "):
            name = line.split(":", 1)[0]
            out[name] = []
        elif name:
            depth = len(line) - len(line.lstrip(" "))
            out[name].append(("" if depth == 2 else "  ") + line.strip())
    return out


def _lost_at_the_switch(datagram: dict[str, Any]) -> bool:
    """Lost as the first datagram on a new SA (see the module's docstring), nothing else."""
    return (not datagram["delivered"] and datagram["seen"] == "esp"
            and not datagram["send_error"] and datagram["esp_seq"] == 1)


def _stream_failures(stream: dict[str, Any]) -> list[dict[str, Any]]:
    """Every datagram of a stream that was lost, not sent, or not seen as ESP."""
    return [d for d in stream["datagrams"]
            if not d["delivered"] or d["seen"] != "esp" or d["send_error"]]


def test_every_node_proves_its_own_identity_to_every_peer(lab: Lab) -> None:
    report = lab(EXAMPLE_ISSUER, nodes=3, steps=[{"do": "peer_cas"}])
    for node in report["nodes"]:
        me = _identity(node["address"])
        assert node["identity"] == me
        [enforced] = [p for p in node["policies"] if p["name"] == POLICY]
        assert enforced["certificate"]["subject"] == me
        assert enforced["certificate"]["issuer"] == EXAMPLE_CA
        installed = [sa for sa in node["sas"] if sa["state"] == "INSTALLED"]
        # one SA per peer, each naming that peer: distinct identities, bound to addresses
        assert sorted((sa["peer"], sa["peerIdentity"]) for sa in installed) == [
            (f"10.77.0.{j}", f"O=strongmesh, CN=node-{j}")
            for j in range(1, 4) if f"10.77.0.{j}" != node["address"]]
    seen = matrix(report)
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    # how each node's charon verified each peer: that peer's own certificate, the example CA
    for name, sas in _step(report, "peer_cas")["detail"].items():
        established = [sa for sa in sas if sa["state"] == "ESTABLISHED"]
        assert len(established) == 2, (name, sas)
        for sa in established:
            assert sa["remote_id"] == _identity(sa["remote"]), (name, sa)
            assert (sa["cert"], sa["ca"]) == (sa["remote_id"], EXAMPLE_CA), (name, sa)


def test_a_node_claiming_another_nodes_address_is_refused(lab: Lab) -> None:
    report = lab(EXAMPLE_ISSUER, nodes=3, steps=[
        {"do": "start_stream", "label": "genuine"},
        {"do": "impostor", "identity": "node-3", "address": "10.77.0.2", "target": "node-1"},
        {"do": "stop_stream", "label": "genuine"},
        {"do": "probe", "label": "after-impostor", "timeout": 20},
        {"do": "snapshot", "label": "after-impostor"},
    ])
    attempt = _step(report, "impostor")["detail"]
    # why it cannot work: node-1's connection for 10.77.0.2 requires node-2's identity, and its
    # catch-all answers no known peer's address (the impostor cannot fall back to it)
    conns = _connections(attempt["target_connections"])
    assert [x for x in conns[f"sm-{POLICY}"] if x.startswith("remote: ")] == [
        "remote: 10.77.0.0", "remote: 10.77.0.4-10.77.0.255"]
    assert {"remote: 10.77.0.2", "  id: O=strongmesh, CN=node-2"} <= set(
        conns[f"sm-{POLICY}@node-2"])
    # only the replies to the impostor's IKE ports take its veth; node-2 keeps 10.77.0.2
    assert attempt["routing"]["to_impostor_ike"].startswith("10.77.0.2 dev imp table 100 ")
    assert attempt["routing"]["to_address_otherwise"].startswith("10.77.0.2 dev eth0 ")
    assert attempt["load"]["exit"] == 0, attempt["load"]
    # the impostor presented node-3's valid certificate and was refused
    assert attempt["initiate"]["exit"] != 0
    assert "sending end entity cert \"O=strongmesh, CN=node-3\"" in attempt["initiate"]["stdout"]
    assert "received AUTHENTICATION_FAILED notify error" in attempt["initiate"]["stdout"]
    assert attempt["impostor_sas"] == []
    assert attempt["target_ike_sa_ids"], "node-1 never saw the impostor's IKE_SA"
    log = "\n".join(attempt["target_log"])
    for line in (
        "received packet: from 10.77.0.2[5000] to 10.77.0.1[500]",
        "received end entity cert \"O=strongmesh, CN=node-3\"",
        "looking for peer configs matching 10.77.0.1[%any]...10.77.0.2[O=strongmesh, CN=node-3]",
        "no matching peer config found",
        "generating IKE_AUTH response 1 [ N(AUTH_FAILED) ]",
    ):
        assert line in log, (line, attempt["target_log"])
    assert "authentication of 'O=strongmesh, CN=node-3' with" not in log
    # node-1 holds no SA with node-3's identity at node-2's address, before or after; its
    # IKE_SA with node-2 is the very same one
    for when in ("target_sas_before", "target_sas_after"):
        assert [(sa["remote"], sa["remote_id"]) for sa in attempt[when]
                if sa["remote"] == "10.77.0.2"] == [("10.77.0.2", "O=strongmesh, CN=node-2")]
    assert ([sa["id"] for sa in attempt["target_sas_after"]]
            == [sa["id"] for sa in attempt["target_sas_before"]])
    node1 = report["snapshots"]["after-impostor"]["node-1"]["status"]["sas"]
    assert not [sa for sa in node1 if sa["peer"] == "10.77.0.2"
                and sa.get("peerIdentity") != "O=strongmesh, CN=node-2"], node1
    # between 10.77.0.2 and node-1 the switch carried only the genuine pair's ESP meanwhile
    # (the stream): no IKE of the impostor, no datagram in the clear, no duplicate address
    [wire] = report["impostors"]
    assert (wire["probes"], wire["other"]) == (0, 0), wire
    # the genuine pairs: every datagram through the attempt delivered over ESP, and after it
    stream = report["streams"]["genuine"]
    assert stream["sent"] >= 6
    assert not _stream_failures(stream), _stream_failures(stream)
    seen = matrix(report, "after-impostor")
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}


def test_the_issuing_ca_rotates_under_traffic_never_in_the_clear(
    lab: Lab, tmp_path: Path
) -> None:
    ca1_pem = _example_ca_pem()
    ca2 = make_ca(CA2_CN)
    both = tmp_path / "mesh-ca-ca1-ca2.yaml"
    only2 = tmp_path / "mesh-ca-ca2.yaml"
    for path, bundle in ((both, ca1_pem + ca2.cert_pem), (only2, ca2.cert_pem)):
        path.write_text(yaml.safe_dump(secret_manifest(
            {"tls.crt": ca2.cert_pem, "tls.key": ca2.key_pem(), "ca.crt": bundle},
            name="mesh-ca")))
    report = lab(EXAMPLE_ISSUER, nodes=3, files={"both.yaml": both, "only2.yaml": only2}, steps=[
        {"do": "start_stream", "label": "rotation"},
        {"do": "apply", "file": "both.yaml"},  # CA2 signs; nodes trust CA1 and CA2
        {"do": "wait_authorities", "cacerts": [EXAMPLE_CA, CA2], "timeout": 60},
        {"do": "wait_certificates", "policy": POLICY, "issuer_contains": CA2,
         "subject": "O=strongmesh, CN={node}", "timeout": 120},
        {"do": "apply", "file": "only2.yaml"},  # CA1 is trusted no more
        {"do": "wait_authorities", "cacerts": [CA2], "timeout": 60},
        # the stream runs on until the mesh has settled: one SA each way per pair
        {"do": "wait_one_sa_per_peer", "timeout": 60},
        {"do": "stop_stream", "label": "rotation"},
        {"do": "peer_cas"},
        {"do": "probe", "label": "rotated", "timeout": 20},
        {"do": "snapshot", "label": "rotated"},
    ])
    stream = report["streams"]["rotation"]
    # one datagram per ordered pair every 0.25 s through both applies and all the waits
    assert stream["sent"] >= 6 * 10, stream["sent"]
    assert stream["cleartext"] == [], stream["cleartext"]  # never in the clear
    # and none lost (each was sent once, never again) but the first on a new SA: one at most
    # per SA, and a gap longer than the stream's interval would lose its second too
    failures = [d for d in _stream_failures(stream) if not _lost_at_the_switch(d)]
    assert not failures, {"per step": stream["steps"], "failed": failures}
    # every node authenticates with a CA2 certificate of its own name now
    for name, status in report["snapshots"]["rotated"].items():
        [enforced] = [p for p in status["status"]["policies"] if p["name"] == POLICY]
        assert (enforced["certificate"]["subject"], enforced["certificate"]["issuer"]) == (
            f"O=strongmesh, CN={name}", CA2), name
    seen = matrix(report, "rotated")
    assert {seen[p] for p in node_pairs(report)} == {("esp", True)}
    # and every IKE_SA a node holds has verified its peer's certificate with CA2: an IKE_SA
    # authenticated with CA1 would outlive the trust in CA1 (IKEv2 rekeying never
    # re-authenticates)
    verified = {(name, sa["name"], sa["id"]): sa["ca"]
                for name, sas in _step(report, "peer_cas")["detail"].items() for sa in sas
                if sa["state"] == "ESTABLISHED"}
    assert len(verified) == 6, verified
    assert {key: ca for key, ca in verified.items() if ca != CA2} == {}
