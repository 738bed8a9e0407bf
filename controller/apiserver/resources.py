"""What the server serves: resource types, built-in and from CustomResourceDefinitions.

A ``ResourceType`` is one (group, version, plural). Objects are stored per (group, plural), so
every served version of a CRD sees the same objects (conversion strategy ``None``: only
``apiVersion`` changes, as for a CRD without a conversion webhook).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry of a CRD."""

    name: str
    type: str
    json_path: str
    description: str = ""
    format: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ResourceType:
    """One served (group, version, resource)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    # Custom resources: generation is maintained, status is dropped on create, updates must
    # carry a resourceVersion. Built-ins follow their own (simpler) strategies.
    custom: bool = False
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[PrinterColumn, ...] = ()
    selectable_fields: tuple[str, ...] = ()
    storage_version: bool = True
    # Field selector keys a built-in supports besides metadata.name/metadata.namespace.
    field_labels: tuple[str, ...] = ()
    # Built-ins with a spec that controllers reconcile (Deployment, DaemonSet) keep a generation.
    builtin_generation: bool = False

    @property
    def has_generation(self) -> bool:
        return self.custom or self.builtin_generation

    @property
    def key(self) -> str:
        """Storage key shared by all versions of the resource."""
        return f"{self.group}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


def _core(
    plural: str,
    kind: str,
    namespaced: bool,
    short: tuple[str, ...] = (),
    status: bool = False,
    fields: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    group: str = "",
    version: str = "v1",
    generation: bool = False,
) -> ResourceType:
    singular = kind.lower()
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=singular,
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        status_subresource=status,
        field_labels=fields,
        categories=categories,
        builtin_generation=generation,
    )


EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

BUILTINS: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, ("ns",), status=True, fields=("status.phase",)),
    _core("nodes", "Node", False, ("no",), status=True, fields=("spec.unschedulable",)),
    _core("secrets", "Secret", True, fields=("type",)),
    _core("configmaps", "ConfigMap", True, ("cm",)),
    _core("serviceaccounts", "ServiceAccount", True, ("sa",)),
    _core("events", "Event", True, ("ev",), fields=EVENT_FIELDS),
    _core("services", "Service", True, ("svc",), status=True, categories=("all",)),
    _core("leases", "Lease", True, group="coordination.k8s.io"),
    _core(
        "deployments",
        "Deployment",
        True,
        ("deploy",),
        status=True,
        categories=("all",),
        group="apps",
        generation=True,
    ),
    _core(
        "daemonsets",
        "DaemonSet",
        True,
        ("ds",),
        status=True,
        categories=("all",),
        group="apps",
        generation=True,
    ),
    _core("roles", "Role", True, group="rbac.authorization.k8s.io"),
    _core("rolebindings", "RoleBinding", True, group="rbac.authorization.k8s.io"),
    _core("clusterroles", "ClusterRole", False, group="rbac.authorization.k8s.io"),
    _core("clusterrolebindings", "ClusterRoleBinding", False, group="rbac.authorization.k8s.io"),
    ResourceType(
        group="apiextensions.k8s.io",
        version="v1",
        plural="customresourcedefinitions",
        singular="customresourcedefinition",
        kind="CustomResourceDefinition",
        namespaced=False,
        short_names=("crd", "crds"),
        status_subresource=True,
        categories=("api-extensions",),
        builtin_generation=True,
    ),
)

# Top-level fields of built-in kinds (the Go types' JSON names): others are unknown fields,
# rejected with fieldValidation=Strict and dropped otherwise, as decoding into Go structs does.
BUILTIN_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(("apiVersion", "kind", "metadata", *fields))
    for kind, fields in {
        "Namespace": ("spec", "status"),
        "Node": ("spec", "status"),
        "Secret": ("data", "stringData", "type", "immutable"),
        "ConfigMap": ("data", "binaryData", "immutable"),
        "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
        "Event": (
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        ),
        "Lease": ("spec",),
        "Service": ("spec", "status"),
        "Deployment": ("spec", "status"),
        "DaemonSet": ("spec", "status"),
        "Role": ("rules",),
        "ClusterRole": ("rules", "aggregationRule"),
        "RoleBinding": ("subjects", "roleRef"),
        "ClusterRoleBinding": ("subjects", "roleRef"),
        "CustomResourceDefinition": ("spec", "status"),
    }.items()
}

OBJECT_META_FIELDS = frozenset(
    (
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    )
)

# Group versions served for built-ins, in discovery order.
BUILTIN_GROUPS = (
    "",
    "apps",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "rbac.authorization.k8s.io",
)


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CRD serves (one per served version)."""
    spec = crd["spec"]
    names = spec["names"]
    served: list[ResourceType] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        columns = tuple(
            PrinterColumn(
                name=c["name"],
                type=c.get("type", "string"),
                json_path=c["jsonPath"],
                description=c.get("description", ""),
                format=c.get("format", ""),
                priority=int(c.get("priority", 0)),
            )
            for c in version.get("additionalPrinterColumns", [])
        )
        served.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", [])),
                categories=tuple(names.get("categories", [])),
                status_subresource="status" in (version.get("subresources") or {}),
                custom=True,
                schema=schema,
                printer_columns=columns,
                selectable_fields=tuple(
                    f["jsonPath"].lstrip(".") for f in version.get("selectableFields", [])
                ),
                storage_version=bool(version.get("storage", False)),
            )
        )
    return served
