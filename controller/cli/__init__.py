"""The ``strongmesh`` command.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``; heavy imports stay inside ``run`` so that ``--help`` and the agent
start fast (the lab runs agents inside user-mode-linux, where every import is slow).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from controller import __version__

# Subcommands in the order --help lists them.
SUBCOMMANDS = ("validate", "agent", "operator", "status", "drain")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strongmesh",
        description=(
            "strongmesh encrypts node-to-node traffic with IPsec (strongSwan). "
            "Policies are IPsecPolicy resources (strongmesh.io/v1alpha1)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"strongmesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"controller.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(f"controller.cli.{args.command}")
    result: int = module.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
