"""An embedded Kubernetes API server for tests and the lab (in-memory, plain HTTP).

It behaves like kube-apiserver for what kopf, the official ``kubernetes`` client and
``kubectl`` use here, so that code tested against it works against a real cluster.
One module per responsibility:

- ``resources``/``registry``: served types (built-ins and CRDs), ``discovery``, ``openapi``;
- ``store``: objects, the global resourceVersion, bounded history for watch resume;
- ``lifecycle``: create/update/delete rules (metadata, generation, status subresource,
  finalizers, optimistic concurrency); ``builtins``: defaults and checks of built-in kinds;
  ``schema``: pruning, defaulting, validation (``formats``, ``cel``);
- ``patch``: JSON, merge, strategic-merge and apply patches; ``selectors``; ``watch``;
  ``table`` and ``jsonpath``: server-side printing;
- ``api``: the operations over the store; ``handlers``: HTTP (``protobuf``: the request
  bodies kubectl's ``create secret|configmap|namespace`` send); ``server``: running it.

Not implemented (a real cluster differs here): CEL beyond the subset in ``cel`` (rules using
more are skipped), conversion webhooks, admission, authentication/authorization,
field-ownership conflicts of server-side apply, ``limit``/``continue`` paging (lists are
returned whole, which the API allows), ``events.k8s.io``, persistence.

Use ``ServerThread.call`` to touch the ``Api`` from another thread: the store belongs to the
server's event loop.
"""

from controller.apiserver.server import Server, ServerThread, kubeconfig, serve, write_kubeconfig

__all__ = ["Server", "ServerThread", "kubeconfig", "serve", "write_kubeconfig"]
