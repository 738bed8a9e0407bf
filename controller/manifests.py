"""Reading manifests: multi-document YAML files, the Secrets inside them, the fields of a Node.

Used by ``strongmesh validate``, by the agent (both modes) and by the operator. Duplicate
mapping keys are rejected (PyYAML would silently keep the last one, hiding a mistake the API
server refuses).
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(Exception):
    """Input that cannot be read as manifests; the message says where and why."""


class _StrictLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader that refuses duplicate keys in a mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def parse_documents(text: str, source: str = "<input>") -> list[dict[str, Any]]:
    """The non-empty documents of a YAML stream; each must be a mapping."""
    try:
        raw = list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).replace('"<unicode string>"', "").split())
        raise ManifestError(f"{source}: not valid YAML: {detail}") from None
    documents: list[dict[str, Any]] = []
    for index, document in enumerate(raw):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ManifestError(
                f"{source}: document {index + 1} is a {type(document).__name__}, "
                "not a Kubernetes object"
            )
        documents.append(document)
    return documents


def load_documents(path: str) -> list[dict[str, Any]]:
    """Read a multi-document YAML file (``-`` reads standard input)."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    return parse_documents(text, path)


def decode_secret(doc: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's contents as text: ``data`` (base64) merged with ``stringData`` (which wins,
    as on the API server)."""
    result: dict[str, str] = {}
    data = doc.get("data") or {}
    string_data = doc.get("stringData") or {}
    if not isinstance(data, Mapping) or not isinstance(string_data, Mapping):
        raise ManifestError("Secret data and stringData must be mappings")
    for key, value in data.items():
        if not isinstance(value, str):
            raise ManifestError(f"data.{key}: expected a base64 string")
        try:
            raw = base64.b64decode("".join(value.split()), validate=True)
        except binascii.Error:
            raise ManifestError(f"data.{key}: not valid base64") from None
        try:
            result[str(key)] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"data.{key}: not UTF-8 text (PEM expected)") from None
    for key, value in string_data.items():
        if not isinstance(value, str):
            raise ManifestError(f"stringData.{key}: expected a string")
        result[str(key)] = value
    return result


def find_secret(
    docs: Iterable[Mapping[str, Any]], name: str, namespace: str
) -> dict[str, Any] | None:
    """The Secret ``namespace/name`` among the documents (a missing namespace counts as
    ``default``, as ``kubectl apply`` would place it)."""
    for doc in docs:
        if doc.get("kind") != "Secret" or doc.get("apiVersion") != "v1":
            continue
        metadata = doc.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            continue
        if metadata.get("name") == name and (metadata.get("namespace") or "default") == namespace:
            return doc if isinstance(doc, dict) else dict(doc)
    return None


def node_pod_cidrs(node: Mapping[str, Any]) -> list[str]:
    """A Node's ``spec.podCIDRs`` (``spec.podCIDR`` on a Node written before dual-stack)."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return [str(c) for c in cidrs]
