from __future__ import annotations

from typing import Any

from controller.strongswan.sas import ike_algorithms, parse_sas

# Recorded from charon 5.9.8 (list-sas, text shown as str; vici delivers bytes). Host kernel,
# kernel-netlink, the connection render_charon() builds: IKE_SA up, CHILD_SA refused for lack
# of ESP in the kernel (NO_PROPOSAL_CHOSEN), so the IKE_SA has no children.
IKE_ONLY: list[dict[str, Any]] = [
    {
        "sm-mesh": {
            "uniqueid": "1",
            "version": "2",
            "state": "ESTABLISHED",
            "local-host": "192.0.2.1",
            "local-port": "500",
            "local-id": "O=strongmesh tests, CN=node-a",
            "remote-host": "192.0.2.2",
            "remote-port": "500",
            "remote-id": "O=strongmesh tests, CN=node-b",
            "initiator": "yes",
            "initiator-spi": "926738c9aa7a1932",
            "responder-spi": "37ed844aeab1e798",
            "encr-alg": "AES_CBC",
            "encr-keysize": "128",
            "integ-alg": "HMAC_SHA2_256_128",
            "prf-alg": "PRF_HMAC_SHA2_256",
            "dh-group": "MODP_2048",
            "established": "2",
            "rekey-time": "13704",
            "child-sas": {},
        }
    }
]

# Recorded from charon 5.9.8 with kernel-libipsec (userspace ESP, so tunnel mode and UDP
# encapsulation), two pings through the CHILD_SA.
WITH_CHILD: list[dict[str, Any]] = [
    {
        "sm-t": {
            "uniqueid": "1",
            "version": "2",
            "state": "ESTABLISHED",
            "local-host": "192.0.2.2",
            "local-port": "4500",
            "local-id": "O=strongmesh tests, CN=b",
            "remote-host": "192.0.2.1",
            "remote-port": "4500",
            "remote-id": "O=strongmesh tests, CN=a",
            "initiator": "yes",
            "initiator-spi": "6f230d1c53cf2df2",
            "responder-spi": "e7113f9a2c616f42",
            "nat-remote": "yes",
            "nat-any": "yes",
            "encr-alg": "AES_CBC",
            "encr-keysize": "128",
            "integ-alg": "HMAC_SHA2_256_128",
            "prf-alg": "PRF_HMAC_SHA2_256",
            "dh-group": "MODP_2048",
            "established": "4",
            "rekey-time": "13387",
            "child-sas": {
                "sm-t-1": {
                    "name": "sm-t",
                    "uniqueid": "1",
                    "reqid": "1",
                    "state": "INSTALLED",
                    "mode": "TUNNEL",
                    "protocol": "ESP",
                    "encap": "yes",
                    "spi-in": "84fa2db2",
                    "spi-out": "6e140003",
                    "encr-alg": "AES_GCM_16",
                    "encr-keysize": "128",
                    "bytes-in": "168",
                    "packets-in": "2",
                    "use-in": "0",
                    "bytes-out": "168",
                    "packets-out": "2",
                    "use-out": "0",
                    "rekey-time": "3442",
                    "life-time": "3956",
                    "install-time": "4",
                    "local-ts": ["10.244.2.0/24"],
                    "remote-ts": ["10.244.1.0/24"],
                }
            },
        }
    }
]


def wire(value: Any) -> Any:
    """As vici hands it over: every leaf value is bytes."""
    if isinstance(value, dict):
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    return value.encode()


def test_child_sa_becomes_one_typed_record_with_its_ike_facts() -> None:
    (sa,) = parse_sas(wire(WITH_CHILD))
    assert sa.model_dump() == {
        "policy": "t",
        "connection": "sm-t",
        "ike_id": "1",
        "child": "sm-t",
        "child_id": "1",
        "peer": "192.0.2.1",
        "peer_identity": "O=strongmesh tests, CN=a",
        "ike_state": "ESTABLISHED",
        "state": "INSTALLED",
        "protocol": "ESP",
        "mode": "TUNNEL",
        "encapsulated": True,
        "encryption": "AES_GCM_16-128",
        "integrity": "",
        "dh_group": "MODP_2048",
        "ike_algorithms": "AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
        "bytes_in": 168,
        "bytes_out": 168,
        "packets_in": 2,
        "packets_out": 2,
        "established_seconds": 4,
        "rekey_seconds": 3442,
        "spi_in": "84fa2db2",
        "spi_out": "6e140003",
    }


def test_ike_sa_without_child_is_reported_with_an_empty_child_state() -> None:
    (sa,) = parse_sas(wire(IKE_ONLY))
    assert (sa.policy, sa.peer, sa.ike_state, sa.state) == ("mesh", "192.0.2.2", "ESTABLISHED", "")
    assert sa.peer_identity == "O=strongmesh tests, CN=node-b"
    assert sa.established_seconds == 2
    assert sa.rekey_seconds == 13704
    assert sa.encryption == sa.spi_in == ""


def test_sas_of_connections_not_named_sm_are_skipped() -> None:
    foreign = {"admin-vpn": WITH_CHILD[0]["sm-t"]}
    assert parse_sas(wire([foreign])) == []


def test_integrity_algorithm_carries_its_key_size_when_charon_gives_one() -> None:
    event = wire(WITH_CHILD)[0]
    child = event["sm-t"]["child-sas"]["sm-t-1"]
    child["encr-alg"], child["integ-alg"] = b"AES_CBC", b"HMAC_SHA2_256_128"
    child["integ-keysize"] = b"256"
    (sa,) = parse_sas([event])
    assert (sa.encryption, sa.integrity) == ("AES_CBC-128", "HMAC_SHA2_256_128-256")


def test_records_are_sorted_by_policy_and_peer() -> None:
    second = wire(WITH_CHILD)[0]["sm-t"]
    second["remote-host"] = b"192.0.2.0"
    events = [*wire(IKE_ONLY), *wire(WITH_CHILD), {"sm-t": second}]
    assert [(s.policy, s.peer) for s in parse_sas(events)] == [
        ("mesh", "192.0.2.2"),
        ("t", "192.0.2.0"),
        ("t", "192.0.2.1"),
    ]


def test_missing_and_garbled_numbers_do_not_break_a_report() -> None:
    event = wire(WITH_CHILD)[0]
    child = event["sm-t"]["child-sas"]["sm-t-1"]
    del child["bytes-in"]
    child["rekey-time"] = b"soon"
    (sa,) = parse_sas([event])
    assert sa.bytes_in == 0
    assert sa.rekey_seconds is None


def test_ike_algorithms_omit_what_charon_does_not_report() -> None:
    assert ike_algorithms(
        {
            "encr-alg": b"AES_GCM_16",
            "encr-keysize": b"256",
            "prf-alg": b"PRF_HMAC_SHA2_384",
            "dh-group": b"CURVE_25519",
        }
    ) == ("AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519")
