"""One validation library for the CLI, the operator and the agent.

Pure decision code: no I/O, no clock unless injected, no subprocesses (the agent calls it inside
user-mode-linux, where every millisecond of CPU counts). Each check returns ``Finding`` objects
naming the field path, so callers choose how to present them (CLI lines, conditions, events).
"""

from controller.validation.credentials import (
    ExpiryLevel,
    IssuerCA,
    expiry_level,
    strongswan_dn,
    validate_credentials,
    validate_issuer,
)
from controller.validation.findings import Finding, Severity, has_errors
from controller.validation.policy import validate_policy_body
from controller.validation.proposals import Proposal, check_proposals, parse_proposals
from controller.validation.subnets import CidrError, check_subnets, parse_cidr

__all__ = [
    "CidrError",
    "ExpiryLevel",
    "Finding",
    "IssuerCA",
    "Proposal",
    "Severity",
    "check_proposals",
    "check_subnets",
    "expiry_level",
    "has_errors",
    "parse_cidr",
    "parse_proposals",
    "strongswan_dn",
    "validate_credentials",
    "validate_issuer",
    "validate_policy_body",
]
