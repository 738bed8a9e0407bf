"""The VICI adapter and the rendered configuration against a real charon 5.9.8 on the host kernel.

Each test starts its own charon(s) in fresh network and mount namespaces (tests/charon.py).
The host kernel has no ESP, so two charons complete IKE_SAs but not CHILD_SAs here; full
CHILD_SAs are proven in the user-mode-linux lab.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controller.facts import NodeCredentials, NodeFacts
from controller.models.node import SecurityAssociation
from controller.models.policy import IPsecPolicy
from controller.ownership import reqid_for
from controller.strongswan.conf import DEFAULT_PLUGINS
from controller.strongswan.diff import plan_changes
from controller.strongswan.render import CharonPolicy, DesiredCharon, render_charon
from controller.strongswan.vici_client import STATE_FILE_NAME, Charon, CharonApplyError
from tests.certs import make_ca, make_cert
from tests.charon import (
    CharonProcess,
    Peer,
    charon_dn,
    charon_pair,
    issue_node,
    node_credentials,
    start_charon,
)

CA = make_ca("integration CA")
NODE = NodeFacts("node-a", ("192.0.2.1",))
CREDS = issue_node(CA, "node-a")


def policy(name: str = "mesh", **spec: Any) -> IPsecPolicy:
    body: dict[str, Any] = {
        "ipsecSubnets": ["192.0.2.0/24"],
        "credentials": {"secretRef": {"name": "creds", "namespace": "ns"}},
    }
    body.update(spec)
    return IPsecPolicy.model_validate({"metadata": {"name": name}, "spec": body})


def desired(
    *policies: IPsecPolicy, creds: NodeCredentials = CREDS, node: NodeFacts = NODE
) -> DesiredCharon:
    taken: list[int] = []
    items = []
    for p in sorted(policies, key=lambda p: p.metadata.name):
        reqid = reqid_for(p.metadata.name, taken)
        taken.append(reqid)
        items.append(CharonPolicy(p, creds, reqid))
    want = render_charon(items, node)
    assert want.problems == {}
    return want


def converge(client: Charon, want: DesiredCharon) -> None:
    client.apply(plan_changes(want, client.read_actual()))
    again = plan_changes(want, client.read_actual())
    assert again.is_empty, again.summary()


@pytest.fixture
def charon() -> Iterator[CharonProcess]:
    with start_charon() as process:
        yield process


@pytest.fixture
def client(charon: CharonProcess) -> Iterator[Charon]:
    with Charon(charon.uri) as c:
        yield c


def conn_log_lines(charon: CharonProcess, name: str) -> list[str]:
    return [line for line in charon.log_text().splitlines() if f"vici connection: {name}" in line]


def test_rendered_conf_starts_charon_quietly_with_exactly_the_listed_plugins(
    charon: CharonProcess, client: Charon
) -> None:
    log = charon.log_text()
    (line,) = [line for line in log.splitlines() if "loaded plugins:" in line]
    assert set(line.split("loaded plugins:")[1].split()) == {"charon", *DEFAULT_PLUGINS}
    assert "experts only" not in log
    assert "manual plugin load" not in log
    assert set(client.stats()["plugins"]) == {"charon", *DEFAULT_PLUGINS}


def test_conf_value_for_xfrm_acq_expires_is_what_charon_leaves_in_the_kernel() -> None:
    with start_charon(xfrm_acq_expires=6) as process:
        out = subprocess.run(
            ["ip", "netns", "exec", process.netns, "sysctl", "-n", "net.core.xfrm_acq_expires"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    assert out.strip() == "6"


def test_applied_state_reads_back_as_an_empty_plan(charon: CharonProcess, client: Charon) -> None:
    converge(client, desired(policy()))
    (conn,) = client.list_conns()
    body = conn["sm-mesh"]
    assert body["local_addrs"] == ["192.0.2.1"]
    assert body["remote_addrs"] == ["192.0.2.0/24"]
    # no local id was sent: charon took the certificate's own subject
    assert body["local-1"]["id"] == CREDS.subject == "C=US, O=strongmesh, CN=node-a"
    assert body["local-1"]["certs"] == [CREDS.subject]
    assert body["remote-1"]["id"] == "%any"
    assert body["remote-1"]["cacerts"] == [charon_dn(CA.cert)]
    child = body["children"]["sm-mesh"]
    assert child["mode"] == "TRANSPORT"
    assert child["local-ts"] == ["192.0.2.1/32"]
    assert child["remote-ts"] == ["192.0.2.0/24"]
    assert "installing 'sm-mesh'" in charon.log_text()  # the trap is in place


def test_changing_one_policy_reloads_only_that_connection(
    charon: CharonProcess, client: Charon
) -> None:
    converge(client, desired(policy("a"), policy("b")))
    plan = plan_changes(
        desired(policy("a"), policy("b", esp={"rekeyTime": "30m"})), client.read_actual()
    )
    assert list(plan.load_conns) == ["sm-b"]
    client.apply(plan)
    assert conn_log_lines(charon, "sm-a") == [conn_log_lines(charon, "sm-a")[0]]
    assert len(conn_log_lines(charon, "sm-b")) == 2
    assert plan_changes(
        desired(policy("a"), policy("b", esp={"rekeyTime": "30m"})), client.read_actual()
    ).is_empty


def test_removed_policy_is_unloaded_and_others_stay(charon: CharonProcess, client: Charon) -> None:
    converge(client, desired(policy("a"), policy("b")))
    converge(client, desired(policy("a")))
    assert set(client.read_actual().conns) == {"sm-a"}
    assert "uninstalling 'sm-b'" in charon.log_text()


def test_connections_strongmesh_does_not_own_are_left_alone(client: Charon) -> None:
    client._call("load-conn", lambda s: s.load_conn({"admin": {"remote_addrs": ["198.51.100.1"]}}))
    converge(client, desired(policy()))
    converge(client, DesiredCharon())
    names = client._call("get-conns", lambda s: s.get_conns())["conns"]
    assert names == [b"admin"]


def test_restarted_charon_has_a_new_id_and_gets_everything_again(
    charon: CharonProcess, client: Charon
) -> None:
    want = desired(policy())
    converge(client, want)
    before = client.charon_id()
    charon.restart()
    assert client.charon_id() != before
    actual = client.read_actual()
    assert actual.conns == {}
    assert actual.keys == frozenset()
    plan = plan_changes(want, actual)
    assert list(plan.load_conns) == ["sm-mesh"]
    assert plan.load_keys
    assert plan.load_authorities
    converge(client, want)


def test_restarted_agent_adopts_charons_state_without_reloading(
    charon: CharonProcess, client: Charon
) -> None:
    want = desired(policy())
    converge(client, want)
    assert (Path(charon.socket_path).parent / STATE_FILE_NAME).exists()
    with Charon(charon.uri) as fresh_agent:
        assert plan_changes(want, fresh_agent.read_actual()).is_empty
    with Charon(charon.uri, state_path=None) as amnesiac:
        # without the ledger, charon's connection cannot be vouched for: it is reloaded
        assert list(plan_changes(want, amnesiac.read_actual()).load_conns) == ["sm-mesh"]


def test_rotated_certificate_clears_credentials_once_and_keeps_authorities(
    client: Charon,
) -> None:
    converge(client, desired(policy()))
    rotated = issue_node(CA, "node-a")
    plan = plan_changes(desired(policy(), creds=rotated), client.read_actual())
    assert plan.clear_creds
    assert list(plan.load_conns) == ["sm-mesh"]
    assert not plan.load_authorities
    converge(client, desired(policy(), creds=rotated))
    actual = client.read_actual()
    assert len(actual.authorities) == 1  # load-authority authorities survive clear-creds
    assert len(actual.keys) == 1


def test_ca_rotation_unloads_the_old_authority(client: Charon) -> None:
    next_ca = make_ca("next CA")
    converge(client, desired(policy()))
    both = replace(CREDS, ca_pems=(*CREDS.ca_pems, next_ca.cert_pem))
    converge(client, desired(policy(), creds=both))
    assert len(client.read_actual().authorities) == 2
    only_next = replace(CREDS, ca_pems=(next_ca.cert_pem,))
    converge(client, desired(policy(), creds=only_next))
    actual = client.read_actual()
    assert len(actual.authorities) == 1
    subjects = (
        {
            c["subject"]
            for c in client._call("list-certs", lambda s: [dict(x) for x in s.list_certs()])
        }
        if False
        else None
    )
    assert subjects is None


def test_a_refused_step_is_reported_and_the_rest_applied(client: Charon) -> None:
    want = desired(policy("good"), policy("bad", ike={"proposals": ["no-such-algorithm!"]}))
    with pytest.raises(CharonApplyError) as failed:
        client.apply(plan_changes(want, client.read_actual()))
    assert list(failed.value.failures) == ["load-conn sm-bad"]
    assert "proposals" in failed.value.failures["load-conn sm-bad"]
    retry = plan_changes(want, client.read_actual())
    assert list(retry.load_conns) == ["sm-bad"]  # only the failed one is retried


# -- two charons: IKE on the host kernel ---------------------------------------------------------


def trigger_acquire(peer: Peer, remote: str, reqid: int) -> None:
    """Our xfrm policy with charon's reqid, then a packet: the kernel's ACQUIRE starts IKE."""
    ns = peer.charon.netns
    subprocess.run(
        [
            "ip",
            "-n",
            ns,
            "xfrm",
            "policy",
            "add",
            "dir",
            "out",
            "src",
            f"{peer.address}/32",
            "dst",
            f"{remote}/32",
            "tmpl",
            "proto",
            "esp",
            "mode",
            "transport",
            "reqid",
            str(reqid),
            "level",
            "use",
        ],
        check=True,
    )
    subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c1", "-W1", remote], check=False, capture_output=True
    )


def wait_for_ike(client: Charon, timeout: float = 8.0) -> list[SecurityAssociation]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sas = client.list_sas()
        if any(sa.ike_state == "ESTABLISHED" for sa in sas):
            return sas
        time.sleep(0.1)
    raise AssertionError("no IKE_SA established")


@pytest.fixture
def pair() -> Iterator[tuple[tuple[Peer, Charon], tuple[Peer, Charon]]]:
    with charon_pair() as (a, b), Charon(a.charon.uri) as ca_, Charon(b.charon.uri) as cb:
        yield (a, ca_), (b, cb)


def test_trap_connection_negotiates_with_a_peer_from_the_same_ca_and_sas_are_typed(
    pair: tuple[tuple[Peer, Charon], tuple[Peer, Charon]],
) -> None:
    (a, client_a), (b, client_b) = pair
    creds_b = issue_node(CA, "node-b")
    converge(client_a, desired(policy()))
    converge(client_b, desired(policy(), creds=creds_b, node=NodeFacts("node-b", (b.address,))))
    trigger_acquire(a, b.address, reqid_for("mesh", ()))
    (sa,) = wait_for_ike(client_a)
    assert sa.policy == "mesh"
    assert sa.peer == b.address
    assert sa.peer_identity == creds_b.subject == "C=US, O=strongmesh, CN=node-b"
    assert sa.ike_algorithms == "AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"
    assert sa.state == ""  # host kernel: no ESP, so no CHILD_SA
    (responder,) = wait_for_ike(client_b)
    assert (responder.peer, responder.peer_identity) == (a.address, CREDS.subject)


def test_peer_from_another_ca_is_refused(
    pair: tuple[tuple[Peer, Charon], tuple[Peer, Charon]],
) -> None:
    (a, client_a), (b, client_b) = pair
    stranger = issue_node(make_ca("other CA"), "node-b")
    converge(client_a, desired(policy()))
    converge(client_b, desired(policy(), creds=stranger, node=NodeFacts("node-b", (b.address,))))
    trigger_acquire(a, b.address, reqid_for("mesh", ()))
    time.sleep(2)
    assert not [sa for sa in client_a.list_sas() if sa.ike_state == "ESTABLISHED"]


def test_reloading_an_identical_connection_leaves_its_ike_sa_alone(
    pair: tuple[tuple[Peer, Charon], tuple[Peer, Charon]],
) -> None:
    (a, client_a), (b, client_b) = pair
    want = desired(policy())
    converge(client_a, want)
    converge(
        client_b,
        desired(policy(), creds=issue_node(CA, "node-b"), node=NodeFacts("node-b", (b.address,))),
    )
    trigger_acquire(a, b.address, reqid_for("mesh", ()))
    before = wait_for_ike(client_a)
    with Charon(a.charon.uri, state_path=None) as amnesiac:  # cannot vouch: reloads
        amnesiac.apply(plan_changes(want, amnesiac.read_actual()))
    assert "updated vici connection: sm-mesh" in a.charon.log_text()
    after = client_a.list_sas()
    assert [(s.peer, s.ike_state) for s in after] == [(s.peer, s.ike_state) for s in before]


def test_instance_certificate_from_an_intermediate_is_accepted_with_the_chain_sent_along(
    pair: tuple[tuple[Peer, Charon], tuple[Peer, Charon]],
) -> None:
    (a, client_a), (b, client_b) = pair
    intermediate = make_ca("integration intermediate", issuer=CA)
    creds_b = node_credentials(make_cert(intermediate, "node-b"), [CA], [intermediate])
    converge(client_a, desired(policy()))
    converge(client_b, desired(policy(), creds=creds_b, node=NodeFacts("node-b", (b.address,))))
    trigger_acquire(a, b.address, reqid_for("mesh", ()))
    (sa,) = wait_for_ike(client_a)
    assert sa.peer_identity == creds_b.subject
    assert f'sending issuer cert "{charon_dn(intermediate.cert)}"' in b.charon.log_text()


def test_ikev1_quick_mode_agrees_on_selectors_and_fails_only_for_lack_of_kernel_esp(
    pair: tuple[tuple[Peer, Charon], tuple[Peer, Charon]],
) -> None:
    (a, client_a), (b, client_b) = pair
    v1 = policy(ike={"version": 1})
    converge(client_a, desired(v1))
    converge(
        client_b,
        desired(v1, creds=issue_node(CA, "node-b"), node=NodeFacts("node-b", (b.address,))),
    )
    trigger_acquire(a, b.address, reqid_for("mesh", ()))
    wait_for_ike(client_a)
    deadline = time.monotonic() + 5
    while "unable to add SAD entry" not in a.charon.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = a.charon.log_text()
    assert "selected proposal: ESP:AES_GCM_16_128" in log  # Quick Mode agreed, selectors too
    assert "unable to add SAD entry" in log  # ... and only the host kernel's lack of ESP stops it


def per_peer(creds: NodeCredentials, me: Peer, other: Peer, other_name: str,
             other_subject: str, **spec: Any) -> DesiredCharon:
    """The policy with ``other`` as a known peer: a per-peer connection ``sm-mesh@OTHER``."""
    from controller.models.peers import Peer as Published

    peer = Published(node=other_name, address=other.address, identity=other_subject)
    item = CharonPolicy(policy(**spec), creds, reqid_for("mesh", ()), reqid_for("mesh#p", ()),
                        (peer,))
    want = render_charon([item], NodeFacts(f"self-{me.address}", (me.address,)))
    assert want.problems == {}
    return want


def wait_log(charon: CharonProcess, text: str, start: int, timeout: float = 8.0) -> None:
    """Until charon logs ``text`` after offset ``start`` of its log."""
    deadline = time.monotonic() + timeout
    while text not in charon.log_text()[start:]:
        if time.monotonic() > deadline:
            raise AssertionError(f"charon never logged {text!r}")
        time.sleep(0.05)


def ike_ids(client: Charon, connection: str) -> set[str]:
    return {sa.ike_id for sa in client.list_sas()
            if sa.connection == connection and sa.ike_state == "ESTABLISHED"}


def wait_ike_ids(client: Charon, connection: str, count: int, timeout: float = 8.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := ike_ids(client, connection)) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{connection}: fewer than {count} established IKE_SAs")


def test_initiating_a_changed_connection_makes_a_new_ike_sa_only_when_its_ike_config_changed(
    pair: tuple[tuple[Peer, Charon], tuple[Peer, Charon]],
) -> None:
    """What the agent's make-before-break relies on: after a reload, ``initiate`` reuses the
    established IKE_SA when only CHILD_SA settings changed (new CHILD_SA inside it), and makes
    a new IKE_SA beside the old one when certificates (the IKE_SA's own config) changed."""
    (a, client_a), (b, client_b) = pair
    creds_b = issue_node(CA, "node-b")
    conn = "sm-mesh@node-b"

    def load(**spec: Any) -> None:
        converge(client_a, per_peer(CREDS, a, b, "node-b", creds_b.subject, **spec))
        converge(client_b, per_peer(creds_b, b, a, "node-a", CREDS.subject, **spec))

    load()
    client_a.initiate(conn)
    (first,) = wait_ike_ids(client_a, conn, 1)
    plan = plan_changes(per_peer(CREDS, a, b, "node-b", creds_b.subject,
                                 esp={"proposals": ["aes256gcm16!"]}), client_a.read_actual())
    assert plan.renegotiate_conns == (conn,)  # ESP only: the IKE_SA's config is unchanged
    load(esp={"proposals": ["aes256gcm16!"]})
    seen = len(a.charon.log_text())
    client_a.initiate(conn)
    # the new CHILD_SA is negotiated inside the established IKE_SA (no IKE_SA_INIT)
    wait_log(a.charon, f"<{conn}|{first}> generating CREATE_CHILD_SA request", seen)
    assert ike_ids(client_a, conn) == {first}

    renewed = issue_node(CA, "node-a")  # the node's certificate re-issued
    converge(client_a, per_peer(renewed, a, b, "node-b", creds_b.subject,
                                esp={"proposals": ["aes256gcm16!"]}))
    client_a.initiate(conn)
    both = wait_ike_ids(client_a, conn, 2)
    assert first in both  # the old one stays until the agent closes it as a duplicate
