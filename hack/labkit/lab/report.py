"""Turns what the lab recorded (probe log, switch capture, node statuses) into the report.

Pure functions: the host calls them after user-mode-linux has halted. A probe's ``seen`` is
judged from the wire: ``cleartext`` if any copy of its token was visible, else ``esp`` if ESP
went from its source's *carrier* to its destination's carrier while it was being sent, else
``none``. A host's carrier is the address its traffic wears on the switch inside ESP: its own
for a node or the bystander, its node's for a pod host (``node-i-pod`` behind ``node-i``; pod
traffic crosses the switch with the pod addresses when in the clear, inside ESP between the two
nodes' addresses when a node tunnels it). So a pod and its own node never cross the switch:
``none`` there means the traffic stayed inside the node, and ``delivered`` says whether it
arrived. ESP between two carriers is evidence, not proof, that a particular probe went inside
it: other probes between the same nodes run in the same window (``delivered`` tells a probe
that was dropped at a node).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hack.labkit.lab.pcap import Packet

# ESP seen this long after the last send still belongs to the probe (queued, then sent).
ESP_GRACE_SECONDS = 1.0


def carrier_addresses(hosts: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Host name -> carrier address, from the lab's ``results["hosts"]``."""
    return {str(h["name"]): str(h.get("carrier") or h["address"]) for h in hosts}


def classify(
    probe: Mapping[str, Any], packets: Sequence[Packet],
    carriers: Mapping[str, str] | None = None,
) -> str:
    """``cleartext``, ``esp`` or ``none`` for one probe (see module docstring). ``carriers``:
    host name -> carrier address; a host not in it carries itself (the probe's addresses)."""
    token = str(probe["token"]).encode()
    if any(token in p.payload for p in packets if not p.esp):
        return "cleartext"
    first, last = probe.get("first_sent"), probe.get("last_sent")
    if first is None or last is None:
        return "none"
    carriers = carriers or {}
    src = carriers.get(str(probe.get("src")), probe["src_address"])
    dst = carriers.get(str(probe.get("dst")), probe["dst_address"])
    if src == dst:  # a pod and its own node: nothing of theirs crosses the switch
        return "none"
    end = float(probe.get("delivered_at") or last) + ESP_GRACE_SECONDS
    for p in packets:
        if p.esp and p.src == src and p.dst == dst and float(first) - 0.05 <= p.time <= end:
            return "esp"
    return "none"


