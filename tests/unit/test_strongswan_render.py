from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.facts import NodeCredentials, NodeFacts
from controller.models.peers import Peer
from controller.models.policy import IPsecPolicy
from controller.ownership import reqid_for
from controller.strongswan.render import (
    CharonPolicy,
    PeerLink,
    PodTunnel,
    authority_name,
    cert_name,
    conn_name,
    key_id,
    policy_of_conn,
    proposals,
    remote_ranges,
    render_charon,
)
from tests.certs import make_ca, make_cert
from tests.charon import issue_node, node_credentials

CA = make_ca("render CA")
CREDS = issue_node(CA, "node-1")
NODE = NodeFacts("node-1", ("10.0.0.1",))
REQID = reqid_for("mesh", ())


def policy(name: str = "mesh", **spec: Any) -> IPsecPolicy:
    body: dict[str, Any] = {
        "ipsecSubnets": ["10.0.0.0/16"],
        "credentials": {"secretRef": {"name": "creds", "namespace": "strongmesh-system"}},
    }
    body.update(spec)
    return IPsecPolicy.model_validate({"metadata": {"name": name}, "spec": body})


def der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def only_conn(p: IPsecPolicy, creds: NodeCredentials = CREDS, node: NodeFacts = NODE) -> Any:
    desired = render_charon([CharonPolicy(p, creds, REQID)], node)
    assert desired.problems == {}
    (body,) = desired.connections.values()
    return body


def test_default_policy_renders_the_add_on_model_connection() -> None:
    desired = render_charon([CharonPolicy(policy(), CREDS, REQID)], NODE)
    assert desired.connections == {
        "sm-mesh": {
            "version": "2",
            "local_addrs": ["10.0.0.1"],
            "remote_addrs": ["10.0.0.0/16"],
            "proposals": ["aes128-sha256-modp2048"],
            "rekey_time": "14400s",
            "dpd_delay": "30s",
            "encap": "no",
            "mobike": "no",
            "unique": "never",
            "send_cert": "always",
            "local": {"auth": "pubkey", "certs": [der(CREDS.cert_pem)]},
            "remote": {"auth": "pubkey", "id": "%any", "cacerts": [der(CA.cert_pem)]},
            "children": {
                "sm-mesh": {
                    "mode": "transport",
                    "start_action": "trap",
                    "policies": "no",
                    "reqid": str(REQID),
                    "esp_proposals": ["aes128gcm16"],
                    "rekey_time": "3600s",
                    "dpd_action": "restart",
                    "local_ts": ["10.0.0.1/32"],
                    "remote_ts": ["10.0.0.0/16"],
                }
            },
        }
    }


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [
        ({"ike": {"version": 1}}, ("version",), "1"),
        ({"forceUdpEncapsulation": True}, ("encap",), "yes"),
        ({"ike": {"rekeyTime": "1h30m"}}, ("rekey_time",), "5400s"),
        ({"ike": {"dpdDelay": "10s"}}, ("dpd_delay",), "10s"),
        ({"ike": {"dpdAction": "clear"}}, ("children", "sm-mesh", "dpd_action"), "clear"),
        ({"esp": {"rekeyTime": "20m"}}, ("children", "sm-mesh", "rekey_time"), "1200s"),
        (
            {"esp": {"proposals": ["aes256gcm16-ecp384!", "aes128gcm16!"]}},
            ("children", "sm-mesh", "esp_proposals"),
            ["aes256gcm16-ecp384", "aes128gcm16"],
        ),
        (
            {"ike": {"proposals": ["aes256-sha384-curve25519"]}},
            ("proposals",),
            ["aes256-sha384-curve25519", "default"],
        ),
        (
            {"ipsecSubnets": ["10.0.0.0/16", "10.9.0.7/32"]},
            ("remote_addrs",),
            ["10.0.0.0/16", "10.9.0.7/32"],
        ),
        (
            {"ipsecSubnets": ["10.0.0.0/16", "10.9.0.7/32"]},
            ("children", "sm-mesh", "remote_ts"),
            ["10.0.0.0/16", "10.9.0.7/32"],
        ),
        ({"ipsecSubnets": ["10.0.5.9/16"]}, ("remote_addrs",), ["10.0.0.0/16"]),
    ],
)
def test_policy_settings_map_to_swanctl_options(
    spec: dict[str, Any], path: tuple[str, ...], expected: object
) -> None:
    value: Any = only_conn(policy(**spec))
    for key in path:
        value = value[key]
    assert value == expected


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (["aes128-sha256-modp2048!"], ["aes128-sha256-modp2048"]),
        (["aes128-sha256-modp2048"], ["aes128-sha256-modp2048", "default"]),
        (["a-b-c", "d-e-f!"], ["a-b-c", "d-e-f"]),
        ([" aes128gcm16 "], ["aes128gcm16", "default"]),
    ],
)
def test_strict_bang_becomes_a_strict_swanctl_list_and_otherwise_defaults_follow(
    configured: list[str], expected: list[str]
) -> None:
    assert proposals(configured) == expected


