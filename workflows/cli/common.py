"""What every command group shares: exit codes, ``--json`` output, the workflow parameter flags, waits.

Exit codes (the README's table): 0 success, 1 a run or job failed or was cancelled, 2 bad input (nothing was
enqueued), 3 Redis, the workers or the API could not be reached, 4 a wait ended before the run or job did
(it goes on), 130 interrupted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import click

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STILL_RUNNING",
    "EXIT_UNREACHABLE",
    "SECONDS",
    "StoppedWaiting",
    "check_wait_flags",
    "exit_for",
    "flag_of",
    "json_option",
    "notify_option",
    "param_options",
    "params_from",
    "print_json",
    "project_name",
    "project_option",
    "runs",
    "split_servers",
    "submit_timeout_option",
    "wait_options",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_STILL_RUNNING = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130

# States that end a run or job badly: reading one exits 1 as waiting for it would (running ones exit 0).
_BAD_ENDS = frozenset({"failed", "cancelled", "completed_with_failures"})


def exit_for(*states: str) -> int:
    """The exit code for runs or jobs in these states, the same for `status` as for `--wait`."""
    return EXIT_FAILED if _BAD_ENDS.intersection(states) else EXIT_OK


def shown(text: Any) -> str:
    """Return text from the API fit for one table cell: control characters (escape sequences, newlines) as
    escapes, so an image description cannot move the cursor, retitle the terminal or fake a row."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def print_json(value: Any) -> None:
    """Print an answer as JSON, a rebuild's user data as its fingerprint: a job or window holding the text
    printed it, password and all, into terminals and CI logs (an outside test), where the web shows the
    fingerprint."""
    from workers.user_data import without_user_data

    click.echo(json.dumps(without_user_data(value), indent=2, sort_keys=True, default=str))


def runs() -> Any:
    """The Python API the commands drive (imported late: ``--help`` needs neither Celery nor Redis)."""
    from workflows.api import default

    return default()


class Seconds(click.ParamType):
    """A wait in seconds, finite and above 0 (a wait of 0 or nan cannot be kept)."""

    name = "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r}: give a number of seconds above 0", param, ctx)
        return seconds


SECONDS = Seconds()


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="print JSON for scripts (refusals too)",
    )(f)


def wait_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--wait``, ``--timeout`` and ``--quiet``, worded for a run or a job."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--quiet", is_flag=True, help="with --wait: no live progress")(f)
        f = click.option(
            "--timeout",
            type=SECONDS,
            default=None,
            help=f"with --wait: stop waiting after SECONDS (exit 4; the {what} goes on)",
        )(f)
        return click.option("--wait", is_flag=True, help=f"wait for the {what}, showing live progress")(f)

    return decorate


class StoppedWaiting(Exception):
    """Ctrl-C during a wait: what was submitted goes on, and the message says how to follow it."""

    def __init__(self, what: str, ident: str, follow: str) -> None:
        super().__init__(f"stopped waiting; {what} {ident} goes on: `{follow}` follows it")
        self.what, self.ident, self.follow = what, ident, follow


def check_wait_flags(wait: bool, timeout: float | None, quiet: bool) -> None:
    """--timeout and --quiet say how to wait: without --wait they would be ignored, so refuse them."""
    from workers.errors import BadInput

    if not wait and (timeout is not None or quiet):
        raise BadInput("--timeout and --quiet go with --wait", "wait")


def notify_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--notify",
        multiple=True,
        metavar="URL",
        help="webhook told when it starts and ends (repeatable; slack+https://… for Slack's format)",
    )(f)


def project_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: a ``--project`` value checked by the one rule for project names."""
    from workers.projects import check_project_name

    return None if value is None else check_project_name(value, "--project")


def project_option(f: Callable[..., Any], *, envvar: bool = True) -> Callable[..., Any]:
    """``--project NAME``; with ``envvar``, $HCLOUD_FLOW_PROJECT when it is not given (not for what is
    stored and edited later, a window: an edit must not move it because of a shell's setting)."""
    return click.option(
        "--project",
        metavar="NAME",
        envvar="HCLOUD_FLOW_PROJECT" if envvar else None,
        callback=project_name,
        help="the project to act in (default: $HCLOUD_FLOW_PROJECT, else the workers' default project)"
        if envvar
        else "the project the window acts in (add: the workers' default project)",
    )(f)


def submit_timeout_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--submit-timeout",
        type=SECONDS,
        default=60.0,
        show_default=True,
        help="seconds to wait for a worker to answer",
    )(f)


