"""The lab kernel's own start: filesystems, the host's paths, kernel modules, ESP crypto.

Facts behind it (hostfs, the modules of Debian's user-mode-linux, the modprobe wrapper):
LAB-NOTES.md, "A real kernel with ESP".
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hack.labkit.lab.paths import HOST_ROOT, LOGS, MODULE_ROOT, SHARED, STATE, TMPFS_DIRS
from hack.labkit.lab.shell import sh


def mount_filesystems(hostdir: str, host_paths: Iterable[str]) -> None:
    """/proc, /sys, private tmpfs on ``TMPFS_DIRS``, the host's temp dir ``hostdir`` on
    ``SHARED`` (results, logs, capture) and the state dir."""
    os.system("mount -t proc proc /proc")
    sh("mount", "-t", "sysfs", "sys", "/sys")
    for path in TMPFS_DIRS:
        sh("mount", "-t", "tmpfs", "tmpfs", path)
    keep_host_paths_visible(host_paths)
    os.makedirs(SHARED)
    sh("mount", "-t", "hostfs", "none", SHARED, "-o", hostdir)
    os.makedirs(STATE)
    os.makedirs(LOGS, exist_ok=True)


def keep_host_paths_visible(host_paths: Iterable[str]) -> None:
    """The tmpfs mounts hide whatever the host has below /run, /tmp and /mnt, and the
    project or its virtualenv may live there (a CI clone can be anywhere): bind those
    paths back from a second, read-only view of the host's root."""
    hidden = sorted(
        path
        for path in set(host_paths)
        if any(path == d or path.startswith(d + "/") for d in TMPFS_DIRS)
    )
    if not hidden:
        return
    os.makedirs(HOST_ROOT)
    sh("mount", "-r", "-t", "hostfs", "none", HOST_ROOT, "-o", "/")
    bound: list[str] = []
    for path in hidden:
        if any(path == b or path.startswith(b + "/") for b in bound):
            continue
        os.makedirs(path, exist_ok=True)
        sh("mount", "--bind", HOST_ROOT + path, path)
        bound.append(path)


def load_modules() -> None:
    """The kernel modules the lab needs, and on-demand loading for the rest (ESP's crypto)."""
    version = os.uname().release
    moddir = f"{MODULE_ROOT}/lib/modules/{version}"
    os.makedirs(moddir)
    sh("mount", "--bind", f"/usr/lib/uml/modules/{version}", moddir)
    wrapper = "/run/modprobe"
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec /sbin/modprobe -d {MODULE_ROOT} "$@"\n')
    os.chmod(wrapper, 0o755)
    with open("/proc/sys/kernel/modprobe", "w") as f:
        f.write(wrapper)
    for module in ("veth", "bridge", "xfrm_user", "esp4", "esp6", "authenc", "gcm"):
        sh(wrapper, module)
    warm_crypto()


def warm_crypto() -> None:
    """Build the kernel's ESP transforms once, before any node negotiates.

    A lab artifact, not a product behaviour: the first SA of an algorithm makes this kernel
    set up its crypto (rfc4106/gcm/ctr/ghash, seqiv, the DRBG, ...), about 20 on-demand
    module requests, each a modprobe read through hostfs (~130 ms): ~3 s during which the
    installing charon blocks in the kernel holding the namespace's xfrm mutex. Measured as
    3.2 s first packet -> SA at 2 nodes with either end's trap, 0.12-0.23 s after warming.
    On a real node the same setup costs milliseconds, once per boot. So one throw-away SA
    per algorithm the lab's policies use is added and removed here, in the root namespace.
    """
    key = "0x" + "11" * 20
    for algorithm in (
        ("aead", "rfc4106(gcm(aes))", key, "128"),
        ("enc", "cbc(aes)", "0x" + "22" * 16, "auth-trunc", "hmac(sha256)",
         "0x" + "33" * 32, "128"),
    ):
        sh("ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto",
           "esp", "spi", "0x100", "mode", "transport", *algorithm)
        sh("ip", "xfrm", "state", "flush")