def test_local_identity_is_left_to_the_certificate_subject() -> None:
    assert "id" not in only_conn(policy())["local"]


def test_ipv6_node_address_gets_a_host_prefix_of_128() -> None:
    node = NodeFacts("node-6", ("10.9.9.9", "fd00::1"))
    body = only_conn(policy(ipsecSubnets=["fd00::/64"]), node=node)
    assert body["local_addrs"] == ["fd00::1"]
    assert body["children"]["sm-mesh"]["local_ts"] == ["fd00::1/128"]


def test_first_node_address_inside_the_subnets_is_used() -> None:
    node = NodeFacts("node-1", ("192.168.1.5", "10.0.3.4", "10.0.3.5"))
    assert only_conn(policy(), node=node)["local_addrs"] == ["10.0.3.4"]


def test_fixed_reqid_is_the_one_passed_in() -> None:
    desired = render_charon([CharonPolicy(policy(), CREDS, 0x534D1234)], NODE)
    assert desired.connections["sm-mesh"]["children"]["sm-mesh"]["reqid"] == str(0x534D1234)


@pytest.mark.parametrize(
    ("p", "node", "creds", "reason"),
    [
        (policy(), NodeFacts("elsewhere", ("192.168.0.1",)), CREDS, "no address inside"),
        (
            policy(),
            NODE,
            NodeCredentials(CREDS.cert_pem, (), "not a key", CREDS.ca_pems, CREDS.subject),
            "credentials unusable",
        ),
        (
            policy(),
            NODE,
            NodeCredentials(CREDS.cert_pem, (), CREDS.key_pem, (), CREDS.subject),
            "CA bundle",
        ),
    ],
)
def test_policy_that_cannot_be_rendered_is_reported_and_the_others_proceed(
    p: IPsecPolicy, node: NodeFacts, creds: NodeCredentials, reason: str
) -> None:
    good = policy("good")
    desired = render_charon(
        [CharonPolicy(p, creds, REQID), CharonPolicy(good, CREDS, REQID + 1)], node
    )
    assert reason in desired.problems["mesh"]
    if node == NODE:
        assert list(desired.connections) == ["sm-good"]


def test_credentials_are_named_by_content_and_shared_between_policies() -> None:
    desired = render_charon(
        [CharonPolicy(policy("a"), CREDS, 1), CharonPolicy(policy("b"), CREDS, 2)], NODE
    )
    assert sorted(desired.connections) == ["sm-a", "sm-b"]
    assert desired.certs == {cert_name(der(CREDS.cert_pem)): der(CREDS.cert_pem)}
    assert desired.authorities == {authority_name(der(CA.cert_pem)): der(CA.cert_pem)}
    assert len(desired.keys) == 1


def test_intermediates_are_loaded_as_certs_and_every_bundle_ca_as_an_authority() -> None:
    root, other_root = make_ca("root"), make_ca("next root")
    intermediate = make_ca("intermediate", issuer=root)
    creds = node_credentials(make_cert(intermediate, "node-1"), [root, other_root], [intermediate])
    desired = render_charon([CharonPolicy(policy(), creds, REQID)], NODE)
    assert set(desired.certs.values()) == {der(creds.cert_pem), der(intermediate.cert_pem)}
    assert set(desired.authorities.values()) == {der(root.cert_pem), der(other_root.cert_pem)}
    cacerts = desired.connections["sm-mesh"]["remote"]["cacerts"]
    assert cacerts == [der(root.cert_pem), der(other_root.cert_pem)]


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_key_is_sent_as_pkcs8_and_named_by_charons_key_id(key_type: str) -> None:
    creds = issue_node(CA, "node-k", key_type=key_type)  # type: ignore[arg-type]
    desired = render_charon([CharonPolicy(policy(), creds, REQID)], NODE)
    ((name, pkcs8),) = desired.keys.items()
    loaded = serialization.load_der_private_key(pkcs8, password=None)
    cert = x509.load_pem_x509_certificate(creds.cert_pem.encode())
    # charon's KEYID_PUBKEY_SHA1 is the RFC 5280 method-1 key identifier of the public key
    ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert name == ski.digest.hex()
    spki = loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(spki) == name


