"""Reading manifests: multi-document YAML, Secret decoding, finding the referenced Secret."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from controller.manifests import (
    ManifestError,
    decode_secret,
    find_secret,
    load_documents,
    parse_documents,
)

ROOT = Path(__file__).resolve().parents[2]


def test_multi_document_yaml_skips_empty_documents(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("---\na: 1\n---\n---\n# only a comment\n---\nb: [2]\n")
    assert load_documents(str(path)) == [{"a": 1}, {"b": [2]}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "a: [1\n", "m.yaml: not valid YAML: while parsing a flow sequence", id="syntax"
        ),
        pytest.param(
            "a: 1\na: 2\n", "m.yaml: not valid YAML: duplicate key 'a'", id="duplicate-key"
        ),
        pytest.param(
            "a: 1\n---\n- x\n",
            "m.yaml: document 2 is a list, not a Kubernetes object",
            id="not-a-mapping",
        ),
        pytest.param(
            "just text\n", "m.yaml: document 1 is a str, not a Kubernetes object", id="scalar"
        ),
    ],
)
def test_unreadable_documents_raise_with_the_file_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as raised:
        load_documents(str(path))
    assert str(raised.value).replace(str(tmp_path) + "/", "").startswith(message)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_documents(str(tmp_path / "absent.yaml"))


def test_binary_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError, match="cannot read"):
        load_documents(str(path))


def test_yaml_stays_safe() -> None:
    with pytest.raises(ManifestError):
        parse_documents("!!python/object/apply:os.system ['true']\n")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_decode_secret_merges_string_data_over_data() -> None:
    doc = {
        "data": {"tls.crt": b64("CERT"), "ca.crt": b64("OLD")},
        "stringData": {"ca.crt": "NEW"},
    }
    assert decode_secret(doc) == {"tls.crt": "CERT", "ca.crt": "NEW"}


def test_decode_secret_accepts_wrapped_base64() -> None:
    encoded = b64("x" * 100)
    wrapped = "\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20))
    assert decode_secret({"data": {"k": wrapped}}) == {"k": "x" * 100}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            {"data": {"tls.key": "not base64!"}}, "data.tls.key: not valid base64", id="bad-base64"
        ),
        pytest.param(
            {"data": {"tls.key": base64.b64encode(b"\xff\xfe").decode()}},
            r"data.tls.key: not UTF-8 text \(PEM expected\)",
            id="binary",
        ),
        pytest.param(
            {"data": {"tls.key": 5}}, "data.tls.key: expected a base64 string", id="not-string"
        ),
        pytest.param(
            {"data": ["x"]}, "Secret data and stringData must be mappings", id="data-not-mapping"
        ),
    ],
)
def test_decode_secret_errors_name_the_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        decode_secret(doc)


def test_find_secret_matches_name_and_namespace() -> None:
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "a"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "b"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "namespace": "c"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}},
    ]
    assert find_secret(docs, "s", "b") is docs[1]
    assert find_secret(docs, "s", "c") is None
    assert find_secret(docs, "t", "default") is docs[3]
    assert find_secret(docs, "u", "a") is None


def test_example_policy_file_holds_policy_and_secret() -> None:
    docs = load_documents(str(ROOT / "examples" / "policy.yaml"))
    assert [d["kind"] for d in docs] == ["IPsecPolicy", "Secret"]
    secret = find_secret(docs, "ipsec-credentials", "strongmesh-system")
    assert secret is not None
    assert set(decode_secret(secret)) == {"tls.crt", "tls.key", "ca.crt"}
