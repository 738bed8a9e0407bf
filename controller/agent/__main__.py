"""``python -m controller.agent ...`` = ``strongmesh agent ...``, importing only the agent.

The lab starts agents this way inside user-mode-linux, where every import costs: the full CLI
would import every subcommand module first.
"""

import argparse
import sys

from controller.cli import agent

parser = argparse.ArgumentParser(prog="strongmesh")
agent.add_parser(parser.add_subparsers(dest="command", required=True))
sys.exit(agent.run(parser.parse_args(["agent", *sys.argv[1:]])))
