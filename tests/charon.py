"""Real charon daemons for tests: each in its own network + mount namespace (LAB-NOTES).

``start_charon()`` runs ``/usr/lib/ipsec/charon`` inside a fresh network namespace, in a private
mount namespace with its own tmpfs on ``/run`` (charon's pid file is ``/run/charon.pid``), with
``STRONGSWAN_CONF`` pointing at a file rendered by ``controller.strongswan.conf`` and its VICI
socket in a short temporary directory the test process can reach. ``charon_pair()`` links two
such namespaces with a veth pair so that they can run IKE against each other (the host kernel
has no ESP, so CHILD_SAs fail there; IKE_SAs complete).

Also here: ``node_credentials``/``issue_node``, NodeCredentials built from ``tests.certs``.
Everything created is removed again, also when a test fails. Needs root and strongSwan.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from controller.facts import NodeCredentials
from controller.strongswan.conf import render_strongswan_conf
from tests.certs import Issued, KeyType, make_cert
from tests.environment import missing

CHARON = "/usr/lib/ipsec/charon"
_counter = itertools.count(1)


def require_charon() -> None:
    """Skip (fail under CI) where a real charon cannot run: not root or no strongSwan."""
    if os.geteuid() != 0:
        missing("needs root (network namespaces)")
    if not os.access(CHARON, os.X_OK) or shutil.which("ip") is None:
        missing(f"needs strongSwan ({CHARON}) and iproute2")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A fresh network namespace with ``lo`` up; deleted afterwards."""
    name = _unique("smt")
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


@dataclass
class CharonProcess:
    """One running charon; ``restart()`` keeps namespace, config and socket path."""

    netns: str
    workdir: Path
    conf_text: str
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.workdir / "charon.vici"

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "strongswan.conf"

    def log_text(self) -> str:
        """Everything charon logged (all starts)."""
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def start(self, timeout: float = 10.0) -> None:
        self.conf_path.write_text(self.conf_text)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.starts += 1
        log_path = self.workdir / f"charon-{self.starts}.log"
        self.logs.append(log_path)
        script = 'mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF="$0" ' + CHARON
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    str(self.conf_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"charon exited at start-up:\n{self.log_text()}")
            if self.socket_path.exists():
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket_path))
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"charon did not open its VICI socket:\n{self.log_text()}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def start_charon(
    ns: str | None = None, *, log_level: int = 1, **conf: Any
) -> Iterator[CharonProcess]:
    """A running charon in ``ns`` (or in a namespace of its own); stopped and cleaned up after.

    ``conf``: further keyword arguments of ``render_strongswan_conf`` (plugins, extra, ...).
    """
    require_charon()
    workdir = Path(tempfile.mkdtemp(prefix="smc-", dir="/tmp"))  # short: socket paths <= 107
    try:
        with contextlib.ExitStack() as stack:
            name = ns if ns is not None else stack.enter_context(netns())
            text = render_strongswan_conf(
                vici_socket=str(workdir / "charon.vici"), log_level=log_level, **conf
            )
            charon = CharonProcess(netns=name, workdir=workdir, conf_text=text)
            charon.start()
            try:
                yield charon
            finally:
                charon.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Peer:
    charon: CharonProcess
    address: str


@contextlib.contextmanager
def charon_pair(*, log_level: int = 1) -> Iterator[tuple[Peer, Peer]]:
    """Two charons in two namespaces joined by a veth pair: 192.0.2.1/24 and 192.0.2.2/24."""
    with netns() as ns_a, netns() as ns_b:
        veth_a, veth_b = _unique("sva"), _unique("svb")
        _run(
            "ip",
            "link",
            "add",
            veth_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            veth_b,
            "netns",
            ns_b,
        )
        for ns, dev, address in ((ns_a, veth_a, "192.0.2.1"), (ns_b, veth_b, "192.0.2.2")):
            _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        with (
            start_charon(ns_a, log_level=log_level) as a,
            start_charon(ns_b, log_level=log_level) as b,
        ):
            yield Peer(a, "192.0.2.1"), Peer(b, "192.0.2.2")


# -- credentials (certificates come from tests.certs) -----------------------------------------


def node_credentials(
    instance: Issued, cas: Sequence[Issued], intermediates: Sequence[Issued] = ()
) -> NodeCredentials:
    """The agent's view of a credentials Secret: instance cert, intermediates, key, CA bundle."""
    return NodeCredentials(
        cert_pem=instance.cert_pem,
        chain_pems=tuple(i.cert_pem for i in intermediates),
        key_pem=instance.key_pem(),
        ca_pems=tuple(ca.cert_pem for ca in cas),
        subject=charon_dn(instance.cert),
    )


def charon_dn(cert: x509.Certificate) -> str:
    """A certificate's subject as charon prints it: RDNs in ASN.1 order, ", "-separated
    (RFC 4514 strings run the other way round)."""
    return ", ".join(rdn.rfc4514_string() for rdn in cert.subject.rdns)


def issue_node(ca: Issued, cn: str, *, key_type: KeyType = "ec") -> NodeCredentials:
    """Fresh node credentials signed by ``ca``, trusting ``ca``."""
    return node_credentials(make_cert(ca, cn, key_type=key_type), [ca])
