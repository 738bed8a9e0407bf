"""Where things live inside the lab's kernel (``boot`` mounts them).

``SHARED`` is the host's temp dir through hostfs: whatever is written there (results, logs,
the capture) outlives the lab. ``STATE`` is a tmpfs every network namespace sees: the nodes'
sockets and status files, the policy file of standalone mode.
"""

SHARED = "/mnt/lab"  # the host's temp dir, writable through hostfs
LOGS = f"{SHARED}/logs"
TMPFS_DIRS = ("/run", "/tmp", "/mnt")  # private and writable inside the lab
HOST_ROOT = "/run/host-root"  # the host's root again, to bind back paths the tmpfs hide
MODULE_ROOT = "/run/modroot"
STATE = "/mnt/state"  # per-node sockets and status files (tmpfs, visible to every namespace)
POLICY_FILE = f"{STATE}/policy.yaml"  # standalone mode: what every agent reads
