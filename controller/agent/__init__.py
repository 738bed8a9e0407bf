"""The node agent: makes the node's charon and kernel xfrm state match the policies that select it.

One reconcile pass = read inputs -> render desired -> read actual -> diff -> apply -> report.
Inputs come from the Kubernetes API (``kube``) or from a policy file (``files``); both satisfy
``interfaces.InputSource``, and status goes to an ``interfaces.Reporter``.
"""
