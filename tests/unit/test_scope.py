"""Which pod networks a Tunnel policy protects, and where pods live (controller.scope)."""

from __future__ import annotations

from controller.models.policy import IPsecPolicySpec
from controller.scope import pod_space, pods_in_scope


def spec(ipsec: list[str], bypass: list[str] | None = None,
         mode: str = "Tunnel") -> IPsecPolicySpec:
    return IPsecPolicySpec.model_validate({
        "ipsecSubnets": ipsec, "noIpsecSubnets": bypass or [], "mode": mode,
        "credentials": {"secretRef": {"name": "c", "namespace": "n"}},
    })


NODES = ["10.77.0.1", "10.77.0.2"]


def test_the_pod_space_is_the_subnets_holding_pods_and_no_node() -> None:
    s = spec(["10.77.0.0/24", "10.244.0.0/16", "10.96.0.0/12"])
    assert pod_space(s, ["10.244.1.0/24", "10.244.2.0/24"], NODES) == ("10.244.0.0/16",)


def test_a_subnet_holding_nodes_and_pods_stays_a_node_subnet() -> None:
    s = spec(["10.0.0.0/8"])
    assert pod_space(s, ["10.244.1.0/24"], ["10.77.0.1"]) == ()


def test_transport_mode_has_no_pod_space() -> None:
    s = spec(["10.77.0.0/24", "10.244.0.0/16"], mode="Transport")
    assert pod_space(s, ["10.244.1.0/24"], NODES) == ()


def test_pods_in_scope_are_inside_ipsec_subnets_and_not_exempted() -> None:
    s = spec(["10.77.0.0/24", "10.244.0.0/16", "fd44::/48"], ["10.244.3.0/24"])
    cidrs = ["10.244.1.0/24", "10.244.3.0/24", "192.168.0.0/24", "fd44:0:0:1::/64",
             "10.244.2.7/24"]
    assert pods_in_scope(s, cidrs, 4) == ("10.244.1.0/24", "10.244.2.0/24")
    assert pods_in_scope(s, cidrs, 6) == ("fd44:0:0:1::/64",)
