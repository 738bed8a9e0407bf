"""The kernel lab behind ``hack/lab``: user-mode-linux, a switch, lab nodes, probes, a report.

``host`` runs on the machine (boots the kernel, cleans up, builds the report); ``inside`` runs
as PID 1 inside user-mode-linux and imports only the standard library (and the pure
``controller.ownership``), because every import there goes through hostfs and is slow. Inside,
by responsibility: ``boot`` (filesystems, modules), ``netns``, ``topology`` (names and
addresses) and ``network`` (hosts, switch, pods), ``processes`` (capture, charon, agent),
``probes`` (rounds, streams), ``xfrm`` and ``charon_view`` (what kernels and charons hold),
``status`` (readiness), ``cluster`` and ``static`` (modes), and the scenario steps: ``steps``
(the registry: each kind's record and handler) and their families ``steps_*``. ``pcap`` and
``report`` are pure and unit-tested.

Inside, in order: filesystems, modules, switch ``sw0`` with ``node-1..N`` (10.77.0.i/24) and
``bystander`` (10.77.0.200) as network namespaces, with ``--pods`` (``LabOptions.pods``) the
pod hosts (below), ``tcpdump`` on the switch, one charon per node (own mount namespace and
/run, config from ``controller.strongswan.render_strongswan_conf``), then the control plane
of the mode, wait until ready, a warm-up probe round (SAs are
negotiated on demand), the ``main`` probe round, then the scenario's steps. Modes:
``cluster`` (the default; ``clusterhost.py`` on the host, ``cluster.py`` inside): a real
kube-apiserver + etcd (``hack/control-plane``) and the operator run on the host, bound to a tap
device that the lab's kernel bridges into a management network ``mgmt0`` (the node namespaces
join it on a second link, never on the switch); the chart's CRDs, RBAC and admission policy
are applied with kubectl, a Node object per lab node (labels ``strongmesh.io/lab-index:
"i"``, ``lab.strongmesh.io/group``: ``a``, ``b`` for the last node), and one cluster-mode
agent per node runs with its node's identity (the chart's agent ServiceAccount, token bound to
the Node); once every agent wrote its IPsecNode the policy file is applied through the API,
and ready means the policy's Ready condition is True for its generation as the API serves it;
the report's ``policy_status`` is the policy's ``.status`` as served (``policy_statuses``:
every policy of the file by name), ``control_plane`` the server's ``gitVersion`` and start
time, and ``kubectl`` holds what ``kubectl get ipsecpolicies,ipsecnodes`` and ``-o yaml``
printed (the kubectl built with the control plane). ``standalone``: one
agent per node fed the policy file, ready = every status file shows the generations
enforced. ``static``: hand-written PSK configs, a self-check of the lab.

Pods (off by default): node ``node-i`` owns pod CIDR 10.244.i.0/24 (also its Node's
``spec.podCIDR(s)`` in cluster mode, with or without pods) and holds a pod host
``node-i-pod``: a network namespace of its own, 10.244.i.10/24 on a veth whose node end is
``pods`` (10.244.i.1/24), default route via 10.244.i.1. Each node has ``ip_forward=1`` and a
route to every other node's pod CIDR via that node's switch address; the bystander routes
every pod CIDR via its node. Plain routing: no overlay, no NAT; pod hosts run no charon and no
agent. rp_filter is read in every namespace and a strict 1 made loose 2 (the lab kernel's
namespaces start with 0). ``results["pods"]`` / the report's ``pod_network`` keep the ``ip``
commands, the routes and the sysctls (found, now); the report's ``pods`` lists the pod hosts.

Probes are UDP datagrams with a unique token per ordered pair of hosts (nodes, pod hosts,
bystander) and round, re-sent every 0.25 s until delivered or timed out. The report's
``traffic`` is the ``main`` round; ``rounds`` has every round (``warmup``, ``main`` and those
of ``probe`` steps), each row with ``seen`` (``esp``/``cleartext``/``none`` from the capture)
and ``delivered``. ``esp`` means the token never crossed the switch in the clear and ESP went
between the hosts' *carriers* in the probe's window: a node or the bystander carries itself, a
pod host its node (``hosts`` in the report), so tunnelled pod traffic counts as ``esp`` only
with ESP between the two nodes; a pod and its own node never cross the switch (``none``).

Scenario steps (``hack/lab run --steps FILE``, a JSON list; tests pass them directly; the
basics are in ``steps_core.py``):
``{"do": "probe", "label": L, "timeout": s}``, ``{"do": "flush_xfrm", "what":
"policy|state|all", "node"?}``, ``{"do": "restart_charon", "node"?, "signal"?: "TERM"}``,
``{"do": "kill_agent", "node"?, "signal"?: "KILL"}``, ``{"do": "start_agent", "node"?}``,
``{"do": "write_policy", "file": NAME}`` (a ``--file NAME=PATH`` copied into the lab),
``{"do": "wait_ready", "expected": {policy: generation}}``, ``{"do": "wait_policies"}``
(owned xfrm policies back to their count after ``main``), ``{"do": "wait_sas"}`` (ESP states
between every node pair), ``{"do": "wait_one_sa_per_peer", "nodes"?: [...]}`` (exactly one ESP
state each way per pair of those nodes, none with a node outside them), ``{"do": "wait_status",
"error_contains": TEXT, "node"?}``, ``{"do": "snapshot", "label": L}`` (xfrm states and
statuses), ``{"do": "sleep", "seconds": s}``, ``{"do": "measure_agents", "seconds": s}``,
``{"do": "measure_pass", "repeat": n}``. Without ``node`` a step acts on every lab node; waits
also take ``"timeout"?: s``. Each kind is a frozen dataclass (every field and default in its
module; ``steps.REGISTRY`` maps each ``"do"`` to it and its handler): an unknown kind or field,
a missing field or a value of the wrong type fails the run before it boots, naming the step's
index, kind and field. Cluster mode adds (``steps_cluster.py``): ``{"do": "apply", "file":
NAME}`` (a ``--file`` manifest, created or replaced through the API), ``{"do": "delete",
"kind"?, "name"}``, ``{"do": "get", "kind"?, "name"}``, ``{"do": "wait_policy", "name",
"condition"?: "Ready", "status"?: "True", "message_contains"?}`` (for the policy's current
generation), ``{"do": "wait_gone", "name"}``, ``{"do": "kubectl", "args": [...], "label"?}``,
``{"do": "label_node", "node", "labels"}`` (a merge patch of the Node's labels),
``{"do": "owned_policies"}`` (xfrm policies in strongmesh's priority bands, per node),
``{"do": "wait_certificates", "policy", "issuer_contains", "subject"?}`` (until every node's
IPsecNode names, for that policy, a certificate from that issuer; ``subject`` e.g.
``"O=strongmesh, CN={node}"``); ``wait_status`` and ``snapshot`` read IPsecNodes. In cluster
mode each agent keeps its node's key and issued certificates (issuer mode) in ``<state
dir>/identity`` (``--identity-dir``).

Identities and trust (``steps_identity.py``):
``{"do": "start_stream", "label": L, "interval"?: 0.25, "nodes"?}``
sends in the background, until ``{"do": "stop_stream", "label": L, "grace"?: 2}``, every
``interval`` s one fresh datagram per ordered pair of nodes, each with a token of its own and
sent exactly once (port 7778; each records the step running when it was sent); the report's
``streams[L]`` lists every datagram with ``seen``/``delivered`` (as for probes), the lost and
the cleartext ones, and per step how many were sent, lost and seen in the clear.
``{"do": "wait_authorities", "cacerts": [TEXT...]}``: until every node's charon has loaded
exactly one authority (trusted CA) per TEXT (its subject contains it) and no other.
``{"do": "peer_cas"}``: per node, each IKE_SA charon holds with the CA that verified the peer's
certificate (from that IKE_SA's ``using trusted ca certificate`` line in the node's charon
log). ``{"do": "impostor", "identity": "node-3", "address": "10.77.0.2", "target": "node-1",
"port"?: 5000}``: a network namespace ``impostor`` holding the identity node's own certificate
and key claims ``address`` towards ``target`` over a veth of its own (``imp`` in the target,
which routes only replies to UDP ports 5000-5001 of ``address`` there, by an ``ip rule``), with
a charon of its own (IKE on 5000, NAT-T 5001) that initiates a transport connection to the
target; recorded: swanctl's output and exit code, the target's charon log lines for those
IKE_SAs, both sides' IKE_SAs before and after; the report's ``impostors`` says what the switch
carried between the claimed address and the target meanwhile (none of it).

MTU (``steps_mtu.py``): ``{"do": "mtu", "pairs": [[SRC, DST], ...], "sizes": [N, ...],
"timeout"?: 10}`` sends, per pair, one UDP datagram of each IPv4 packet size N with the
Don't-Fragment bit and the path MTU ignored, re-sent until delivered or timed out; recorded per
size whether it arrived, and per pair the largest size delivered, with the step's start and end
(the test reads the capture: ESP packet lengths and fragments meanwhile).
"""
