"""The ``hcloud-flow`` command line: one subcommand a job, ``--help`` on each.

Exit codes: 0 success, 1 a run or job failed, 2 bad input (nothing was enqueued), 3 the service could not
be reached (Redis, the API).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 3


def _fakecloud(sub: argparse._SubParsersAction) -> None:
    from fakecloud import cli as fake_cli

    parser = sub.add_parser(
        "fakecloud",
        help="serve the Hetzner Cloud API simulator",
        description="Serve fakecloud, a faithful simulator of the Hetzner Cloud API, until interrupted.",
    )
    fake_cli.add_arguments(parser)
    parser.set_defaults(func=fake_cli.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcloud-flow",
        description="Run Hetzner Cloud server actions as durable Celery workflows.",
        epilog="Exit codes: 0 ok, 1 run failed, 2 bad input (nothing enqueued), 3 Redis or API unreachable.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _fakecloud(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
