"""Decoding the Kubernetes protobuf encoding for the few objects kubectl sends that way.

kubectl's imperative generators (``kubectl create secret|configmap|namespace``) POST with
``Content-Type: application/vnd.kubernetes.protobuf``: the bytes ``k8s\\0`` then a
``runtime.Unknown`` envelope whose ``raw`` field is the object in the Go type's protobuf
encoding. Only the fields of those three kinds (and ObjectMeta) are known here; other kinds are
answered 415 so that no field is ever silently lost.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"

# Field tables: number -> (json name, kind). Kinds: s=string, b=bytes, i=varint, ?=bool,
# ss=map<string,string>, sb=map<string,bytes>, rs=repeated string, m:<table>=message,
# rm:<table>=repeated message.
_OWNER_REF = {
    1: ("kind", "s"),
    3: ("name", "s"),
    4: ("uid", "s"),
    5: ("apiVersion", "s"),
    6: ("controller", "?"),
    7: ("blockOwnerDeletion", "?"),
}
_META = {
    1: ("name", "s"),
    2: ("generateName", "s"),
    3: ("namespace", "s"),
    5: ("uid", "s"),
    6: ("resourceVersion", "s"),
    7: ("generation", "i"),
    11: ("labels", "ss"),
    12: ("annotations", "ss"),
    13: ("ownerReferences", "rm:owner"),
    14: ("finalizers", "rs"),
}
_TABLES: dict[str, dict[int, tuple[str, str]]] = {
    "owner": _OWNER_REF,
    "meta": _META,
    "Secret": {
        1: ("metadata", "m:meta"),
        2: ("data", "sb"),
        3: ("type", "s"),
        4: ("stringData", "ss"),
        5: ("immutable", "?"),
    },
    "ConfigMap": {
        1: ("metadata", "m:meta"),
        2: ("data", "ss"),
        3: ("binaryData", "sb"),
        4: ("immutable", "?"),
    },
    "Namespace": {1: ("metadata", "m:meta"), 2: ("spec", "m:nsspec")},
    "nsspec": {1: ("finalizers", "rs")},
    "Unknown": {
        1: ("typeMeta", "m:typemeta"),
        2: ("raw", "b"),
        3: ("contentEncoding", "s"),
        4: ("contentType", "s"),
    },
    "typemeta": {1: ("apiVersion", "s"), 2: ("kind", "s")},
    "entry_ss": {1: ("key", "s"), 2: ("value", "s")},
    "entry_sb": {1: ("key", "s"), 2: ("value", "b")},
}


class ProtobufError(ValueError):
    """Bytes that are not a protobuf object this server can read."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _message(data: bytes, table_name: str) -> dict[str, Any]:
    table = _TABLES[table_name]
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in table:
            continue
        name, kind = table[number]
        if value in (b"", 0) and kind in ("s", "i"):
            continue  # gogo-proto writes unset optional scalars; JSON omits them
        if kind == "i":
            out[name] = value
        elif kind == "?":
            out[name] = bool(value)
        elif not isinstance(value, bytes):
            raise ProtobufError(f"field {name}: expected length-delimited data")
        elif kind == "s":
            out[name] = value.decode()
        elif kind == "b":
            out[name] = value
        elif kind == "rs":
            out.setdefault(name, []).append(value.decode())
        elif kind in ("ss", "sb"):
            entry = _message(value, f"entry_{kind}")
            item = entry.get("value", b"" if kind == "sb" else "")
            if kind == "sb":
                item = base64.b64encode(item).decode()
            out.setdefault(name, {})[entry.get("key", "")] = item
        elif kind.startswith("m:"):
            out[name] = _message(value, kind[2:])
        elif kind.startswith("rm:"):
            out.setdefault(name, []).append(_message(value, kind[3:]))
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded Secret, ConfigMap or Namespace."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf prefix")
    envelope = _message(body[len(MAGIC) :], "Unknown")
    type_meta = envelope.get("typeMeta", {})
    kind = type_meta.get("kind", "")
    if kind not in ("Secret", "ConfigMap", "Namespace"):
        raise ProtobufError(f"protobuf decoding of kind {kind!r} is not supported")
    obj = _message(envelope.get("raw", b""), kind)
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
