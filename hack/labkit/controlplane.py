"""A real Kubernetes control plane on this machine: etcd and kube-apiserver, for the tests and
the lab (``hack/control-plane up|down --dir DIR``).

kube-apiserver and kubectl are built from Kubernetes' own Go module and etcd from etcd's, at the
versions ``hack/kube/go.mod`` pins; the binaries are cached under ``~/.cache/strongmesh``
(``$STRONGMESH_CACHE``), keyed by that module's files, so only the first build costs minutes.

``up`` makes a PKI in ``DIR/pki`` (cluster CA, serving certificate, an admin client certificate
in ``system:masters``, the ServiceAccount signing key), starts etcd on loopback and the API
server on ``--address`` with what a real cluster enforces — client-certificate and
ServiceAccount-token authentication, ``--authorization-mode=RBAC``, the default admission
chain including ValidatingAdmissionPolicy — writes ``DIR/admin.kubeconfig`` and returns once
``/readyz`` answers ok. Both processes run detached in their own session and outlive ``up``;
``down`` stops exactly the processes ``up`` recorded in ``DIR/control-plane.json``.

No kube-controller-manager or scheduler runs: nothing here needs Pods scheduled, and the
project's operator is the controller under test. (So namespaces never finish terminating and
ownerReferences do not cascade; the project relies on neither.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
KUBE_MODULE = PROJECT / "hack" / "kube"
STATE_FILE = "control-plane.json"
ADMIN_KUBECONFIG = "admin.kubeconfig"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
MIN_GO = (1, 26)

Progress = Callable[[str], None]


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or stopped."""


# ------------------------------------------------------------------------------ building
@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kubectl: Path
    etcd: Path
    version: str  # the Kubernetes release, e.g. v1.37.2


def kubernetes_version(module: Path = KUBE_MODULE) -> str:
    """The k8s.io/kubernetes release the module pins."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (module / "go.mod").read_text(), re.M)
    if match is None:
        raise ControlPlaneError(f"{module}/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def _ldflags(version: str) -> str:
    """Strip symbols; stamp the release into /version and `kubectl version` the way
    Kubernetes' own build (hack/lib/version.sh) does."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamps += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(["-s", "-w", *stamps])


def cache_root() -> Path:
    return Path(os.environ.get("STRONGMESH_CACHE") or Path.home() / ".cache" / "strongmesh")


