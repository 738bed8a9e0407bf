"""The built image's entry points, run from the image itself (buildah; no registry, no daemon).

The image is ``localhost/strongmesh:<version>`` from ``hack/build-image``, which the ``image``
fixture runs first: it builds what is missing (cold: a few minutes) and returns at once when
nothing the build reads has changed, so the tests always see the working tree's image.
``STRONGMESH_TEST_IMAGE=<ref>`` tests that image from buildah's storage instead, unbuilt.

- ``buildah run`` (chroot isolation; the image's configured user, environment and entry point)
  runs ``strongmesh`` and imports the runtime dependencies;
- charon runs as the chart's agent DaemonSet runs it: command, environment, capabilities,
  user, read-only root and volumes (the ConfigMap's strongswan.conf, the emptyDirs) are read
  from the rendered chart; it runs in a network and a mount namespace of its own, chrooted
  into the image's filesystem (a ``buildah mount``-ed working container). swanctl from the
  image talks to it as the chart's probes do: ``nsenter`` into charon's namespaces and root
  (what ``kubectl exec`` does). charon is stopped with SIGTERM; nothing stays running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.environment import missing

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
BUILD_IMAGE = ROOT / "hack" / "build-image"
CHART = ROOT / "charts" / "strongmesh"
LOCAL_BASE = "localhost/debian:bookworm-slim"
NON_ROOT_UID = 65532
BUILD_TIMEOUT = 3600.0
# What strongSwan prints when a plugin or plugin feature does not load ("plugin 'x': failed to
# load - ...", seen with a plugin the image lacks), and the "experts only" warning about an
# explicit `charon.load` list (printed by `ipsec start`'s starter, not by charon itself, in
# 5.9.8: kept in case a later release moves it).
PLUGIN_WARNING = re.compile(
    r"experts only|failed to load|unable to load|unmet dependenc|no plugin file|"
    r"plugin feature|critical",
    re.IGNORECASE,
)
# The runtime dependencies of pyproject.toml, by import name, and the project itself.
RUNTIME_IMPORTS = (
    "kopf",
    "cryptography.x509",
    "pydantic",
    "yaml",
    "vici",
    "aiohttp",
    "prometheus_client",
    "controller.cli",
    "controller.agent.main",
    "controller.operator.run",
)
CAPABILITY_BITS = {"NET_ADMIN": 12, "NET_BIND_SERVICE": 10}

Json = dict[str, Any]


def command(*argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


def buildah(*args: str, timeout: float = 300.0) -> str:
    result = command("buildah", "--storage-driver", "vfs", *args, timeout=timeout)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
    return result.stdout


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_exists(ref: str) -> bool:
    inspect = command("buildah", "--storage-driver", "vfs", "inspect", "--type", "image", ref)
    return inspect.returncode == 0


# --- the image and a working container of it -------------------------------------------------


@dataclass(frozen=True)
class Image:
    ref: str
    config: Json  # the OCI image config's "config": User, Env, Entrypoint, Cmd, Labels


@dataclass(frozen=True)
class Container:
    name: str
    rootfs: Path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    if os.geteuid() != 0:
        missing("the image tier needs root (buildah's vfs storage, namespaces, chroot)")
    tools = ("buildah", "ip", "unshare", "nsenter", "chroot")
    absent = [tool for tool in tools if shutil.which(tool) is None]
    if absent:
        missing(f"the image tier needs {', '.join(absent)} (apt-get install buildah debootstrap)")
    ref = os.environ.get("STRONGMESH_TEST_IMAGE", "")
    if not ref:
        if not image_exists(LOCAL_BASE) and not (
            shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").exists()
        ):
            missing("building the image's base needs debootstrap (apt-get install debootstrap)")
        log = tmp_path_factory.mktemp("build") / "build-image.log"
        with log.open("w") as out:
            built = subprocess.run(
                [str(BUILD_IMAGE)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=BUILD_TIMEOUT,
            )
        if built.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"hack/build-image exited {built.returncode} (log: {log}):\n{tail}")
        ref = f"localhost/strongmesh:{project_version()}"
    elif not image_exists(ref):
        pytest.fail(f"STRONGMESH_TEST_IMAGE={ref} is not in buildah's storage")
    inspected = json.loads(buildah("inspect", "--type", "image", ref))
    return Image(ref, inspected["OCIv1"]["config"])


CONTAINER_PREFIX = "strongmesh-image-test-"
NETNS_PREFIX = "smimg"


def _gone(name: str, prefix: str) -> bool:
    pid = name.removeprefix(prefix)
    return name.startswith(prefix) and pid.isdigit() and not Path(f"/proc/{pid}").exists()


def remove_leftovers() -> None:
    """Working containers and network namespaces of test runs that were killed (their pid,
    which their names carry, is gone)."""
    vfs = ("buildah", "--storage-driver", "vfs")
    listed = command(*vfs, "containers", "--format", "{{.ContainerName}}")
    for name in listed.stdout.split():
        if _gone(name, CONTAINER_PREFIX):
            command(*vfs, "rm", name)
    for line in command("ip", "netns", "list").stdout.splitlines():
        if line.split() and _gone(line.split()[0], NETNS_PREFIX):
            command("ip", "netns", "delete", line.split()[0])


@pytest.fixture(scope="module")
def container(image: Image) -> Iterator[Container]:
    """A working container of the image (its own copy of the filesystem), removed afterwards."""
    remove_leftovers()
    name = f"{CONTAINER_PREFIX}{os.getpid()}"
    buildah("from", "--pull=never", "--name", name, image.ref)
    try:
        yield Container(name, Path(buildah("mount", name).strip()))
    finally:
        command("buildah", "--storage-driver", "vfs", "unmount", name)
        command("buildah", "--storage-driver", "vfs", "rm", name)


def run_in_image(container: Container, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``argv`` as the image's configured user, with its environment (``buildah run``)."""
    return command(
        "buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot",
        container.name, "--", *argv,
    )  # fmt: skip


