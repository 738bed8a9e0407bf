"""``strongmesh validate -f FILE...``: check manifests offline, before they are applied.

Every IPsecPolicy in the files is checked against the API models and the validation library;
the Secret it references is checked too when it is among the files (a note says so when it is
not). One line per problem::

    FILE: IPsecPolicy/NAME: spec.ike.proposals[0]: unknown keyword 'aes129' ...
    FILE: Secret/NAMESPACE/NAME: ca.crt: ...
    FILE: IPsecPolicy/NAME: spec.ipsecSubnets[1]: warning: ...

Errors carry no prefix, other severities are prefixed (``warning:``, ``info:``, ``note:``).
Exit status: 0 without errors (warnings allowed), 1 with errors, 2 when an input cannot be
read as YAML manifests.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DESCRIPTION = """\
Validate IPsecPolicy manifests (and the credentials Secret they reference) offline.
Checks field names and types, CIDRs and bypass subnets, strongSwan IKE/ESP proposals, and
the certificates: parse, CA bundle, chain, key match, duplicates, validity and expiry.
Prints one line per problem (FILE: Kind/name: field.path: problem); exits 0 when there are
no errors (warnings allowed), 1 when there are errors, 2 when a file cannot be read.
"""

EXIT_OK, EXIT_ERRORS, EXIT_UNREADABLE = 0, 1, 2
_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check IPsecPolicy manifests and their Secret offline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file (multi-document YAML), a directory of them, or - for stdin; "
        "repeatable",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (one line per problem, default) or json (for machines)",
    )


@dataclass(frozen=True)
class Problem:
    """A finding placed in a file and an object."""

    file: str
    object: str  # "IPsecPolicy/name", "Secret/ns/name" or "" (the file itself)
    severity: str
    path: str
    message: str
    code: str

    def line(self) -> str:
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        where = ": ".join(part for part in (self.file, self.object, self.path) if part)
        return f"{where}: {prefix}{self.message}"

    def to_json(self) -> dict[str, str]:
        return {
            "file": self.file,
            "object": self.object,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "code": self.code,
        }


def _expand(paths: list[str]) -> list[str]:
    """Files named, plus the manifests (.yaml/.yml/.json) directly inside named directories."""
    result: list[str] = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            result += sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if name.endswith(_MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(path, name))
            )
        else:
            result.append(path)
    return result


def _object_name(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return str(name) if name else "<unnamed>"


def _secret_ref(doc: Mapping[str, Any]) -> tuple[str, str] | None:
    spec = doc.get("spec")
    credentials = spec.get("credentials") if isinstance(spec, Mapping) else None
    ref = credentials.get("secretRef") if isinstance(credentials, Mapping) else None
    if not isinstance(ref, Mapping):
        return None
    name, namespace = ref.get("name"), ref.get("namespace")
    if isinstance(name, str) and isinstance(namespace, str) and name and namespace:
        return name, namespace
    return None


def check(files: list[str]) -> tuple[list[Problem], bool]:
    """All problems in the files, and whether some input could not be read."""
    from controller.manifests import ManifestError, decode_secret, find_secret, load_documents
    from controller.models.common import GROUP
    from controller.models.node import KIND as NODE_KIND
    from controller.models.policy import KIND, CertificateExpiry
    from controller.validation import validate_credentials, validate_policy_body

    problems: list[Problem] = []
    unreadable = False
    loaded: list[tuple[str, dict[str, Any]]] = []
    for path in _expand(files):
        try:
            loaded += [(path, doc) for doc in load_documents(path)]
        except ManifestError as exc:
            unreadable = True
            problems.append(Problem(path, "", "error", "", str(exc).removeprefix(f"{path}: "),
                                    "manifest.unreadable"))
    all_docs = [doc for _, doc in loaded]
    checked_secrets: set[tuple[str, str]] = set()

    policies = 0
    for path, doc in loaded:
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if not isinstance(kind, str) or not isinstance(api_version, str):
            problems.append(Problem(path, "", "error", "", "a document has no apiVersion/kind; "
                                    "not a Kubernetes object", "manifest.not-object"))
            continue
        if api_version.split("/")[0] == GROUP and kind not in (KIND, NODE_KIND):
            problems.append(Problem(path, f"{kind}/{_object_name(doc)}", "error", "kind",
                                    f"unknown {GROUP} kind {kind!r}; this version knows {KIND}"
                                    f" and {NODE_KIND}", "manifest.unknown-kind"))
            continue
        if kind != KIND:
            continue  # Secrets are checked through the policy that references them
        policies += 1
        label = f"{KIND}/{_object_name(doc)}"
        policy, findings = validate_policy_body(doc)
        problems += [Problem(path, label, f.severity, f.path, f.message, f.code) for f in findings]
        ref = _secret_ref(doc)
        if ref is None:
            continue
        name, namespace = ref
        secret = find_secret(all_docs, name, namespace)
        if secret is None:
            problems.append(Problem(
                path, label, "note", "spec.credentials.secretRef",
                f"Secret {namespace}/{name} is not among the files; credentials not checked",
                "credentials.not-checked"))
            continue
        if ref in checked_secrets:
            continue
        checked_secrets.add(ref)
        secret_file = next(p for p, d in loaded if d is secret)
        secret_label = f"Secret/{namespace}/{name}"
        expiry = policy.spec.certificate_expiry if policy else CertificateExpiry()
        try:
            data = decode_secret(secret)
        except ManifestError as exc:
            problems.append(Problem(secret_file, secret_label, "error", "", str(exc),
                                    "credentials.decode"))
            continue
        _, findings = validate_credentials(data, expiry)
        problems += [Problem(secret_file, secret_label, f.severity, f.path, f.message, f.code)
                     for f in findings]
    if policies == 0 and not problems:
        problems.append(Problem(", ".join(files), "", "note", "",
                                f"no {KIND} found; nothing was checked", "manifest.empty"))
    return problems, unreadable


def run(args: argparse.Namespace) -> int:
    import json

    problems, unreadable = check(list(args.files))
    errors = sum(p.severity == "error" for p in problems)
    warnings = sum(p.severity == "warning" for p in problems)
    status = EXIT_UNREADABLE if unreadable else EXIT_ERRORS if errors else EXIT_OK
    if args.output == "json":
        report = {
            "valid": status == EXIT_OK,
            "errors": errors,
            "warnings": warnings,
            "exitCode": status,
            "problems": [p.to_json() for p in problems],
        }
        print(json.dumps(report, indent=2))
    else:
        for problem in problems:
            print(problem.line())
        verdict = "invalid" if status else "valid"
        print(f"strongmesh validate: {verdict} ({errors} error(s), {warnings} warning(s))",
              file=sys.stderr)
    return status