def flag_of(param: Any) -> str:
    """Return the command-line flag of a workflow parameter: one rule for the options and the listings."""
    if param.kind is dict:
        return "--label"  # repeatable KEY=VALUE
    if param.kind is list:
        return "--ssh-key"  # repeatable ID|NAME
    return "--" + param.name.replace("_", "-")


def _key_value(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    keys: set[str] = set()
    for text in values:
        key, eq, _ = text.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", ctx, param)
        if key in keys:
            # The last one silently won, where HTTP refuses a key named twice.
            raise click.BadParameter(f"{key!r} is given twice", ctx, param)
        keys.add(key)
    return values


def param_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per workflow parameter (the union over all workflows; each run checks its own).

    The options only carry values: their rules (types, ranges, choices) are the parameter table's, checked
    by ``workflows.validate.check_params`` as for every other entry point.
    """
    from workflows.definitions import WORKFLOWS

    seen: dict[str, Any] = {}
    for wf in WORKFLOWS.values():
        for p in wf.params:
            seen.setdefault(p.name, p)
    for p in reversed(list(seen.values())):
        dest = f"p_{p.name}"
        if p.kind is bool:
            option = click.option(flag_of(p), dest, is_flag=True, default=False, help=p.help)
        elif p.kind is dict:
            option = click.option(
                flag_of(p),
                dest,
                multiple=True,
                metavar="KEY=VALUE",
                callback=_key_value,
                help=p.help + ", e.g. purpose=backup (repeatable)",
            )
        elif p.kind is list:
            option = click.option(
                flag_of(p), dest, multiple=True, metavar="ID|NAME", help=p.help + " (repeatable)"
            )
        elif p.kind is int:
            option = click.option(flag_of(p), dest, type=int, metavar="N", help=p.help)
        elif p.kind == (int, float):
            option = click.option(flag_of(p), dest, type=float, metavar="SECONDS", help=p.help)
        else:
            option = click.option(flag_of(p), dest, metavar=p.name.upper(), help=p.help)
        f = option(f)
    return f


def params_from(options: dict[str, Any]) -> dict[str, Any]:
    """Return the workflow parameters given on the command line, in the Python API's shapes."""
    from workers.ids import is_id

    out: dict[str, Any] = {}
    for key, value in options.items():
        if not key.startswith("p_") or value is None or value is False or value == ():
            continue
        name = key[2:]
        if name == "labels":
            value = dict(v.partition("=")[::2] for v in value)
        elif name == "ssh_keys":
            value = [int(v) if is_id(v) else v for v in value]
        elif name == "image" and is_id(value):
            value = int(value)
        elif name == "user_data" and value.startswith("@"):
            value = _read_file(value[1:], "--user-data")
        out[name] = value
    return out


def _read_file(path: str, flag: str) -> str:
    """Read ``@FILE`` for an option, or refuse with what went wrong (nothing is sent)."""
    from workers.errors import BadInput

    try:
        # As the file holds it: text mode turned CRLF into LF, and a job's user data given again from the
        # same file then failed its fingerprint (a reviewer).
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read(1024 * 1024)
    except UnicodeDecodeError:
        raise BadInput(f"{flag} @{path}: not UTF-8 text", flag) from None
    except OSError as exc:
        raise BadInput(f"{flag} @{path}: {exc.strerror or exc}", flag) from None


def split_servers(text: str | None) -> list[int | str] | None:
    """``1,2,srv-7`` as ids and names (empty entries dropped; the rules that follow refuse an empty list)."""
    from workers.ids import is_id

    if text is None:
        return None
    return [int(s) if is_id(s) else s for s in (p.strip() for p in text.split(",")) if s]