# --- entry point, user, Python ----------------------------------------------------------------


def test_configured_user_is_not_root(image: Image, container: Container) -> None:
    uid, _, gid = image.config.get("User", "").partition(":")
    assert (uid, gid) == (str(NON_ROOT_UID), str(NON_ROOT_UID)), image.config.get("User")
    # and a process started from the image without a user of its own runs as that user
    result = run_in_image(container, ["id", "-u", "-n"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["strongmesh"]
    assert run_in_image(container, ["id", "-u"]).stdout.split() == [str(NON_ROOT_UID)]


@pytest.mark.parametrize(
    "args",
    [[], ["agent", "--help"], ["operator", "--help"], ["drain", "--help"]],
    ids=["default-cmd", "agent", "operator", "drain"],
)
def test_entry_point_prints_usage(image: Image, container: Container, args: list[str]) -> None:
    # No arguments: what a runtime runs by default, the entry point with the image's CMD.
    assert image.config["Cmd"] == ["--help"]
    argv = [*image.config["Entrypoint"], *(args or image.config["Cmd"])]
    result = run_in_image(container, argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: strongmesh {' '.join(args[:-1])}".rstrip())
    if not args:
        for subcommand in ("agent", "operator", "drain", "validate"):
            assert re.search(rf"^\s+{subcommand}\s", result.stdout, re.MULTILINE), subcommand


def test_runtime_dependencies_import_and_no_installer_ships(container: Container) -> None:
    script = (
        "import importlib, importlib.util, json\n"
        f"for name in {list(RUNTIME_IMPORTS)!r}: importlib.import_module(name)\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None"
        " for n in ('pip', 'setuptools')}))\n"
    )
    result = run_in_image(container, ["/opt/strongmesh/bin/python", "-c", script])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"pip": False, "setuptools": False}


# --- charon as the chart runs it ---------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    path: str  # in the container, as the chart writes it
    volume: Json
    read_only: bool


@dataclass(frozen=True)
class ChartCharon:
    """The chart's charon container (default values), as a pod would run it."""

    command: list[str]
    env: dict[str, str]
    capabilities: list[str]
    run_as_user: int
    read_only_root: bool
    no_new_privs: bool
    mounts: list[Mount]
    config_maps: dict[str, dict[str, str]]
    startup_probe: list[str]
    plugins: list[str]

    @property
    def vici_uri(self) -> str:
        return self.startup_probe[self.startup_probe.index("--uri") + 1]


def chart_charon() -> ChartCharon:
    rendered = helm.Chart.load(str(CHART)).render(
        {}, name="strongmesh", namespace="strongmesh-system", is_install=True
    )
    objects: list[Json] = [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "DaemonSet"]
    pod = next(p for p in pods if any(c["name"] == "charon" for c in p["containers"]))
    charon = next(c for c in pod["containers"] if c["name"] == "charon")
    volumes = {v["name"]: v for v in pod["volumes"]}
    security = charon["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"], "the test models drop: [ALL] only"
    # Downward-API values (node and pod names) get stand-ins.
    env = {e["name"]: e.get("value", f"test-{e['name'].lower()}") for e in charon.get("env", [])}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return ChartCharon(
        command=[*charon["command"], *charon.get("args", [])],
        env=env,
        capabilities=list(security["capabilities"].get("add", [])),
        run_as_user=int(security.get("runAsUser", 0)),
        read_only_root=bool(security.get("readOnlyRootFilesystem", False)),
        no_new_privs=security.get("allowPrivilegeEscalation") is False,
        mounts=[
            Mount(m["mountPath"], volumes[m["name"]], bool(m.get("readOnly", False)))
            for m in charon["volumeMounts"]
        ],
        config_maps={
            o["metadata"]["name"]: dict(o.get("data", {}))
            for o in objects
            if o["kind"] == "ConfigMap"
        },
        startup_probe=list(charon["startupProbe"]["exec"]["command"]),
        plugins=list(values["charon"]["plugins"]),
    )


def resolve_in(root: Path, path: str) -> str:
    """``path`` with the symlinks of the filesystem at ``root`` resolved (as ``root`` sees it):
    ``/var/run/strongmesh`` -> ``/run/strongmesh`` in a Debian image. Mounting on the unresolved
    path before the chroot would follow ``/var/run -> /run`` out into the host's /run."""
    todo = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in (".", ""):
            continue
        if part == "..":
            done = done[:-1]
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            hops += 1
            assert hops < 40, f"symlink loop resolving {path}"
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
        else:
            done.append(part)
    return "/" + "/".join(done)


@dataclass
class RunningCharon:
    spec: ChartCharon
    rootfs: Path
    workdir: Path
    netns: str
    image_env: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    exit_code: int | None = None

    def __post_init__(self) -> None:
        self.log = self.workdir / "charon.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _env(self) -> list[str]:
        """The image's environment and the container's (what `kubectl exec` gets too)."""
        env = dict(e.split("=", 1) for e in self.image_env)
        env.update(self.spec.env)
        return [f"{k}={v}" for k, v in env.items()]

    def _privileges(self) -> list[str]:
        """The container's process credentials with the image's own setpriv (util-linux)."""
        caps = ",".join(["-all", *(f"+{c.lower()}" for c in self.spec.capabilities)])
        uid = str(self.spec.run_as_user)
        argv = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--inh-caps=-all", f"--bounding-set={caps}"]
        return [*argv, "--no-new-privs"] if self.spec.no_new_privs else argv

    def _script(self) -> str:
        """Mounts of a pod's container inside a private mount namespace, then charon, chrooted."""
        root = shlex.quote(str(self.rootfs))
        lines = ["set -eu", f"R={root}", 'mount --bind "$R" "$R"']
        if self.spec.read_only_root:
            lines.append('mount -o remount,bind,ro "$R"')
        # What the container runtime provides: /proc (/proc/sys read-only), /sys, a tmpfs /dev.
        lines += [
            'mount -t proc proc "$R/proc"',
            'mount --bind "$R/proc/sys" "$R/proc/sys"',
            'mount -o remount,bind,ro "$R/proc/sys"',
            'mount -t sysfs -o ro sysfs "$R/sys"',
            'mount -t tmpfs -o mode=755,nosuid tmpfs "$R/dev"',
        ]
        for dev in ("null", "zero", "random", "urandom"):
            lines.append(f'touch "$R/dev/{dev}" && mount --bind /dev/{dev} "$R/dev/{dev}"')
        socket = self.spec.vici_uri.removeprefix("unix://")
        socket_mount = max(
            (m for m in self.spec.mounts if socket.startswith(m.path.rstrip("/") + "/")),
            key=lambda m: len(m.path),
        )
        targets = [(resolve_in(self.rootfs, m.path), m) for m in self.spec.mounts]
        for target, mount in sorted(targets, key=lambda t: t[0].count("/")):
            # mount points on the (still writable) working container's filesystem, and again
            # inside mounts made above (a tmpfs on /run hides /run/strongmesh)
            (self.rootfs / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
            dest = '"$R"' + shlex.quote(target)
            lines.append(f"mkdir -p {dest}")
            volume = mount.volume
            if "configMap" in volume:
                source = self.workdir / volume["name"]
                source.mkdir()
                for key, text in self.spec.config_maps[volume["configMap"]["name"]].items():
                    (source / key).write_text(text)
                lines.append(f"mount --bind {shlex.quote(str(source))} {dest}")
            elif "emptyDir" in volume and mount is socket_mount:
                # on the host too, so that the test can see the VICI socket appear
                source = self.workdir / volume["name"]
                source.mkdir(mode=0o700)
                lines.append(f"mount --bind {shlex.quote(str(source))} {dest}")
            elif "emptyDir" in volume:
                lines.append(f"mount -t tmpfs -o mode=755,nosuid,nodev tmpfs {dest}")
            else:
                raise AssertionError(f"volume kind not modelled by this test: {volume}")
            if mount.read_only:
                lines.append(f"mount -o remount,bind,ro {dest}")
        argv = [*self._privileges(), "/usr/bin/env", "-i", *self._env()]
        argv += self.spec.command
        lines.append('exec chroot "$R" ' + shlex.join(argv))
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        script = self.workdir / "start.sh"
        script.write_text(self._script())
        with self.log.open("wb") as out:
            # `ip netns exec`, `unshare` (no --fork), `sh -c exec ...`, chroot, setpriv and env
            # all exec: the process is charon itself.
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
                 "private", "sh", str(script)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def exec(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """``argv`` inside charon's container: its namespaces, root, credentials, environment."""
        assert self.process is not None
        return command(
            "nsenter", f"--target={self.process.pid}", "--mount", "--net", "--root", "--wd",
            *self._privileges(), "/usr/bin/env", "-i", *self._env(), *argv,
            timeout=30,
        )  # fmt: skip

    def wait_started(self, timeout: float = 60.0) -> None:
        """Until the chart's startup probe succeeds (probed more often than the chart does)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"charon exited ({code}):\n{self.log_text()}")
            if self.exec(self.spec.startup_probe).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"the startup probe never succeeded:\n{self.log_text()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (what the kubelet sends), then the network namespace goes."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
                    raise
            self.exit_code = process.returncode
        command("ip", "netns", "delete", self.netns)


@pytest.fixture(scope="module")
def charon(
    image: Image, container: Container, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCharon]:
    spec = chart_charon()
    netns = f"{NETNS_PREFIX}{os.getpid()}"
    setup = command("ip", "netns", "add", netns)
    assert setup.returncode == 0, setup.stderr
    workdir = tmp_path_factory.mktemp("charon")
    running = RunningCharon(spec, container.rootfs, workdir, netns, image.config["Env"])
    try:
        command("ip", "-n", netns, "link", "set", "lo", "up")
        running.start()
        running.wait_started()
        yield running
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            running.stop()


def test_charon_runs_with_the_chart_security_context(charon: RunningCharon) -> None:
    assert charon.process is not None
    status_text = Path(f"/proc/{charon.process.pid}/status").read_text()
    status = dict(line.split(":", 1) for line in status_text.splitlines())
    bounding = int(status["CapBnd"], 16)
    assert bounding == sum(1 << CAPABILITY_BITS[c] for c in charon.spec.capabilities)
    assert status["NoNewPrivs"].strip() == ("1" if charon.spec.no_new_privs else "0")
    assert Path(f"/proc/{charon.process.pid}/root").resolve() == charon.rootfs.resolve()
    assert Path(f"/proc/{charon.process.pid}/exe").resolve().is_relative_to(charon.rootfs)
    if charon.spec.read_only_root:
        result = charon.exec(["touch", "/written"])
        assert result.returncode != 0
        assert "Read-only file system" in result.stderr


def test_charon_loads_exactly_the_chart_plugins_without_warnings(charon: RunningCharon) -> None:
    log = charon.log_text()
    loaded = re.findall(r"loaded plugins: (.*)", log)
    assert loaded, log
    assert set(loaded[0].split()) == {"charon", *charon.spec.plugins}
    warnings = [line for line in log.splitlines() if PLUGIN_WARNING.search(line)]
    assert not warnings, log
    # The chart's probe command sees the same set over VICI.
    stats = charon.exec(charon.spec.startup_probe)
    assert stats.returncode == 0, stats.stderr
    served = re.search(r"^loaded plugins: (.*)$", stats.stdout, re.MULTILINE)
    assert served is not None, stats.stdout
    assert set(served.group(1).split()) == {"charon", *charon.spec.plugins}
    # and swanctl itself, run by every probe, loads only its own plugins: no noise either
    noise = [line for line in (stats.stdout + stats.stderr).splitlines()
             if PLUGIN_WARNING.search(line)]
    assert not noise, stats.stdout + stats.stderr


def test_swanctl_prints_the_strongswan_version(charon: RunningCharon) -> None:
    # swanctl 5.9 connects to charon for every command, --version included: it exits 2 with
    # usage when no charon listens, so this runs against the image's charon.
    uri = ["--uri", charon.spec.vici_uri]
    local = charon.exec(["swanctl", "--version", *uri])
    assert local.returncode == 0, local.stdout + local.stderr
    swanctl = re.fullmatch(r"strongSwan swanctl (\d+\.\d+\.\d+)\n", local.stdout)
    assert swanctl is not None, local.stdout
    daemon = charon.exec(["swanctl", "--version", "--daemon", *uri])
    assert daemon.returncode == 0, daemon.stdout + daemon.stderr
    version = re.match(r"strongSwan (\d+\.\d+\.\d+) charon \(Linux", daemon.stdout)
    assert version is not None, daemon.stdout
    assert version.group(1) == swanctl.group(1)
    assert f"(strongSwan {version.group(1)}," in charon.log_text()


def test_charon_stops_cleanly_and_leaves_nothing_running(charon: RunningCharon) -> None:
    assert charon.process is not None
    pid = charon.process.pid
    charon.stop()
    assert charon.exit_code == 0, charon.log_text()
    assert "SIGTERM received, shutting down" in charon.log_text()
    assert not Path(f"/proc/{pid}").exists()
    netns = command("ip", "netns", "list").stdout.split()
    assert charon.netns not in netns
    rooted = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "root")) == charon.rootfs:
                    rooted.append(proc.name)
    assert not rooted, f"processes still chrooted into the image: {rooted}"
    assert str(charon.rootfs) not in Path("/proc/self/mountinfo").read_text()
