"""Which policies a watch event makes dirty (only those whose status may change)."""

from __future__ import annotations

from typing import Any

from controller.operator.records import SecretContents
from controller.operator.state import ClusterState


def policy(name: str, secret: str = "creds", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {
            "nodeSelector": {"matchLabels": labels},
            "ipsecSubnets": ["10.0.0.0/24"],
            "credentials": {"secretRef": {"name": secret, "namespace": "sm"}},
        },
    }


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def ipsec_node(name: str, *policies: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"policies": [{"name": p, "generation": 1} for p in policies]},
    }


def state() -> ClusterState:
    s = ClusterState()
    s.apply_policy("ADDED", policy("a", pool="a"))
    s.apply_policy("ADDED", policy("b", secret="other", pool="b"))
    s.apply_node("ADDED", node("n1", pool="a"))
    s.apply_node("ADDED", node("n2", pool="b"))
    return s


def test_ipsec_node_update_dirties_policies_selecting_or_listed_by_it() -> None:
    s = state()
    assert s.apply_ipsec_node("MODIFIED", ipsec_node("n1", "a")) == {"a"}
    # n1 still lists b from an old selector: b must learn that n1 dropped it
    assert s.apply_ipsec_node("MODIFIED", ipsec_node("n1", "a", "b")) == {"a", "b"}
    assert s.apply_ipsec_node("MODIFIED", ipsec_node("n1", "a")) == {"a", "b"}


def test_every_ipsec_node_is_known_by_name_for_the_sweep_even_unreadable_ones() -> None:
    s = state()
    s.apply_ipsec_node("ADDED", ipsec_node("n1", "a"))
    s.apply_ipsec_node("ADDED", {"metadata": {"name": "old"}, "status": {"policies": 7}})
    assert (set(s.ipsec_nodes), s.ipsec_node_names) == ({"n1"}, {"n1", "old"})
    s.apply_ipsec_node("DELETED", {"metadata": {"name": "old"}})
    assert s.ipsec_node_names == {"n1"}


def test_node_heartbeat_without_label_change_dirties_nothing() -> None:
    s = state()
    assert s.apply_node("MODIFIED", node("n1", pool="a")) == set()
    assert s.apply_node("MODIFIED", node("n1", pool="b")) == {"a", "b"}
    assert s.apply_node("DELETED", node("n1", pool="b")) == {"a", "b"}


def test_a_node_whose_pod_networks_change_dirties_the_policies() -> None:
    s = state()
    body = node("n1", pool="a") | {"spec": {"podCIDRs": ["10.244.1.0/24"]}}
    assert s.apply_node("MODIFIED", body) == {"a", "b"}
    assert s.pod_cidrs == {"n1": ("10.244.1.0/24",)}
    assert s.apply_node("MODIFIED", body) == set()
    legacy = node("n1", pool="a") | {"spec": {"podCIDR": "10.244.9.0/24"}}  # before dual-stack
    assert s.apply_node("MODIFIED", legacy) == {"a", "b"}
    assert s.pod_cidrs == {"n1": ("10.244.9.0/24",)}
    assert s.apply_node("DELETED", legacy) == {"a", "b"}
    assert s.pod_cidrs == {}


def test_only_referenced_secrets_are_kept() -> None:
    s = state()
    unrelated = {"metadata": {"name": "x", "namespace": "sm"}, "data": {}}
    assert s.apply_secret("ADDED", unrelated) == set()
    assert ("sm", "x") not in s.secrets
    creds = {"metadata": {"name": "creds", "namespace": "sm"}, "data": {}}
    assert s.apply_secret("MODIFIED", creds) == {"a"}
    assert s.secrets[("sm", "creds")] == SecretContents({})
    s.apply_secret("DELETED", creds)
    assert s.secrets[("sm", "creds")] is None


def test_deleted_policy_drops_its_secret() -> None:
    s = state()
    s.apply_secret("ADDED", {"metadata": {"name": "other", "namespace": "sm"}})
    s.apply_policy("DELETED", policy("b", secret="other"))
    assert ("sm", "other") not in s.secrets


def test_status_only_policy_update_dirties_nothing() -> None:
    s = state()
    written = policy("a", pool="a") | {"status": {"observedGeneration": 1}}
    assert s.apply_policy("MODIFIED", written) == set()
    served = s.policies["a"].served_status
    assert served is not None
    assert served.observed_generation == 1
    edited = policy("a", pool="b")
    assert s.apply_policy("MODIFIED", edited) == {"a", "b"}


def versioned(rv: str, **labels: str) -> dict[str, Any]:
    body = policy("a", **labels)
    body["metadata"]["resourceVersion"] = rv
    return body


def test_an_event_older_than_the_kept_version_is_ignored() -> None:
    s = state()
    s.apply_policy("MODIFIED", versioned("7", pool="b"))
    assert s.apply_policy("MODIFIED", versioned("5", pool="c")) == set()  # overtaken
    assert s.policies["a"].meta.resource_version == "7"
    assert s.apply_policy("DELETED", versioned("5")) == {"a", "b"}  # deletion always counts
    assert "a" not in s.policies


def test_own_writes_are_kept_unless_newer_arrived_or_the_policy_is_gone() -> None:
    s = state()
    s.apply_policy("MODIFIED", versioned("7"))
    s.apply_own_write(versioned("6", pool="x"))
    assert s.policies["a"].meta.resource_version == "7"
    s.apply_own_write(versioned("8", pool="x"))
    assert s.policies["a"].meta.resource_version == "8"
    s.apply_policy("DELETED", versioned("8"))
    s.apply_own_write(versioned("9"))
    assert "a" not in s.policies


def test_a_secret_read_by_the_operator_is_kept_decoded() -> None:
    s = state()
    assert s.keep_secret(("sm", "creds"), None) is None
    assert s.keep_secret(("sm", "creds"), {"stringData": {"ca.crt": "PEM"}}) == SecretContents(
        {"ca.crt": "PEM"})