def binaries_dir(module: Path = KUBE_MODULE) -> Path:
    """Where the binaries of this exact module (go.mod, go.sum, sources, flags) are cached."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "etcd/main.go"):
        digest.update(name.encode() + b"\0" + (module / name).read_bytes())
    version = kubernetes_version(module)
    digest.update(_ldflags(version).encode())
    return cache_root() / "kube" / f"{version}-{digest.hexdigest()[:12]}"


def _binaries(directory: Path, version: str) -> Binaries:
    return Binaries(directory / "kube-apiserver", directory / "kubectl", directory / "etcd",
                    version)


def _check_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ControlPlaneError(
            "Go is not on PATH: the control plane is built from Kubernetes' Go module. Install "
            f"Go >= {MIN_GO[0]}.{MIN_GO[1]} (https://go.dev/dl; the project's polyglot "
            "machines have it in /usr/local/go/bin)")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise ControlPlaneError(
            f"{go} is {out.stdout.strip() or 'unknown'}; hack/kube/go.mod needs Go >= "
            f"{MIN_GO[0]}.{MIN_GO[1]}")
    return go


def build(module: Path = KUBE_MODULE, progress: Progress = print) -> Binaries:
    """The cached binaries, building them first if this module version was never built."""
    version = kubernetes_version(module)
    target = binaries_dir(module)
    binaries = _binaries(target, version)
    if all(p.exists() for p in (binaries.kube_apiserver, binaries.kubectl, binaries.etcd)):
        return binaries
    go = _check_go()
    packages = ["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl", "./etcd"]
    # go.sum is committed: the build must not change it (readonly), nor ask git for stamps
    env = os.environ | {"CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    started = time.monotonic()
    progress(f"building kube-apiserver, kubectl {version} and etcd from Go modules "
             f"(first time only; cached in {target})")
    listed = subprocess.run(
        [go, "list", "-deps", *packages],
        cwd=module, env=env, capture_output=True, text=True, check=False,
    )
    if listed.returncode != 0:
        raise ControlPlaneError(f"go list failed (module download?):\n{listed.stderr[-3000:]}")
    total = sum(1 for line in listed.stdout.splitlines() if line.strip())
    progress(f"  modules ready after {time.monotonic() - started:.0f} s; {total} packages")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [go, "build", "-v", "-trimpath", "-ldflags", _ldflags(version), "-o",
               str(staging) + "/", *packages]
    proc = subprocess.Popen(command, cwd=module, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    compiled, reported, tail = 0, time.monotonic(), list[str]()
    for line in proc.stderr:
        tail = [*tail[-40:], line]
        if line.strip() and not line.startswith(("#", " ", "\t")) and "error" not in line:
            compiled += 1
        if time.monotonic() - reported >= 15:
            reported = time.monotonic()
            progress(f"  compiled {compiled} of up to {total} packages "
                     f"({reported - started:.0f} s)")
    if proc.wait() != 0:
        raise ControlPlaneError("go build failed:\n" + "".join(tail))
    if target.exists():  # another build finished first: keep its binaries
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    progress(f"built in {time.monotonic() - started:.0f} s: {target}")
    return binaries


# ------------------------------------------------------------------------------ PKI
@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _write_private(path: Path, data: bytes) -> None:
    """Key material: created 0600, never readable by anyone else even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_pki(directory: Path, addresses: list[str]) -> Pki:
    """A cluster CA, the API server's serving certificate for ``addresses``, an admin client
    certificate (``system:masters``) and the ServiceAccount token signing key pair."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
        return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("strongmesh-test-cluster-ca")).issuer_name(name("strongmesh-test-cluster-ca"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(subject: x509.Name, usage: x509.ObjectIdentifier,
             sans: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        leaf_key = key()
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), leaf_key

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    ips = sorted({"127.0.0.1", "10.96.0.1", *addresses})
    serving, serving_key = leaf(
        name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips],
    )
    admin, admin_key = leaf(name("strongmesh-admin", "system:masters"),
                            ExtendedKeyUsageOID.CLIENT_AUTH, [])
    sa_key = key()

    pki = Pki(*(directory / f for f in (
        "ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key",
        "sa.key", "sa.pub")))
    pem = serialization.Encoding.PEM
    pki.ca_cert.write_bytes(ca.public_bytes(pem))
    _write_private(pki.ca_key, pem_key(ca_key))
    pki.serving_cert.write_bytes(serving.public_bytes(pem))
    _write_private(pki.serving_key, pem_key(serving_key))
    pki.admin_cert.write_bytes(admin.public_bytes(pem))
    _write_private(pki.admin_key, pem_key(admin_key))
    _write_private(pki.sa_key, pem_key(sa_key))
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def kubeconfig(server: str, ca_pem: bytes, *, user: str, cert_pem: bytes | None = None,
               key_pem: bytes | None = None, token: str | None = None,
               token_file: str | None = None) -> dict[str, object]:
    """A kubeconfig document with one cluster, one user, one context (credentials inline)."""
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    credentials: dict[str, str] = {}
    if cert_pem is not None and key_pem is not None:
        credentials = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    if token is not None:
        credentials["token"] = token
    if token_file is not None:
        credentials["tokenFile"] = token_file
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": user,
        "clusters": [{"name": "strongmesh", "cluster": {
            "server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "strongmesh", "user": user}}],
    }


def write_kubeconfig(path: Path, doc: dict[str, object]) -> Path:
    """Kubeconfigs carry credentials: 0600."""
    _write_private(path, json.dumps(doc, indent=2).encode())
    return path


# ------------------------------------------------------------------------------ running
@dataclass
class ControlPlane:
    """A started control plane (from ``up``, or read back from its directory)."""

    directory: Path
    server: str
    version: str
    pids: dict[str, int]
    binaries: Binaries
    # the processes, when this Python process started them: reaped by ``down``
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / ADMIN_KUBECONFIG

    @property
    def ca_cert(self) -> Path:
        return self.directory / "pki" / "ca.crt"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None, timeout: float = 60,
                ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with this control plane (same release as the server)."""
        result = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(kubeconfig or self.kubeconfig),
             *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def save(self) -> None:
        state = {"server": self.server, "version": self.version, "pids": self.pids,
                 "binaries": str(self.binaries.kube_apiserver.parent)}
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ControlPlane:
        state = json.loads((directory / STATE_FILE).read_text())
        return cls(directory, state["server"], state["version"],
                   {k: int(v) for k, v in state["pids"].items()},
                   _binaries(Path(state["binaries"]), state["version"]))

    def down(self, timeout: float = 20.0) -> None:
        stop(self.directory, timeout)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _admin_ssl(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.admin_cert, pki.admin_key)
    return context


