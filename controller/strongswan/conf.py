"""The ``strongswan.conf`` strongmesh's charon runs with.

A restricted plugin set, chosen with ``load_modular = yes`` and one ``load = yes`` per plugin:
an explicit ``charon.load`` list would make strongSwan print the "manual plugin load options
... experts only" warning that the PCF add-on's release notes call spurious; per-plugin load
settings do not. Plugins not listed are not loaded at all (charon logs "loaded plugins: ..." at
start-up and reports them in ``stats``, which the integration tests compare against this list).

The file has no ``include``: charon is started with ``STRONGSWAN_CONF`` pointing at it, so
nothing from ``/etc/strongswan.d`` leaks in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# What x509/pubkey IKE with AES-GCM/CBC, SHA-2, MODP/ECP and curve25519 needs. openssl provides
# every cipher, hash, PRF, DH group and RSA/ECDSA/EdDSA key; x509/pem/pkcs1/pkcs8 parse
# certificates and keys; kdf is required for IKE key derivation when openssl's KDF is absent
# (LAB-NOTES: "KDF_PRF with PRF_HMAC_SHA2_256 not supported" otherwise); constraints enforces
# X.509 name/path/policy constraints; random/nonce feed IKE; kernel-netlink, socket-default and
# vici are the kernel, network and control interfaces.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "random",
    "nonce",
    "openssl",
    "x509",
    "pem",
    "pkcs1",
    "pkcs8",
    "constraints",
    "kdf",
    "kernel-netlink",
    "socket-default",
    "vici",
)

# swanctl's own plugins (it only parses files and talks VICI). Without a list it tries its
# compiled-in default, which names plugins Debian ships in packages strongmesh does not
# install: every swanctl call (the chart's probes, `kubectl exec ... swanctl`) would then print
# a dozen "plugin ... failed to load" lines. The list is swanctl's, so charon's restricted set
# (load_modular, no "experts only" warning) is unaffected.
SWANCTL_PLUGINS: tuple[str, ...] = (
    "pem", "pkcs1", "pkcs8", "x509", "revocation", "constraints", "pubkey", "openssl", "random",
)

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def vici_uri(socket: str) -> str:
    """``unix:///path`` for a socket path (a URI is returned unchanged)."""
    return socket if "://" in socket else f"unix://{socket}"


def _value(value: str) -> str:
    if "\n" in value or "{" in value or "}" in value or "#" in value:
        raise ValueError(f"not a safe strongswan.conf value: {value!r}")
    return value


Tree = dict[str, "str | Tree"]


def _set(tree: Tree, dotted: str, value: str) -> None:
    parts = dotted.split(".")
    if not all(_NAME.match(part) for part in parts):
        raise ValueError(f"not a settings key: {dotted!r}")
    for part in parts[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{dotted!r} nests below the value {part!r}")
        tree = node
    tree[parts[-1]] = _value(value)


def _lines(tree: Tree, indent: int) -> list[str]:
    pad = "    " * indent
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.append(f"{pad}{key} {{")
            out.extend(_lines(value, indent + 1))
            out.append(f"{pad}}}")
        else:
            out.append(f"{pad}{key} = {value}")
    return out


def render_strongswan_conf(
    *,
    vici_socket: str,
    log_level: int = 1,
    log_file: str | None = None,
    xfrm_acq_expires: int | None = None,
    plugins: Sequence[str] = DEFAULT_PLUGINS,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The whole file as text.

    ``vici_socket``: path or ``unix://`` URI of the VICI socket. ``log_level``: charon's
    default log level (-1..4, the add-on's ``log_level``), written to stderr (and to
    ``log_file`` when given). ``xfrm_acq_expires``: charon writes ``net.core.xfrm_acq_expires``
    of its network namespace at every start (a value derived from its retransmit settings when
    unset: 23 with ours), so strongmesh's value must be here too or a charon restart undoes
    it. ``extra``: further settings as dotted keys below ``charon`` (``{"plugins.vici.
    socket_mode": "0660"}``), rendered as nested sections (strongswan.conf keys hold no dots).
    """
    if not -1 <= log_level <= 4:
        raise ValueError(f"charon log level must be within -1..4, not {log_level}")
    if xfrm_acq_expires is not None and xfrm_acq_expires < 1:
        raise ValueError(f"xfrm_acq_expires must be positive, not {xfrm_acq_expires}")
    charon: Tree = {
        "load_modular": "yes",
        "install_routes": "no",
        "install_virtual_ip": "no",
        # our xfrm policies carry the reqid; negotiate the configured host-to-subnet
        # selectors, never the 5-tuple of the packet that triggered the acquire
        "ignore_acquire_ts": "yes",
        # 2 s, then x1.8 per try, 3 retries: an unanswered exchange is given up after ~24 s
        "retransmit_timeout": "2.0",
        "retransmit_base": "1.8",
        "retransmit_tries": "3",
        "retransmit_jitter": "20",
    }
    plugin_tree: Tree = {}
    for name in plugins:
        if not _NAME.match(name):
            raise ValueError(f"not a plugin name: {name!r}")
        plugin_tree[name] = {"load": "yes"}
    charon["plugins"] = plugin_tree
    if "vici" in plugin_tree:
        _set(charon, "plugins.vici.socket", vici_uri(vici_socket))
    if xfrm_acq_expires is not None and "kernel-netlink" in plugin_tree:
        _set(charon, "plugins.kernel-netlink.xfrm_acq_expires", str(xfrm_acq_expires))
    logs: Tree = {}
    targets = {"stderr": "stderr"} if log_file is None else {"stderr": "stderr", "file": log_file}
    for section, path in targets.items():
        target: Tree = {
            "path": _value(path),
            "default": str(log_level),
            "ike_name": "yes",
            "flush_line": "yes",
        }
        if section == "file":  # stderr goes to a log collector that stamps lines itself
            target["time_format"] = "%H:%M:%S"
        logs[section] = target
    charon["filelog"] = logs
    charon["syslog"] = {}
    for key, value in sorted((extra or {}).items()):
        _set(charon, key, value)
    header = "# rendered by strongmesh (controller/strongswan/conf.py); no includes, on purpose."
    swanctl: Tree = {"load": " ".join(SWANCTL_PLUGINS)}
    return "\n".join([header, *_lines({"charon": charon, "swanctl": swanctl}, 0), ""])
