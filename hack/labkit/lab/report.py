"""Turns what the lab recorded (probe log, switch capture, node statuses) into the report.

Pure functions: the host calls them after user-mode-linux has halted. A probe's ``seen`` is
judged from the wire: ``cleartext`` if any copy of its token was visible, else ``esp`` if ESP
went from its source to its destination while it was being sent, else ``none``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hack.labkit.lab.pcap import Packet

# ESP seen this long after the last send still belongs to the probe (queued, then sent).
ESP_GRACE_SECONDS = 1.0


def classify(probe: Mapping[str, Any], packets: Sequence[Packet]) -> str:
    """``cleartext``, ``esp`` or ``none`` for one probe (see module docstring)."""
    token = str(probe["token"]).encode()
    if any(token in p.payload for p in packets if not p.esp):
        return "cleartext"
    first, last = probe.get("first_sent"), probe.get("last_sent")
    if first is None or last is None:
        return "none"
    end = float(probe.get("delivered_at") or last) + ESP_GRACE_SECONDS
    for p in packets:
        if (
            p.esp
            and p.src == probe["src_address"]
            and p.dst == probe["dst_address"]
            and float(first) - 0.05 <= p.time <= end
        ):
            return "esp"
    return "none"


def traffic_rows(
    probes: Iterable[Mapping[str, Any]], packets: Sequence[Packet]
) -> list[dict[str, Any]]:
    """One report row per probe, in the order probed."""
    rows = []
    for probe in probes:
        delivered_at, first = probe.get("delivered_at"), probe.get("first_sent")
        rows.append(
            {
                "src": probe["src"],
                "dst": probe["dst"],
                "seen": classify(probe, packets),
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
    lines.append("")
    lines.append(format_matrix(report.get("traffic", [])))
    lines.append("")
    lines.append(verdict(report))
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
    """One line: how node-to-node and bystander traffic went."""
    nodes = {n["name"] for n in report.get("nodes", [])}
    rows = report.get("traffic", [])
    inner = [r for r in rows if r["src"] in nodes and r["dst"] in nodes]
    outer = [r for r in rows if not (r["src"] in nodes and r["dst"] in nodes)]

    def tally(selected: Sequence[Mapping[str, Any]]) -> str:
        counts: dict[str, int] = {}
        for r in selected:
            key = f"{r['seen']}{'' if r['delivered'] else ' (not delivered)'}"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"

    return (
        f"Node to node ({len(inner)} directions): {tally(inner)}. "
        f"With the bystander ({len(outer)} directions): {tally(outer)}."
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
