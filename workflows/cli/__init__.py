"""The ``hcloud-flow`` command line, on click: one module per command group, ``--help`` on each,
``--json`` on reads (refusals included), the same exit codes everywhere (``common.py`` lists them).

``main`` is the console script; ``cli`` is the click group (tests drive it with click's CliRunner).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from . import fleet, health, inventory, runs, schedule, services, web
from .common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STILL_RUNNING,
    EXIT_UNREACHABLE,
    StoppedWaiting,
    print_json,
)

__all__ = ["cli", "main"]


class _Root(click.Group):
    """The root group: turns every way a command can stop into its exit code and a message that is true."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        argv = list(sys.argv[1:] if args is None else args)
        code = self._run(argv, prog_name or "hcloud-flow", **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, argv: list[str], prog_name: str, **extra: Any) -> int:
        as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
        try:
            code = super().main(argv, prog_name, standalone_mode=False, **extra)
            return int(code or 0)
        except click.exceptions.Exit as exc:  # --help and friends
            return int(exc.exit_code)
        except click.UsageError as exc:
            if as_json:
                return _refuse(True, exc, EXIT_BAD_INPUT, exc.format_message())
            exc.show()
            return EXIT_BAD_INPUT
        except click.ClickException as exc:
            return _refuse(as_json, exc, EXIT_BAD_INPUT, exc.format_message())
        except StoppedWaiting as exc:
            return _refuse(as_json, exc, EXIT_INTERRUPTED, "\n" + str(exc), ident={exc.what: exc.ident})
        except click.Abort:  # Ctrl-C, which click turns into Abort
            return _interrupted()
        except KeyboardInterrupt:
            return _interrupted()
        except BrokenPipeError:
            return _reader_gone()
        except SystemExit as exc:
            if isinstance(exc.code, str):  # a setting refused where it is read (celeryconfig)
                return _refuse(as_json, exc, EXIT_BAD_INPUT, exc.code)
            return int(exc.code or 0)
        except Exception as exc:  # sorted by what it means to the caller, else raised again
            return _classify(as_json, exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Caught here, before click's own handler turns it into exit 1 ("failed"): the reader went away.
            return _reader_gone()


def _classify(as_json: bool, exc: Exception) -> int:
    import redis
    from kombu.exceptions import OperationalError

    from workers.errors import BadInput, HcloudFlowError, SecretError, ServerBusy, StillRunning

    if isinstance(exc, BadInput | ServerBusy | SecretError):
        return _refuse(as_json, exc, EXIT_BAD_INPUT)
    if any(isinstance(e, redis.AuthenticationError) for e in (exc, exc.__cause__, exc.__context__)):
        # Reached, and refused: "cannot reach" with Redis's own words sent people after the network.
        return _refuse(
            as_json,
            exc,
            EXIT_UNREACHABLE,
            f"Redis refused our credentials ({exc}): give its password in HCLOUD_FLOW_REDIS_PASSWORD or "
            "HCLOUD_FLOW_REDIS_PASSWORD_FILE, or in HCLOUD_FLOW_REDIS_URL",
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OperationalError):
        return _refuse(
            as_json, exc, EXIT_UNREACHABLE, f"cannot reach Redis ({exc}); check HCLOUD_FLOW_REDIS_URL"
        )
    if isinstance(exc, StillRunning):
        return _refuse(as_json, exc, EXIT_STILL_RUNNING)
    if isinstance(exc, HcloudFlowError):
        return _refuse(as_json, exc, EXIT_UNREACHABLE)
    raise exc


def _refuse(
    as_json: bool,
    exc: BaseException,
    code: int,
    message: str | None = None,
    ident: dict[str, str] | None = None,
) -> int:
    """Say why a command stopped (as JSON on stdout too, under --json) and return its exit code."""
    text = message or str(exc)
    click.echo(
        f"hcloud-flow: {text.lstrip()}" if not text.startswith("\n") else f"\nhcloud-flow: {text[1:]}",
        err=True,
    )
    if as_json:
        error = {"type": type(exc).__name__, "message": text.strip(), "exit_code": code}
        print_json({"error": {**error, **{k.replace(" ", "_") + "_id": v for k, v in (ident or {}).items()}}})
    return code


def _interrupted() -> int:
    click.echo(
        "\nhcloud-flow: stopped waiting; what was submitted goes on: `hcloud-flow list --active` shows it, "
        "`hcloud-flow status RUN_ID --wait` follows a run",
        err=True,
    )
    return EXIT_INTERRUPTED


def _reader_gone() -> int:
    # The reader went away (`hcloud-flow list | head -5`): not an error of ours. Point stdout at /dev/null so
    # the interpreter's final flush does not fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (CliRunner's capture): nothing to flush
        pass
    return EXIT_OK


@click.group(
    "hcloud-flow",
    cls=_Root,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="Exit codes: 0 ok; 1 a run or job failed or was cancelled; 2 bad input (nothing enqueued); "
    "3 Redis, workers or API unreachable; 4 a wait timed out (the run or job goes on); 130 interrupted. "
    "Settings come from the environment (see the README).",
)
def cli() -> None:
    """Run Hetzner Cloud server actions as durable Celery workflows."""


def _given_once(command: click.Command) -> None:
    """Make ``command`` and every command under it refuse an option that takes one value given twice.

    click keeps the last silently: `run reboot --server 1 --server 2` rebooted server 2 alone, and a window
    kept the second of two --cron (an outside test), where the HTTP API refuses a key given twice. Flags
    (--wait, --json) may be repeated: saying one twice means the same thing.
    """
    plain = command.parse_args

    def parse_args(ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:  # (shell completion parses half-typed lines)
            _, _, order = command.make_parser(ctx).parse_args(args=list(args))
            single = [p for p in order if isinstance(p, click.Option) and not (p.is_flag or p.multiple)]
            twice = next((p for p in single if single.count(p) > 1), None)
            if twice is not None:
                raise click.UsageError(f"{twice.opts[-1]} is given more than once; give it once", ctx)
        return plain(ctx, args)

    command.parse_args = parse_args  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _given_once(sub)


for _module in (runs, fleet, schedule, inventory, services, health, web):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
_given_once(cli)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, standalone_mode=False)
