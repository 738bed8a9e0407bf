"""The strongmesh operator (kopf): from IPsecPolicy + Secret + Node + IPsecNode to policy status.

Modules, one responsibility each:
- ``status``: PURE. IPsecNode objects + Nodes -> IPsecPolicy.status (summary, rows, conditions).
- ``verdicts``: PURE. Credentials and spec checks through the shared validation library.
- ``overlap``: PURE. Policies whose ipsecSubnets overlap on a node they both select.
- ``events``: PURE. Which Kubernetes Events to post, given what was already posted.
- ``throttle``: at most one status write per policy per interval, however many updates arrive.
- ``metrics``: Prometheus gauges fed from the computed status.
- ``state``: the in-memory view of the cluster that the watch handlers keep current.
- ``reconciler``: the I/O glue: compute, write status, finalizer, events, garbage collection.
- ``handlers``: thin kopf registrations feeding ``state``.
- ``run``: start kopf programmatically (also in a thread of its own, for tests).
"""
