"""Which policies the node enforces this pass: the inputs, or the last good state. Pure.

A bad input (unreadable file, API outage, a policy whose credentials do not validate) must
never tear down what works: the node keeps enforcing the last generation that was good and
reports why the newer one is not applied. Only a policy that is gone from valid inputs (no
longer selects the node, or deleted) is dropped, which is what tears its state down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from controller.agent.interfaces import AgentInputs, PolicyInput
from controller.facts import NodeCredentials
from controller.models.node import EnforcedPolicy
from controller.models.peers import Peer
from controller.models.policy import CertificateExpiry, IPsecPolicy
from controller.scope import node_address_for

# (secret data, expiry thresholds) -> (credentials, or None with the problems that refuse them)
CredentialCheck = Callable[
    [Mapping[str, str], CertificateExpiry], tuple[NodeCredentials | None, list[str]]
]


@dataclass(frozen=True)
class GoodPolicy:
    """A policy generation that validated, with its credentials: what the node enforces."""

    policy: IPsecPolicy
    generation: int
    credentials: NodeCredentials
    peers: tuple[Peer, ...] = ()  # as the latest inputs list them

    @property
    def name(self) -> str:
        return self.policy.metadata.name


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving one pass's inputs against the last good state."""

    enforce: tuple[GoodPolicy, ...]  # name order
    policies: tuple[EnforcedPolicy, ...]  # what the status says about each policy
    errors: tuple[str, ...]
    last_good: Mapping[str, GoodPolicy] = field(default_factory=dict)


def resolve(
    inputs: AgentInputs,
    last_good: Mapping[str, GoodPolicy],
    credential_check: CredentialCheck,
) -> Resolution:
    """Decide what to enforce from the inputs, falling back per policy to the last good state."""
    if inputs.errors:
        # Nothing trustworthy to compare with: keep everything as it is.
        kept = tuple(sorted(last_good.values(), key=lambda g: g.name))
        return Resolution(
            enforce=kept,
            policies=tuple(
                EnforcedPolicy(
                    name=g.name, generation=g.generation, enforcing=True,
                    message="inputs unavailable; enforcing the last good generation",
                )
                for g in kept
            ),
            errors=tuple(inputs.errors),
            last_good=dict(last_good),
        )

    enforce: list[GoodPolicy] = []
    statuses: list[EnforcedPolicy] = []
    errors: list[str] = []
    good: dict[str, GoodPolicy] = {}
    for item in sorted(inputs.policies, key=lambda p: p.policy.metadata.name):
        name = item.policy.metadata.name
        if item.deleting:
            continue  # tear down: not enforced, not reported
        if node_address_for(item.policy.spec, inputs.node) is None:
            statuses.append(
                EnforcedPolicy(
                    name=name, generation=item.generation, enforcing=False,
                    message=f"node {inputs.node.name} has no address inside ipsecSubnets "
                    f"({', '.join(inputs.node.addresses) or 'no addresses'})",
                )
            )
            continue
        problems, creds = _check(item, credential_check)
        if creds is not None:
            entry = GoodPolicy(item.policy, item.generation, creds, item.peers)
            good[name] = entry
            enforce.append(entry)
            statuses.append(EnforcedPolicy(name=name, generation=item.generation))
            continue
        message = "; ".join(problems)
        errors.append(f"policy {name} generation {item.generation}: {message}")
        previous = last_good.get(name)
        if previous is not None:
            previous = replace(previous, peers=item.peers)
            good[name] = previous
            enforce.append(previous)
            statuses.append(
                EnforcedPolicy(
                    name=name, generation=previous.generation, enforcing=False,
                    message=f"generation {item.generation} not applied ({message}); "
                    f"enforcing generation {previous.generation}",
                )
            )
        else:
            statuses.append(
                EnforcedPolicy(
                    name=name, generation=item.generation, enforcing=False, message=message
                )
            )
    return Resolution(
        enforce=tuple(enforce),
        policies=tuple(statuses),
        errors=tuple(errors),
        last_good=good,
    )


def _check(
    item: PolicyInput, credential_check: CredentialCheck
) -> tuple[list[str], NodeCredentials | None]:
    problems = list(item.input_errors)
    if item.secret_data is None:
        ref = item.policy.spec.credentials.secret_ref
        if ref is not None and not problems:
            problems.append(f"Secret {ref.namespace}/{ref.name} not found")
        elif not problems:
            problems.append("no credentials for this node yet")
        return problems, None
    creds, cred_problems = credential_check(item.secret_data,
                                            item.policy.spec.certificate_expiry)
    problems += cred_problems
    return problems, (None if problems else creds)