def traffic_rows(
    probes: Iterable[Mapping[str, Any]], packets: Sequence[Packet],
    carriers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One report row per probe, in the order probed."""
    rows = []
    for probe in probes:
        delivered_at, first = probe.get("delivered_at"), probe.get("first_sent")
        rows.append(
            {
                "src": probe["src"],
                "dst": probe["dst"],
                "seen": classify(probe, packets, carriers),
                "delivered": bool(probe["delivered"]),
                "attempts": probe.get("attempts", 0),
                "seconds": (
                    round(float(delivered_at) - float(first), 3)
                    if delivered_at is not None and first is not None
                    else None
                ),
            }
        )
    return rows


def node_rows(
    node_names: Sequence[str], statuses: Mapping[str, Any], addresses: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The report's ``nodes``: address, SAs, enforced policies and errors from each status."""
    rows = []
    for name in node_names:
        data = statuses.get(name) or {}
        status = data.get("status") or {}
        rows.append(
            {
                "name": name,
                "address": addresses[name],
                "identity": data.get("identity", ""),
                "sas": status.get("sas", []),
                "policies": status.get("policies", []),
                "errors": status.get("errors", []),
            }
        )
    return rows


def pod_rows(hosts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The report's ``pods``: each pod host, its address, its node and the node's pod CIDR."""
    return [
        {"name": h["name"], "address": h["address"], "node": h.get("node"),
         "podCIDR": h.get("podCIDR")}
        for h in hosts
        if h.get("role") == "pod"
    ]


# pair class -> how the summary names it, in the order it lists them
PAIR_CLASSES = {
    "node-node": "Node to node",
    "node-bystander": "With the bystander",
    "pod-pod": "Pod to pod across nodes",
    "pod-own-node": "Pod and its own node",
    "pod-other-node": "Pod and another node",
    "pod-bystander": "Pod and the bystander",
}


def pair_class(src: str, dst: str, hosts: Mapping[str, Mapping[str, Any]]) -> str:
    """Which of ``PAIR_CLASSES`` an ordered pair belongs to. ``hosts``: name -> the host as
    ``results["hosts"]`` records it (role, node); a name not in it is the bystander."""
    a, b = hosts.get(src, {}), hosts.get(dst, {})
    roles = {a.get("role", "bystander"), b.get("role", "bystander")}
    if roles == {"node"}:
        return "node-node"
    if roles == {"pod"}:
        return "pod-pod"
    if roles == {"pod", "node"}:
        pod, node = (a, b) if a.get("role") == "pod" else (b, a)
        return "pod-own-node" if pod.get("node") == node.get("name") else "pod-other-node"
    if "pod" in roles:
        return "pod-bystander"
    return "node-bystander"


def report_hosts(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """name -> host of a report (older reports without ``hosts``: its nodes, as nodes)."""
    hosts = report.get("hosts")
    if hosts:
        return {str(h["name"]): h for h in hosts}
    return {str(n["name"]): {"name": n["name"], "role": "node"}
            for n in report.get("nodes", [])}


def standalone_policy_status(
    nodes: Sequence[Mapping[str, Any]], expected: Mapping[str, int]
) -> dict[str, Any]:
    """A summary in the shape of ``IPsecPolicy.status`` when no API server runs (standalone)."""
    result: dict[str, Any] = {}
    for name, generation in expected.items():
        rows = []
        for node in nodes:
            enforced = [p for p in node["policies"] if p.get("name") == name]
            sas = [s for s in node["sas"] if s.get("policy") == name]
            enforcing = bool(
                enforced and enforced[0].get("enforcing", True)
                and enforced[0].get("generation") == generation
            )
            rows.append(
                {
                    "name": node["name"],
                    "enforcing": enforcing,
                    "generation": enforced[0].get("generation") if enforced else None,
                    "establishedSAs": len(sas),
                    "peers": sorted({str(s.get("peer")) for s in sas}),
                    "message": "; ".join(node["errors"]),
                }
            )
        ready = sum(r["enforcing"] for r in rows)
        result[name] = {
            "source": "agents' status files (standalone mode, no API server)",
            "observedGeneration": generation,
            "summary": {
                "selectedNodes": len(rows),
                "readyNodes": ready,
                "ready": f"{ready}/{len(rows)}",
                "establishedSAs": sum(r["establishedSAs"] for r in rows),
            },
            "nodes": rows,
        }
    return result


def format_summary(report: Mapping[str, Any]) -> str:
    """The readable summary ``hack/lab demo`` prints."""
    lines = []
    ready = report.get("ready")
    seconds = report.get("seconds_to_ready")
    meaning = (
        "from the policy's creation through the API to its Ready condition"
        if report.get("mode") == "cluster"
        else "from policy applied to every agent enforcing it"
    )
    suffix = f" ({seconds} s {meaning})" if ready else ""
    lines.append(f"ready: {'yes' if ready else 'NO'}{suffix}")
    if ready and (cpu := report.get("cpu_to_ready")):
        lines.append(f"  CPU on the way (s): agents {cpu['agents']}, charons {cpu['charons']}, "
                     f"other {cpu['other']}; busy {cpu['busy']} of {seconds}")
    timing = report.get("timings") or {}
    if timing.get("policy_applied_to_all_pairs_esp") is not None:
        first = timing.get("first_packet_to_sa_seconds") or {}
        lines.append(
            f"every node pair talked ESP {timing['policy_applied_to_all_pairs_esp']} s after "
            f"the policy was applied (first packet -> SA: median {first.get('median')} s)"
        )
    for error in report.get("errors", []):
        lines.append(f"error: {error}")
    lines.append("")
    lines.append("Security associations per node:")
    for node in report.get("nodes", []):
        lines.append(f"  {node['name']} ({node['address']}) {node.get('identity', '')}")
        if not node["sas"]:
            lines.append("    (none)")
        for sa in node["sas"]:
            esp = "/".join(x for x in (sa.get("encryption"), sa.get("integrity")) if x)
            lines.append(
                f"    -> {sa.get('peer', '?'):<12} {sa.get('state', ''):<10} "
                f"ESP {esp or '?'}  IKE {sa.get('ikeAlgorithms', '')}  "
                f"{sa.get('packetsIn', 0)} pkts in / {sa.get('packetsOut', 0)} out"
            )
        for error in node.get("errors", []):
            lines.append(f"    error: {error}")
    pods = report.get("pods") or []
    if pods:
        lines.append("")
        lines.append("Pod hosts (routed through their node, no overlay, no NAT):")
        for pod in pods:
            lines.append(f"  {pod['name']} ({pod['address']}) behind {pod['node']}, "
                         f"pod CIDR {pod.get('podCIDR')}")
    lines.append("")
    lines.append(format_matrix(report.get("traffic", [])))
    if pods:
        lines.append("(none: nothing of it crossed the switch; a pod and its own node talk "
                     "inside the node)")
    lines.append("")
    lines.append(verdict(report))
    for label, stream in (report.get("streams") or {}).items():
        lines.append(
            f"Stream {label}: {stream['sent']} datagrams, each sent once: "
            f"{stream['delivered']} delivered, {len(stream['lost'])} lost, "
            f"{stream['seen']['cleartext']} seen in the clear.")
    shown = format_kubectl(report)
    if shown:
        lines.append("")
        lines.append(shown)
    return "\n".join(lines)


def format_kubectl(report: Mapping[str, Any]) -> str:
    """What ``kubectl get ipsecpolicies,ipsecnodes`` printed against the lab's API (cluster
    mode; ``strongmesh status`` output where kubectl is absent), as the demo ends with it."""
    shown = (report.get("kubectl") or {}).get("get")
    if not shown:
        return ""
    text = f"$ {shown.get('command', 'kubectl get ipsecpolicies,ipsecnodes')}\n"
    text += str(shown.get("stdout", "")).rstrip("\n")
    if shown.get("exit"):
        text += f"\n(exit {shown['exit']}: {str(shown.get('stderr', '')).strip()})"
    return text


def verdict(report: Mapping[str, Any]) -> str:
    """How the traffic of each pair class went: node to node and with the bystander (one
    line), and with pods also pod to pod, pod and its own node, pod and another node, pod and
    the bystander (then a line each)."""
    hosts = report_hosts(report)
    classes: dict[str, list[Mapping[str, Any]]] = {key: [] for key in PAIR_CLASSES}
    for r in report.get("traffic", []):
        classes[pair_class(r["src"], r["dst"], hosts)].append(r)

    def tally(selected: Sequence[Mapping[str, Any]]) -> str:
        counts: dict[str, int] = {}
        for r in selected:
            key = f"{r['seen']}{'' if r['delivered'] else ' (not delivered)'}"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"

    shown = [key for key in PAIR_CLASSES if key in ("node-node", "node-bystander")
             or classes[key]]
    # one line without pods; with them, one line per class (six of them)
    return (" " if len(shown) == 2 else "\n").join(
        f"{PAIR_CLASSES[key]} ({len(classes[key])} directions): {tally(classes[key])}."
        for key in shown
    )


def format_matrix(rows: Sequence[Mapping[str, Any]]) -> str:
    """Traffic matrix: row = sender, column = receiver; cell = what the wire saw (+ delivered)."""
    names: list[str] = []
    for row in rows:
        for name in (row["src"], row["dst"]):
            if name not in names:
                names.append(name)
    cell = {(r["src"], r["dst"]): r for r in rows}
    width = max([len(n) for n in names] + [14])
    out = ["Traffic (row sends to column; what the switch saw, and whether it arrived):"]
    out.append(" " * (width + 2) + "".join(f"{n:<{width + 2}}" for n in names))
    for src in names:
        cells = []
        for dst in names:
            r = cell.get((src, dst))
            text = "-" if r is None else f"{r['seen']} {'ok' if r['delivered'] else 'LOST'}"
            cells.append(f"{text:<{width + 2}}")
        out.append(f"{src:<{width + 2}}" + "".join(cells))
    return "\n".join(out)


# ------------------------------------------------------------------ streams and impostors
STREAM_TOKEN = b"SMSTREAM:"
PROBE_TOKENS = (b"SMPROBE:", STREAM_TOKEN, b"SMWORK:", b"SMAFTER:", b"SMLAB-END-")


def _esp_packets(packets: Sequence[Packet]) -> dict[tuple[str, str], list[Packet]]:
    """ESP packets by (source, destination), in the order seen."""
    out: dict[tuple[str, str], list[Packet]] = {}
    for p in packets:
        if p.esp:
            out.setdefault((p.src, p.dst), []).append(p)
    for carried in out.values():
        carried.sort(key=lambda p: p.time)
    return out


def stream_rows(
    datagrams: Iterable[Mapping[str, Any]], packets: Sequence[Packet],
    carriers: Mapping[str, str] | None = None, t0: float = 0.0,
) -> list[dict[str, Any]]:
    """One row per datagram of a stream (each sent exactly once), in the order sent: when it
    was sent (``at``, seconds since the lab started), the step running then, whether it
    arrived and after how long, and ``seen`` as ``classify`` judges a probe sent once (token in
    the clear: ``cleartext``; else ESP between the carriers from the send until a second after
    the arrival: ``esp``, with the SPI and ESP sequence number of that packet; else ``none``),
    computed with indexes (a stream has thousands)."""
    import bisect

    carriers = carriers or {}
    clear = [p.payload for p in packets if not p.esp and STREAM_TOKEN in p.payload]
    esp = _esp_packets(packets)
    esp_times = {pair: [p.time for p in carried] for pair, carried in esp.items()}
    rows = []
    for d in datagrams:
        token = str(d["token"]).encode()
        sent = float(d["sent"])
        delivered_at = d.get("delivered_at")
        carrier: Packet | None = None
        if any(token in payload for payload in clear):
            seen = "cleartext"
        else:
            src = carriers.get(str(d["src"]), str(d["src_address"]))
            dst = carriers.get(str(d["dst"]), str(d["dst_address"]))
            times = esp_times.get((src, dst), [])
            end = float(delivered_at or sent) + ESP_GRACE_SECONDS
            i = bisect.bisect_left(times, sent - 0.05)
            if src != dst and i < len(times) and times[i] <= end:
                seen, carrier = "esp", esp[(src, dst)][i]
            else:
                seen = "none"
        rows.append({
            "seq": d["seq"], "src": d["src"], "dst": d["dst"],
            "at": round(sent - t0, 3),
            "step": d.get("step"),
            "send_error": d.get("send_error"),
            "delivered": bool(d["delivered"]),
            "seconds": (round(float(delivered_at) - sent, 4)
                        if delivered_at is not None else None),
            "seen": seen,
            "spi": None if carrier is None else f"{carrier.spi:08x}",
            "esp_seq": None if carrier is None else carrier.esp_seq,
        })
    return rows


def stream_report(
    stream: Mapping[str, Any], packets: Sequence[Packet], carriers: Mapping[str, str],
    t0: float, steps: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A stream's datagrams (``stream_rows``) with totals, the lost and cleartext ones, and per
    scenario step that ran while it streamed how many were sent, lost, seen in the clear."""
    rows = stream_rows(stream.get("datagrams", []), packets, carriers, t0)
    lost = [r for r in rows if not r["delivered"]]
    clear = [r for r in rows if r["seen"] == "cleartext"]
    per_step: dict[int | None, dict[str, Any]] = {}
    for r in rows:
        index = (r["step"] or {}).get("index")
        entry = per_step.setdefault(index, {"index": index, "do": (r["step"] or {}).get("do"),
                                            "sent": 0, "lost": 0, "cleartext": 0, "none": 0})
        entry["sent"] += 1
        entry["lost"] += not r["delivered"]
        entry["cleartext"] += r["seen"] == "cleartext"
        entry["none"] += r["seen"] == "none"
    for index, entry in per_step.items():
        if index is not None and index < len(steps):
            entry["at"] = steps[index].get("at")
            entry["seconds"] = steps[index].get("seconds")
    latencies = sorted(r["seconds"] for r in rows if r["seconds"] is not None)
    return {
        "interval": stream.get("interval"),
        "from": round(float(stream.get("started") or t0) - t0, 3),
        "to": round(float(stream.get("stopped") or t0) - t0, 3),
        "late": stream.get("late", 0),
        "sent": len(rows),
        "delivered": len(rows) - len(lost),
        "lost": lost,
        "cleartext": clear,
        "seen": {k: sum(r["seen"] == k for r in rows) for k in ("esp", "cleartext", "none")},
        "latency_seconds": {
            "median": latencies[len(latencies) // 2] if latencies else None,
            "max": latencies[-1] if latencies else None,
        },
        "steps": [per_step[k] for k in sorted(per_step, key=lambda i: -1 if i is None else i)],
        "datagrams": rows,
    }


def impostor_wire(
    step: Mapping[str, Any], packets: Sequence[Packet], t0: float,
    addresses: Mapping[str, str],
) -> dict[str, Any]:
    """What the switch carried between an impostor step's claimed address and its target
    while the step ran: ESP, probe datagrams, and anything else (IKE): the impostor sits on a
    veth of its own, so its exchange must never show up here."""
    args = step.get("args") or {}
    claim = str(args.get("address", "10.77.0.2"))
    target = addresses.get(str(args.get("target", "node-1")), "")
    start = t0 + float(step.get("at") or 0.0)
    end = start + float(step.get("seconds") or 0.0)
    between = [p for p in packets if start <= float(p.time) <= end
               and {p.src, p.dst} == {claim, target}]
    probes = [p for p in between if not p.esp and p.payload.startswith(PROBE_TOKENS)]
    return {
        "address": claim, "target": target,
        "window": [round(start - t0, 3), round(end - t0, 3)],
        "esp": sum(p.esp for p in between),
        "probes": len(probes),
        "other": len(between) - sum(p.esp for p in between) - len(probes),
    }