def _wait_ready(server: str, pki: Pki, proc: subprocess.Popen[bytes], etcd: subprocess.Popen[bytes],
                timeout: float, log: Path) -> None:
    context = _admin_ssl(pki)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for what, p in (("kube-apiserver", proc), ("etcd", etcd)):
            if p.poll() is not None:
                raise ControlPlaneError(f"{what} exited with {p.returncode}; last lines of "
                                        f"{log.parent}:\n{_tail(log.parent / (what + '.log'))}")
        try:
            with urllib.request.urlopen(server + "/readyz", context=context, timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (OSError, ssl.SSLError) as error:
            last = str(error)
        time.sleep(0.2)
    raise ControlPlaneError(f"/readyz not ok after {timeout:.0f} s ({last}); last lines of "
                            f"{log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Audit: who asked for what (user, verb, resource, name, response code) — how tests prove what
# an identity did or was refused, from the server's own record. Metadata level: no bodies, so
# no Secret data and no tokens reach the log.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata"}],
}


def up(directory: Path, address: str = "127.0.0.1", port: int | None = None,
       timeout: float = 180.0, progress: Progress = print, audit: bool = False,
       extra_apiserver_args: tuple[str, ...] = ()) -> ControlPlane:
    """Build (if needed) and start etcd and kube-apiserver; return once /readyz is ok.

    ``audit`` writes the API server's audit log (Metadata level, JSON lines) to
    ``DIR/logs/audit.log``."""
    directory = directory.resolve()
    if (directory / STATE_FILE).exists():
        raise ControlPlaneError(f"{directory} already holds a control plane; run "
                                f"`hack/control-plane down --dir {directory}` first")
    binaries = build(progress=progress)
    started = time.monotonic()
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pki = make_pki(directory / "pki", [address])
    client_port, peer_port = free_port(), free_port()
    secure_port = port or free_port(address)
    etcd_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd = _spawn([
        str(binaries.etcd), "--name", "strongmesh", "--data-dir", str(directory / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"strongmesh={peer_url}", "--log-level", "warn",
        # a test cluster: losing etcd's data on a machine crash is fine, fsync latency is not
        "--unsafe-no-fsync",
    ], logs / "etcd.log")
    server = f"https://{address}:{secure_port}"
    audit_args: list[str] = []
    if audit:
        (directory / "audit-policy.json").write_text(json.dumps(AUDIT_POLICY))
        audit_args = [f"--audit-policy-file={directory / 'audit-policy.json'}",
                      f"--audit-log-path={logs / 'audit.log'}", "--audit-log-format=json",
                      "--audit-log-mode=blocking"]
    apiserver = _spawn([
        str(binaries.kube_apiserver),
        f"--etcd-servers={etcd_url}",
        f"--bind-address={address}", f"--advertise-address={address}",
        f"--secure-port={secure_port}",
        f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--authorization-mode=RBAC",
        # the default admission chain already has it; named so that nobody loses it
        "--enable-admission-plugins=ValidatingAdmissionPolicy",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",  # no Service network to announce on
        "--profiling=false",
        *audit_args,
        *extra_apiserver_args,
    ], logs / "kube-apiserver.log")
    plane = ControlPlane(directory, server, binaries.version,
                         {"kube-apiserver": apiserver.pid, "etcd": etcd.pid}, binaries,
                         [apiserver, etcd])
    plane.save()
    try:
        _wait_ready(server, pki, apiserver, etcd, timeout, logs / "kube-apiserver.log")
    except BaseException:
        plane.down()
        raise
    write_kubeconfig(directory / ADMIN_KUBECONFIG, kubeconfig(
        server, pki.ca_cert.read_bytes(), user="strongmesh-admin",
        cert_pem=pki.admin_cert.read_bytes(), key_pem=pki.admin_key.read_bytes()))
    progress(f"control plane {binaries.version} ready at {server} in "
             f"{time.monotonic() - started:.1f} s; kubeconfig {directory / ADMIN_KUBECONFIG}")
    return plane


def _is_ours(pid: int, binary_dir: Path) -> bool:
    """The PID still runs one of our binaries (not a recycled PID of something else)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return Path(exe.removesuffix(" (deleted)")).parent == binary_dir


def stop(directory: Path, timeout: float = 20.0) -> list[str]:
    """Stop what ``up`` started in ``directory`` (API server first, then etcd)."""
    state_path = directory.resolve() / STATE_FILE
    if not state_path.exists():
        return []
    plane = ControlPlane.load(directory.resolve())
    binary_dir = plane.binaries.kube_apiserver.parent
    stopped = []
    for name in ("kube-apiserver", "etcd"):
        pid = plane.pids.get(name)
        if pid is None or not _is_ours(pid, binary_dir):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _is_ours(pid, binary_dir) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _is_ours(pid, binary_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _is_ours(pid, binary_dir):
                _reap(pid)
                time.sleep(0.05)
        stopped.append(name)
    state_path.unlink()
    return stopped


def _reap(pid: int) -> None:
    """Collect our own child's exit status, so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def running(directory: Path, **options: object) -> Iterator[ControlPlane]:
    """``up`` for the duration of a ``with`` block; ``down`` on every exit path."""
    plane = up(directory, **options)  # type: ignore[arg-type]
    try:
        yield plane
    finally:
        plane.down()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="hack/control-plane",
        description="A real Kubernetes control plane (etcd + kube-apiserver with "
        "authentication, RBAC and admission) for strongmesh's tests and lab.",
        epilog="The first `up` builds kube-apiserver, kubectl and etcd from the Go modules "
        "pinned in hack/kube/go.mod (minutes; cached afterwards in $STRONGMESH_CACHE or "
        "~/.cache/strongmesh). `up` returns once /readyz is ok and leaves both processes "
        "running; `down` stops them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start; writes DIR/admin.kubeconfig")
    up_parser.add_argument("--dir", type=Path, required=True, help="state directory")
    up_parser.add_argument("--address", default="127.0.0.1",
                           help="address the API server binds (default 127.0.0.1)")
    up_parser.add_argument("--port", type=int, default=None, help="secure port (default: free)")
    up_parser.add_argument("--timeout", type=float, default=180.0,
                           help="seconds to wait for /readyz (default 180)")
    up_parser.add_argument("--audit", action="store_true",
                           help="write the audit log (Metadata level) to DIR/logs/audit.log")
    down_parser = commands.add_parser("down", help="stop what `up --dir DIR` started")
    down_parser.add_argument("--dir", type=Path, required=True, help="state directory")
    commands.add_parser("build", help="only build (or find cached) binaries; print their path")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build(progress=lambda line: print(line, file=sys.stderr)).kube_apiserver.parent)
        elif args.command == "up":
            up(args.dir, args.address, args.port, args.timeout,
               progress=lambda line: print(line, file=sys.stderr), audit=args.audit)
        else:
            stopped = stop(args.dir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    except ControlPlaneError as error:
        print(f"hack/control-plane: {error}", file=sys.stderr)
        return 1
    return 0
