"""The ``static`` mode: hand-written PSK charon configs and xfrm policies, no agent.

A self-check of the lab itself (does ESP work between the nodes, does the capture see it). Its
policies wear the product's numbers (``controller.ownership``, pure and standard library only,
so importable here): protect and bypass in strongmesh's priority bands, the child's reqid in
its reqid band, so that the lab reads them as it reads the agent's (``xfrm.owned_policies``).
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.ownership import BYPASS_BASE, PROTECT_BASE, REQID_BASE
from hack.labkit.lab.network import Host
from hack.labkit.lab.shell import sh
from hack.labkit.lab.topology import SWITCH_NET

STATIC_REQID = REQID_BASE | 1
# as the product ranks them (controller.xfrm.desired.priority_in_band: base + 32 - prefix
# length): the /24 of the switch, and the node's own /32
PROTECT_PRIORITY = PROTECT_BASE + 32 - 24
BYPASS_PRIORITY = BYPASS_BASE
STATIC_PLUGINS = (
    "random nonce aes sha1 sha2 hmac kdf gmp pem pkcs1 pkcs8 x509 pubkey openssl gcm "
    "kernel-netlink socket-default vici"
)


def static_strongswan_conf(vici: str, logfile: str, level: int) -> str:
    return f"""\
charon {{
  load = {STATIC_PLUGINS}
  install_routes = no
  plugins {{
    vici {{
      socket = {vici}
    }}
  }}
}}
charon {{
  filelog {{
    lab {{
      path = {logfile}
      time_format = %H:%M:%S
      default = {level}
      ike_name = yes
      flush_line = yes
    }}
  }}
}}
"""


def static_swanctl_conf(address: str) -> str:
    return f"""\
connections {{
  lab {{
    version = 2
    local_addrs = {address}
    remote_addrs = {SWITCH_NET}.0/24
    proposals = aes128-sha256-modp2048
    local {{
      auth = psk
      id = {address}
    }}
    remote {{
      auth = psk
      id = %any
    }}
    children {{
      lab {{
        mode = transport
        start_action = trap
        policies = no
        reqid = {STATIC_REQID:#x}
        esp_proposals = aes128gcm16
        local_ts = {address}/32
        remote_ts = {SWITCH_NET}.0/24
      }}
    }}
  }}
}}
secrets {{
  ike-lab {{
    secret = strongmesh-lab-static-psk
  }}
}}
"""


def static_configure(host: Host, level: str, bypass_subnets: Sequence[str]) -> None:
    """A node's charon given the PSK connection, and the xfrm policies for it by hand: the
    switch's /24 protected (``level``: required or use), the node itself and
    ``bypass_subnets`` bypassed."""
    path = f"{host.state_dir}/swanctl.conf"
    with open(path, "w") as f:
        f.write(static_swanctl_conf(host.address))
    sh("swanctl", "--load-all", "--noprompt", "--uri", host.vici, "--file", path)
    ns = ("ip", "-n", host.name, "xfrm", "policy", "add")
    me = f"{host.address}/32"
    switch = f"{SWITCH_NET}.0/24"
    for d, src, dst in (("out", me, switch), ("in", switch, me)):
        sh(*ns, "dir", d, "src", src, "dst", dst, "priority", str(PROTECT_PRIORITY), "tmpl",
           "proto", "esp", "mode", "transport", "reqid", f"{STATIC_REQID:#x}", "level", level)
    bypass = [(me, me)]
    for subnet in bypass_subnets:
        bypass += [(me, subnet), (subnet, me)]
    for src, dst in bypass:
        for d in ("out", "in") if src == dst else (("out",) if src == me else ("in",)):
            sh(*ns, "dir", d, "src", src, "dst", dst, "priority", str(BYPASS_PRIORITY),
               "action", "allow")
    sh("ip", "netns", "exec", host.name, "sysctl", "-q", "-w", "net.core.xfrm_acq_expires=3")
