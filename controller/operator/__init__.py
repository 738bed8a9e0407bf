"""The strongmesh operator (kopf): from IPsecPolicy + Secret + Node + IPsecNode to policy status.

Modules, one responsibility each:
- ``records``: PURE. Each watched policy and Secret parsed once, on arrival; invalid ones too.
- ``status``: PURE. IPsecNode objects + Nodes -> IPsecPolicy.status (summary, rows, conditions).
- ``verdicts``: PURE. The policy's Secret judged through the shared validation library.
- ``overlap``: PURE. Policies whose ipsecSubnets overlap on a node they both select.
- ``evaluation``: PURE. One policy's status, status patch, and what its Events should say.
- ``events``: PURE. Which Kubernetes Events to post, given what was already posted; their bodies.
- ``peers``: PURE. A policy's peers and the IPsecPeerSlice writes that publish it.
- ``finalizer``: PURE. When to add and remove the teardown finalizer, and the patches.
- ``schedule``: PURE. When each dirty policy may be looked at again, and when its status may
  be written: news at once, progress paced by the number of rows.
- ``throttle``: at most one status write per policy per interval, however many updates arrive.
- ``metrics``: Prometheus gauges fed from the computed status.
- ``state``: the in-memory view of the cluster that the watch handlers keep current.
- ``reconciler``: the I/O: read the state, call the pure modules, write, log; GC of IPsecNodes.
- ``signer``, ``secrets``: CSR signing; watches on exactly the referenced Secrets.
- ``handlers``: thin kopf registrations feeding the ``PolicyReconciler``.
- ``run``: start kopf programmatically (also in a thread of its own, for tests).
"""