def test_connection_names_carry_the_policy_and_nothing_else_is_ours() -> None:
    assert conn_name("mesh") == "sm-mesh"
    assert policy_of_conn("sm-mesh") == "mesh"
    assert policy_of_conn("admin-vpn") is None


PEERS = (
    Peer(node="node-0", address="10.0.0.0"),  # a lower address
    Peer(node="node-2", address="10.0.0.2", identity="CN=node-2"),
    Peer(node="node-1", address="10.0.0.1"),  # this node itself: no connection
    Peer(node="node-6", address="fd00::6"),  # another family: no connection
)


def test_each_known_peer_gets_a_connection_of_its_own_without_trap() -> None:
    desired = render_charon([CharonPolicy(policy(), CREDS, REQID, REQID + 1, PEERS)], NODE)
    assert sorted(desired.connections) == ["sm-mesh", "sm-mesh@node-0", "sm-mesh@node-2"]
    conn = desired.connections["sm-mesh@node-2"]
    child = conn["children"]["sm-mesh@node-2"]
    assert conn["remote_addrs"] == ["10.0.0.2"]
    assert child["remote_ts"] == ["10.0.0.2/32"]
    assert child["local_ts"] == ["10.0.0.1/32"]
    assert child["start_action"] == "none"  # the agent initiates, a packet never does
    assert child["reqid"] == str(REQID + 1)
    catch_all = desired.connections["sm-mesh"]["children"]["sm-mesh"]
    assert (catch_all["start_action"], catch_all["reqid"]) == ("trap", str(REQID))


def test_links_name_the_peer_the_address_and_the_connection() -> None:
    desired = render_charon([CharonPolicy(policy(), CREDS, REQID, REQID + 1, PEERS)], NODE)
    assert desired.links == (
        PeerLink("mesh", "node-0", "10.0.0.0", "10.0.0.1", "sm-mesh@node-0"),
        PeerLink("mesh", "node-2", "10.0.0.2", "10.0.0.1", "sm-mesh@node-2"),
    )
    assert desired.addresses == {"mesh": "10.0.0.1"}


def test_links_say_whether_each_end_is_listed_ready() -> None:
    members = (Peer(node="node-0", address="10.0.0.0", ready=False),
               Peer(node="node-1", address="10.0.0.1", ready=False),  # this node
               Peer(node="node-2", address="10.0.0.2"))
    desired = render_charon([CharonPolicy(policy(), CREDS, REQID, REQID + 1, members)], NODE)
    assert [(link.peer, link.peer_ready, link.self_ready, link.initiable)
            for link in desired.links] == [("node-0", False, False, False),
                                           ("node-2", True, False, False)]
    alone = render_charon([CharonPolicy(policy(), CREDS, REQID, REQID + 1, members[2:])], NODE)
    # not listed at all: a standalone file or an earlier operator, which list ready peers only
    assert [link.initiable for link in alone.links] == [True]


def test_per_peer_connections_belong_to_their_policy() -> None:
    assert conn_name("mesh", "node-2") == "sm-mesh@node-2"
    assert policy_of_conn("sm-mesh@node-2") == "mesh"


def test_a_peer_must_prove_its_own_identity_and_the_catch_all_answers_no_known_peer() -> None:
    desired = render_charon([CharonPolicy(policy(), CREDS, REQID, REQID + 1, PEERS)], NODE)
    assert desired.connections["sm-mesh@node-2"]["remote"]["id"] == "CN=node-2"
    assert desired.connections["sm-mesh@node-0"]["remote"]["id"] == "%any"  # none published
    catch_all = desired.connections["sm-mesh"]
    # 10.0.0.0 and 10.0.0.2 have connections of their own, 10.0.0.1 is this node
    assert catch_all["remote_addrs"] == ["10.0.0.3-10.0.255.255"]
    assert catch_all["children"]["sm-mesh"]["remote_ts"] == ["10.0.0.0/16"]  # the trap's scope


