"""The kernel lab behind ``hack/lab``: user-mode-linux, a switch, lab nodes, probes, a report.

``host`` runs on the machine (boots the kernel, cleans up, builds the report); ``inside`` runs
as PID 1 inside user-mode-linux and imports only the standard library, because every import
there goes through hostfs and is slow. ``pcap`` and ``report`` are pure and unit-tested.

Inside, in order: filesystems, modules, switch ``sw0`` with ``node-1..N`` (10.77.0.i/24) and
``bystander`` (10.77.0.200) as network namespaces, ``tcpdump`` on the switch, one charon per
node (own mount namespace and /run, config from ``controller.strongswan.render_strongswan_conf``),
then the control plane of the mode (``standalone``: one ``python -m controller.agent`` per node
fed the policy file; ``static``: hand-written PSK configs, a self-check of the lab; a ``cluster``
mode would start an API server and the operator in ``Lab.start_control_plane``), wait until
every agent's status file shows the policy generations enforced, a warm-up probe round (SAs are
negotiated on demand), the ``main`` probe round, then the scenario's steps.

Probes are UDP datagrams with a unique token per ordered pair and round, re-sent every 0.25 s
until delivered or timed out. The report's ``traffic`` is the ``main`` round; ``rounds`` has
every round (``warmup``, ``main`` and those of ``probe`` steps), each row with ``seen``
(``esp``/``cleartext``/``none`` from the capture) and ``delivered``.

Scenario steps (``hack/lab run --steps FILE``, a JSON list; tests pass them directly):
``{"do": "probe", "label": L, "timeout": s}``, ``{"do": "flush_xfrm", "what":
"policy|state|all", "node"?}``, ``{"do": "restart_charon", "node"?, "signal"?: "TERM"}``,
``{"do": "kill_agent", "node"?, "signal"?: "KILL"}``, ``{"do": "start_agent", "node"?}``,
``{"do": "write_policy", "file": NAME}`` (a ``--file NAME=PATH`` copied into the lab),
``{"do": "wait_ready", "expected": {policy: generation}}``, ``{"do": "wait_policies"}``
(owned xfrm policies back to their count after ``main``), ``{"do": "wait_sas"}`` (ESP states
between every node pair), ``{"do": "wait_status",
"error_contains": TEXT, "node"?}``, ``{"do": "snapshot", "label": L}`` (xfrm states and
statuses), ``{"do": "sleep", "seconds": s}``, ``{"do": "measure_agents", "seconds": s}``,
``{"do": "measure_pass", "repeat": n}``. Without ``node`` a step acts on every lab node.
"""
