"""charon over VICI: what strongmesh wants charon to hold, and the adapter that gets it there.

One module per responsibility (flannel's ``pkg/backend/ipsec`` layout):

- ``render``: policies + credentials + node facts -> ``DesiredCharon`` (pure: VICI message dicts).
- ``conf``: the ``strongswan.conf`` charon runs with (pure text).
- ``diff``: desired vs. what charon holds -> ``CharonPlan`` (pure; an unchanged connection is
  never reloaded, so its SAs stay up).
- ``sas``: ``list-sas`` events -> typed ``SecurityAssociation`` records (pure).
- ``vici_client``: the only module that talks to charon (PyPI ``vici``).
"""

from controller.strongswan.conf import DEFAULT_PLUGINS, render_strongswan_conf
from controller.strongswan.diff import ActualCharon, CharonPlan, conn_fingerprint, plan_changes
from controller.strongswan.render import (
    CONN_PREFIX,
    CharonPolicy,
    DesiredCharon,
    PeerLink,
    PodTunnel,
    cert_name,
    conn_name,
    key_id,
    policy_of_conn,
    render_charon,
)
from controller.strongswan.sas import parse_sas

__all__ = [
    "CONN_PREFIX",
    "DEFAULT_PLUGINS",
    "ActualCharon",
    "CharonPlan",
    "CharonPolicy",
    "DesiredCharon",
    "PeerLink",
    "PodTunnel",
    "cert_name",
    "conn_fingerprint",
    "conn_name",
    "key_id",
    "parse_sas",
    "plan_changes",
    "policy_of_conn",
    "render_charon",
    "render_strongswan_conf",
]