@pytest.mark.parametrize(
    ("subnets", "excluded", "expected"),
    [
        (["10.0.0.0/24"], [], ["10.0.0.0/24"]),
        (["10.0.0.0/24"], ["10.0.0.1", "10.0.0.3"], ["10.0.0.0", "10.0.0.2",
                                                    "10.0.0.4-10.0.0.255"]),
        (["10.0.0.0/24"], ["10.0.0.255", "192.0.2.1"], ["10.0.0.0-10.0.0.254"]),
        (["fd00::/126"], ["fd00::1"], ["fd00::", "fd00::2-fd00::3"]),
    ],
)
def test_remote_ranges_leave_out_exactly_the_known_addresses(
    subnets: list[str], excluded: list[str], expected: list[str]
) -> None:
    assert remote_ranges(subnets, excluded) == expected


POD_PEERS = (
    Peer(node="node-2", address="10.0.0.2", pod_cidrs=["10.244.2.0/24", "fd44::/64"]),
    Peer(node="node-3", address="10.0.0.3"),  # no pods: transport only
    Peer(node="node-4", address="10.0.0.4", pod_cidrs=["192.168.4.0/24"]),  # out of scope
)
SUBNETS = ["10.0.0.0/16", "10.244.0.0/16"]
POD_SPACE = ("10.244.0.0/16",)


def tunnel_item(**spec: Any) -> CharonPolicy:
    return CharonPolicy(policy(mode="Tunnel", ipsecSubnets=SUBNETS, **spec), CREDS, REQID,
                        REQID + 1, POD_PEERS, REQID + 2, POD_SPACE)


POD_NODE = NodeFacts("node-1", ("10.0.0.1",), pod_cidrs=("10.244.1.0/24",))


def test_tunnel_mode_adds_a_tunnel_child_for_the_pods_of_each_pair() -> None:
    desired = render_charon([tunnel_item()], POD_NODE)
    children = desired.connections["sm-mesh@node-2"]["children"]
    assert list(children) == ["sm-mesh@node-2", "sm-mesh@node-2~pods"]
    pods = children["sm-mesh@node-2~pods"]
    assert (pods["mode"], pods["reqid"]) == ("tunnel", str(REQID + 2))
    # the peer's IPv6 pod network is of another family than the node addresses: left out
    assert (pods["local_ts"], pods["remote_ts"]) == (["10.244.1.0/24"], ["10.244.2.0/24"])
    assert children["sm-mesh@node-2"]["mode"] == "transport"  # node addresses as before
    assert list(desired.connections["sm-mesh@node-3"]["children"]) == ["sm-mesh@node-3"]
    assert desired.links[0].all_children == ("sm-mesh@node-2", "sm-mesh@node-2~pods")
    assert desired.links[0].pods == PodTunnel(("10.244.1.0/24",), ("10.244.2.0/24",))


def test_pods_outside_ipsec_subnets_or_exempted_get_no_tunnel() -> None:
    desired = render_charon([tunnel_item(noIpsecSubnets=["10.244.2.0/24"])], POD_NODE)
    for peer in ("node-2", "node-4"):
        assert list(desired.connections[f"sm-mesh@{peer}"]["children"]) == [f"sm-mesh@{peer}"]


def test_the_catch_all_leaves_the_pod_space_out() -> None:
    desired = render_charon([tunnel_item()], POD_NODE)
    catchall = desired.connections["sm-mesh"]
    assert catchall["children"]["sm-mesh"]["remote_ts"] == ["10.0.0.0/16"]
    assert not any(r.startswith("10.244.") for r in catchall["remote_addrs"])


def test_transport_mode_ignores_pod_cidrs() -> None:
    item = CharonPolicy(policy(ipsecSubnets=SUBNETS), CREDS, REQID, REQID + 1, POD_PEERS,
                        REQID + 2)
    desired = render_charon([item], POD_NODE)
    assert list(desired.connections["sm-mesh@node-2"]["children"]) == ["sm-mesh@node-2"]
