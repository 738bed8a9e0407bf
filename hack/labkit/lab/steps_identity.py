"""The scenario's identity and trust steps: background streams across a rotation, the CAs each
charon trusts and used, and an impostor with a valid certificate claiming another node's
address. Formats: ``hack/labkit/lab/__init__.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hack.labkit.lab.charon_view import (
    LOG_IKE_SA,
    authorities,
    charon_log,
    charon_log_path,
    list_sas,
    log_lines_of_ike_sas,
    peer_authentication,
)
from hack.labkit.lab.cluster import secret_text
from hack.labkit.lab.netns import ip_batch
from hack.labkit.lab.network import Host
from hack.labkit.lab.probes import STREAM_PORT, Stream
from hack.labkit.lab.shell import log, sh

if TYPE_CHECKING:
    from hack.labkit.lab.inside import Lab

IMPOSTOR = "impostor"  # the impostor's network namespace (and its charon's name)
IMPOSTOR_PORT = 5000  # its IKE port (NAT-T on the next one); the host renders its charon's conf
IMPOSTOR_LINK = "imp"  # the target node's end of the veth to the impostor
IMPOSTOR_TABLE = 100  # the target node's routing table for replies to the impostor
SWANCTL_DIRS = ("x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private",
                "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12")


# ------------------------------------------------------------------------------ streams
@dataclass(frozen=True)
class StartStream:
    label: str
    interval: float = 0.25
    nodes: tuple[str, ...] = ()  # empty: every lab node


def start_stream(lab: Lab, step: StartStream) -> dict[str, Any]:
    """Probes in the background until ``stop_stream``: every ``interval`` s a fresh datagram
    with a token of its own for every ordered pair of those nodes, sent once, never again, to
    ``STREAM_PORT``. Each records the step running when it was sent."""
    if step.label in lab.streams:
        raise RuntimeError(f"stream {step.label!r} exists already")
    members = ([lab.network.host(n) for n in step.nodes] if step.nodes
               else list(lab.network.nodes))
    pairs = [(a, b) for a in members for b in members if a is not b]
    stream = Stream(step.label, pairs, step.interval, lambda: lab.current_step)
    lab.streams[step.label] = stream
    stream.start()
    return {"pairs": len(pairs), "interval": stream.interval, "port": STREAM_PORT}


@dataclass(frozen=True)
class StopStream:
    label: str
    grace: float = 2.0


def stop_stream(lab: Lab, step: StopStream) -> dict[str, Any]:
    """Stop sending, wait ``grace`` s for datagrams in flight; ``results["streams"][L]`` keeps
    every datagram (the report adds what the switch saw of each)."""
    return finish_stream(lab, step.label, step.grace)


def finish_stream(lab: Lab, label: str, grace: float) -> dict[str, Any]:
    """Stop a stream and record it; returns its summary with the datagrams lost."""
    stream = lab.streams[label]
    stream.stop(grace)
    result = stream.result()
    lab.results.setdefault("streams", {})[label] = result
    summary = {k: v for k, v in result.items() if k != "datagrams"}
    summary["lost"] = [
        {k: d[k] for k in ("seq", "src", "dst", "sent", "step", "send_error")}
        for d in result["datagrams"] if not d["delivered"]
    ]
    log(f"stream {label}: {result['delivered']}/{result['sent']} delivered")
    return summary


# ------------------------------------------------------------------------- trusted CAs
@dataclass(frozen=True)
class WaitAuthorities:
    cacerts: tuple[str, ...]
    node: str | None = None
    timeout: float = 60


def wait_authorities(lab: Lab, step: WaitAuthorities) -> dict[str, Any]:
    """Until each node's charon holds exactly the trusted CAs named (``swanctl
    --list-authorities``: one authority whose subject contains each text, and no other), e.g.
    after a CA left an issuer's ``ca.crt``. Returns the seconds and each node's authorities."""
    hosts = lab.network.targets(step.node)
    started = time.time()
    deadline = started + step.timeout
    found: dict[str, list[str]] = {}
    while time.time() < deadline:
        found = {h.name: authorities(h) for h in hosts}
        if all(len(subjects) == len(step.cacerts)
               and all(sum(text in s for s in subjects) == 1 for text in step.cacerts)
               for subjects in found.values()):
            return {"seconds": round(time.time() - started, 3), "authorities": found}
        time.sleep(0.2)
    raise RuntimeError(f"charons do not trust exactly {list(step.cacerts)} within "
                       f"{step.timeout} s: {found}")


@dataclass(frozen=True)
class PeerCas:
    node: str | None = None


def peer_cas(lab: Lab, step: PeerCas) -> dict[str, list[dict[str, Any]]]:
    """Per node, each IKE_SA charon holds (name, unique id, peer identity and address) with the
    CA that verified the peer's certificate, as that node's charon log says (the last ``using
    trusted ca certificate`` line of that IKE_SA's id; None if the log has none)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for host in lab.network.targets(step.node):
        lines = charon_log(host)
        out[host.name] = [{**sa, **peer_authentication(lines, sa["id"])} for sa in list_sas(host)]
    return out


# ----------------------------------------------------------------------------- impostor
@dataclass(frozen=True)
class Impostor:
    identity: str = "node-3"
    address: str = "10.77.0.2"
    target: str = "node-1"
    port: int = IMPOSTOR_PORT
    issuer: str = "strongmesh-system/mesh-ca"
    timeout: int = 15
    keep: bool = False
    ike_proposals: str = "aes128-sha256-modp2048"
    esp_proposals: str = "aes128gcm16"


def impostor_swanctl_conf(claim: str, target: str, ike_proposals: str,
                          esp_proposals: str) -> str:
    """The impostor's connection: from the claimed address to the target's IKE port, its own
    (valid) certificate, any peer the CA vouches for, a transport child between the two."""
    return f"""\
connections {{
  {IMPOSTOR} {{
    version = 2
    local_addrs = {claim}
    remote_addrs = {target}
    remote_port = 500
    proposals = {ike_proposals}
    mobike = no
    local {{
      auth = pubkey
      certs = node.crt
    }}
    remote {{
      auth = pubkey
      id = %any
      cacerts = ca.crt
    }}
    children {{
      {IMPOSTOR} {{
        mode = transport
        local_ts = {claim}/32
        remote_ts = {target}/32
        esp_proposals = {esp_proposals}
      }}
    }}
  }}
}}
"""


def impostor(lab: Lab, step: Impostor) -> dict[str, Any]:
    """A host that holds ``identity``'s own valid certificate and key (read from that node's
    identity directory) claims another node's ``address`` towards ``target``. Nothing of it
    reaches the switch: it is a network namespace ``impostor`` with ``address``/32 on a veth
    whose other end (``imp``) is in the target node, which sends only the replies to the
    impostor's IKE ports (``port``, ``port``+1) there (``ip rule to ADDRESS ipproto udp dport
    P-P+1 lookup 100``); the genuine holder of the address keeps its traffic and its ARP
    entries. The impostor runs a charon of its own (the lab's way, strongswan.conf rendered by
    the host with ``charon.port = P``, ``port_nat_t = P+1``), loads with swanctl a connection
    from ``address`` to the target (the identity's certificate, the issuer's ``ca.crt`` as CA,
    a transport child ``address``/32 <-> target/32) and initiates it. Recorded: the routing
    decisions, swanctl's output and exit code, the target's charon log lines for the
    impostor's IKE_SAs and every line it wrote meanwhile, both sides' IKE_SAs before and
    after, the veth's packet counters. Then everything of the impostor is removed (unless
    ``keep``)."""
    identity = lab.network.host(step.identity)
    target = lab.network.host(step.target)
    claim, port = step.address, step.port
    keys = identity.identity_dir
    certificate_file = f"{keys}/{step.issuer.replace('/', '_')}.crt"
    with open(f"{keys}/node.key") as f:
        key_pem = f.read()
    with open(certificate_file) as f:
        cert_pem = f.read()
    secret = lab.require_cluster().issuer_secret(step.issuer)
    ca_pem = secret_text(secret, "ca.crt") or secret_text(secret, "tls.crt")
    fake = Host(IMPOSTOR, claim, False)
    conf_dir = f"{fake.state_dir}/swanctl"
    for sub in SWANCTL_DIRS:  # all of them: swanctl complains about each one missing
        os.makedirs(f"{conf_dir}/{sub}", exist_ok=True)
    for path, text in ((f"{conf_dir}/x509/node.crt", cert_pem),
                       (f"{conf_dir}/x509ca/ca.crt", ca_pem),
                       (f"{conf_dir}/private/node.key", key_pem)):
        with open(path, "w") as f:
            f.write(text)
    with open(f"{conf_dir}/swanctl.conf", "w") as f:
        f.write(impostor_swanctl_conf(claim, target.address, step.ike_proposals,
                                      step.esp_proposals))
    rule = (f"to {claim}/32 ipproto udp dport {port}-{port + 1} lookup {IMPOSTOR_TABLE} "
            "priority 100")
    sh("ip", "netns", "add", IMPOSTOR)
    ip_batch(target.name, [
        f"link add {IMPOSTOR_LINK} type veth peer name eth0 netns {IMPOSTOR}",
        f"link set {IMPOSTOR_LINK} up",
        f"route add {claim}/32 dev {IMPOSTOR_LINK} table {IMPOSTOR_TABLE}",
        f"rule add {rule}",
    ])
    ip_batch(IMPOSTOR, ["link set lo up", f"addr add {claim}/32 dev eth0",
                        "link set eth0 up", f"route add {target.address}/32 dev eth0"])
    result: dict[str, Any] = {
        "identity": identity.name, "address": claim, "target": target.name,
        "certificate_file": certificate_file,
        "rule": f"ip -n {target.name} rule add {rule}",
        "routing": {
            "rules": sh("ip", "-n", target.name, "rule", "show").splitlines(),
            "to_impostor_ike": sh("ip", "-n", target.name, "route", "get", claim,
                                  "ipproto", "udp", "dport", str(port)).strip(),
            "to_address_otherwise": sh("ip", "-n", target.name, "route", "get", claim).strip(),
        },
        "target_sas_before": list_sas(target),
        # the target's connections: per peer its address and identity, the catch-all's
        # remote_addrs without the known peers' addresses
        "target_connections": sh("swanctl", "--list-conns", "--uri", target.vici),
    }
    log_path = charon_log_path(target.name)
    offset = os.path.getsize(log_path)
    env = {"PATH": os.environ["PATH"], "STRONGSWAN_CONF": f"{fake.state_dir}/strongswan.conf"}
    try:
        if not (lab.config.get("strongswan_confs") or {}).get(IMPOSTOR):
            raise RuntimeError("no strongswan.conf for the impostor (host.strongswan_confs)")
        lab.start_charon(fake)
        loaded = subprocess.run(
            ["swanctl", "--load-all", "--noprompt", "--uri", fake.vici, "--file",
             f"{conf_dir}/swanctl.conf"], capture_output=True, text=True, env=env,
            check=False, timeout=30)
        result["load"] = {"exit": loaded.returncode, "stdout": loaded.stdout,
                          "stderr": loaded.stderr}
        started = time.time()
        initiated = subprocess.run(
            ["swanctl", "--initiate", "--ike", IMPOSTOR, "--child", IMPOSTOR,
             "--timeout", str(step.timeout), "--uri", fake.vici],
            capture_output=True, text=True, env=env, check=False, timeout=step.timeout + 15)
        result["initiate"] = {"exit": initiated.returncode, "stdout": initiated.stdout,
                              "stderr": initiated.stderr,
                              "seconds": round(time.time() - started, 3)}
        time.sleep(0.3)  # the target's last lines of the exchange reach its log file
        with open(log_path, errors="replace") as f:
            f.seek(offset)
            meanwhile = f.read().splitlines()
        needle = f"{claim}[{port}]"
        ids = {m.group(2) for line in meanwhile if needle in line
               and (m := LOG_IKE_SA.search(line))}
        result["target_ike_sa_ids"] = sorted(ids)
        result["target_log"] = log_lines_of_ike_sas(meanwhile, ids)
        result["target_log_meanwhile"] = meanwhile
        result["impostor_sas"] = list_sas(fake, check=False)
        result["target_sas_after"] = list_sas(target)
        stats = json.loads(sh("ip", "-n", target.name, "-s", "-j", "link", "show",
                              IMPOSTOR_LINK))[0].get("stats64", {})
        result["veth_packets"] = {"from_impostor": stats.get("rx", {}).get("packets"),
                                  "to_impostor": stats.get("tx", {}).get("packets")}
    finally:
        if not step.keep:
            remove_impostor(fake, target, rule)
    return result


def remove_impostor(fake: Host, target: Host, rule: str) -> None:
    if fake.charon is not None:
        fake.charon.send_signal(signal.SIGTERM)
        try:
            fake.charon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fake.charon.kill()
            fake.charon.wait(timeout=10)
    sh("ip", "-n", target.name, "rule", "del", *rule.split(), check=False)
    sh("ip", "-n", target.name, "route", "flush", "table", str(IMPOSTOR_TABLE), check=False)
    sh("ip", "-n", target.name, "link", "del", IMPOSTOR_LINK, check=False)
    sh("ip", "netns", "del", IMPOSTOR, check=False)
