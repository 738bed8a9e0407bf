"""The lab's names and addresses (pure: the host side and the inside share them).

The switch ``sw0`` holds lab node ``node-i`` at ``10.77.0.i/24`` and the ``bystander`` at
``10.77.0.200``. Node ``node-i`` owns the pod CIDR ``10.244.i.0/24`` (its Node's
``spec.podCIDR``); with pods, its pod host ``node-i-pod`` lives there at ``.10``, behind the
node's end ``pods`` of their veth at ``.1``.
"""

from __future__ import annotations

SWITCH = "sw0"
SWITCH_NET = "10.77.0"  # node-i is SWITCH_NET.i/24 on the switch
BYSTANDER = "bystander"
BYSTANDER_ADDRESS = f"{SWITCH_NET}.200"
POD_NET = "10.244"  # lab node i owns POD_NET.i.0/24
POD_LINK = "pods"  # the node's end of the veth to its pod host


def node_name(index: int) -> str:
    return f"node-{index}"


def node_address(index: int) -> str:
    return f"{SWITCH_NET}.{index}"


def node_pod_cidr(index: int) -> str:
    """The pod CIDR lab node ``index`` owns (with pods, its pod host ``node-i-pod`` lives
    there: ``pod_network_commands``)."""
    return f"{POD_NET}.{index}.0/24"


def pod_name(index: int) -> str:
    return f"{node_name(index)}-pod"


def pod_address(index: int) -> str:
    return f"{POD_NET}.{index}.10"


def pod_network_commands(index: int, count: int) -> dict[str, list[str]]:
    """The ``ip -batch`` lines that give lab node ``index`` (1-based, of ``count``) its pod
    host: per network namespace (node, pod, and the bystander's routes to this node's pods).
    Plain routing, no overlay and no NAT: the pod's default route points at its node, and
    every other host routes the pod CIDR via this node's address on the switch. Addresses:
    the pod ``POD_NET.i.10/24``, the node's end ``POD_NET.i.1/24`` (the pod's gateway)."""
    node, pod = node_name(index), pod_name(index)
    gateway = f"{POD_NET}.{index}.1"
    return {
        node: [
            f"link add {POD_LINK} type veth peer name eth0 netns {pod}",
            f"addr add {gateway}/24 dev {POD_LINK}",
            f"link set {POD_LINK} up",
            *(f"route add {node_pod_cidr(j)} via {node_address(j)} dev eth0"
              for j in range(1, count + 1) if j != index),
        ],
        pod: [
            "link set lo up",
            f"addr add {pod_address(index)}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {gateway} dev eth0",
        ],
        BYSTANDER: [f"route add {node_pod_cidr(index)} via {node_address(index)} dev eth0"],
    }
