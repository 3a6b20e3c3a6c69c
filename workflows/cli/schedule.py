"""Maintenance windows: ``schedule add|edit|list|show|history|pause|resume|remove``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import click

from .common import (
    EXIT_OK,
    json_option,
    param_options,
    params_from,
    print_json,
    project_option,
    submit_timeout_option,
)

__all__ = ["COMMANDS"]


def _windows() -> Any:
    from workers.celery_app import app
    from workflows.api import default
    from workflows.windows import WindowStore

    return WindowStore(default().store.redis, app)


def _known(store: Any, name: str) -> dict[str, Any]:
    from workers.errors import NotFound

    window = store.get(name)
    if window is None:
        raise NotFound(f"no window named {name!r}; `hcloud-flow schedule list` shows them", "name")
    return dict(window)


def _show(answer: Any, as_json: bool) -> None:
    """A window (or an answer about one): JSON under --json, else one "field  value" line each."""
    import json

    from workers.user_data import without_user_data

    if as_json:
        print_json(answer)
        return
    for key, value in without_user_data(answer).items():
        if key == "history":
            click.echo("history:" if value else "history: none yet")
            for h in value:
                what = h.get("job_id") or h.get("reason") or ""
                click.echo(f"  {h.get('local', ''):<22} {h.get('outcome', ''):<16} {what}")
            continue
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        click.echo(f"{key + ':':<26} {shown}")


@click.group("schedule")
def schedule_group() -> None:
    """Maintenance windows: a cron schedule that starts a fleet job while the window is open."""


def _window_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The fields of a window; on `edit`, only those given change."""
    f = param_options(json_option(f))  # listed after the window's own options in --help
    for option in reversed(
        (
            click.option("--cron", help="five-field cron in the window's time zone, e.g. '0 3 * * SUN'"),
            click.option("--tz", help="IANA time zone of the cron (add: default UTC)"),
            click.option("--duration", help="how long the window stays open, e.g. 2h"),
            click.option("--cutoff", help="no new server starts this long before the end, e.g. 30m (add: 0)"),
            click.option("--selector", help="label selector of the servers (replaces --servers)"),
            click.option("--servers", help="comma-separated server ids or names (replaces --selector)"),
            click.option(
                "--max-concurrency", metavar="N|P%", help="servers in flight at most (add: default 1)"
            ),
            click.option(
                "--max-errors", metavar="N|P%", help="stop starting servers past this (add: default 0)"
            ),
            click.option("--canary", type=click.IntRange(min=0), metavar="N", help="add: default 0"),
            click.option(
                "--max-per-placement-group",
                type=click.IntRange(min=0),
                metavar="N",
                help="servers of one placement group in flight at most (add: no limit; edit: 0 removes it)",
            ),
            click.option(
                "--max-per-location",
                type=click.IntRange(min=0),
                metavar="N",
                help="servers of one location in flight at most (add: no limit; edit: 0 removes it)",
            ),
            click.option(
                "--approve-before-start/--no-approve-before-start",
                default=None,
                help="each firing's job waits for `job approve` before any server starts (add: no)",
            ),
            click.option(
                "--approve-after-canary/--no-approve-after-canary",
                default=None,
                help="each firing's job waits for `job approve` after its canary wave (add: no)",
            ),
            click.option(
                "--health-check",
                metavar="URL",
                help="after each server: http://{ipv4}:8080/healthz or tcp://{ipv4}:22 must be healthy "
                "(edit: '' removes it)",
            ),
            click.option("--health-timeout", metavar="DURATION", help="to become healthy (add: 5m)"),
            click.option("--health-settle", metavar="DURATION", help="to stay healthy (add: 30s)"),
            click.option(
                "--drain/--no-drain",
                default=None,
                help="take each server out of its load balancers during its run (add: no)",
            ),
            click.option(
                "--block-on",
                multiple=True,
                metavar="URL",
                help="no new server starts while URL answers non-2xx or lists alerts (edit: replaces; '' "
                "removes them)",
            ),
            click.option(
                "--notify",
                multiple=True,
                metavar="URL",
                help="webhook told of each firing and its job (repeatable; edit: replaces, '' removes them)",
            ),
            click.option(
                "--approval-timeout",
                metavar="DURATION",
                help="cancel if no approval comes within this long (add: 1h; never past the window)",
            ),
            click.option(
                "--no-check",
                is_flag=True,
                help="store without asking the API that the servers and image exist",
            ),
            submit_timeout_option,
        )
    ):
        f = option(f)
    return f


def _given(name: str, workflow: str | None, options: dict[str, Any], *, edit: bool) -> dict[str, Any]:
    """Return the window fields given on the command line (only those: an edit keeps the rest)."""
    from workers.errors import BadInput

    given: dict[str, Any] = {"name": name}
    if workflow:
        given["workflow"] = workflow
    for field in (
        "project",
        "cron",
        "tz",
        "duration",
        "cutoff",
        "max_concurrency",
        "max_errors",
        "canary",
        "max_per_placement_group",
        "max_per_location",
        "approve_before_start",
        "approve_after_canary",
        "approval_timeout",
        "health_check",
        "health_timeout",
        "health_settle",
        "drain",
    ):
        if options.get(field) is not None:
            given[field] = options[field]
    if options.get("selector") is not None and options.get("servers") is not None:
        raise BadInput("give --selector or --servers, not both")
    if options.get("selector") is not None:
        given.update(selector=options["selector"], servers=None)
    if options.get("servers") is not None:
        given.update(servers=[s.strip() for s in options["servers"].split(",")], selector=None)
    params = params_from(options)
    if params:
        given["params"] = params
    if options.get("notify"):
        given["notify"] = [u for u in options["notify"] if u != ""]  # --notify '' removes them
    if options.get("block_on"):
        given["block_on"] = [u for u in options["block_on"] if u != ""]  # --block-on '' removes them
    if given.get("health_check") == "":
        given["health_check"] = None  # its settings go with it (windows.edited)
    for field in ("max_per_placement_group", "max_per_location"):
        if edit and given.get(field) == 0:
            given[field] = None  # an edit's 0 removes the limit; an add's 0 meets the rule (at least 1)
    return given


def _save(name: str, workflow: str | None, options: dict[str, Any], *, edit: bool) -> int:
    import time

    from workers.errors import BadInput
    from workflows.api import check_window_at_the_api, default_submitter
    from workflows.windows import edited, validate_window, window_fields, with_next_firing

    store = _windows()
    record = _known(store, name) if edit else {}
    given = _given(name, workflow, options, edit=edit)
    for param in options.get("unset") or ():
        if (given.get("params") or {}).get(param) is not None:
            raise BadInput(f"--unset {param} and a value for {param} at once: give one", "params")
        given.setdefault("params", {})[param] = None  # back to its default
    # add: the model's defaults fill the rest; edit: the rest stays, parameters one by one.
    window = validate_window(edited(window_fields(record), given) if edit else given)
    if not options["no_check"]:
        check_window_at_the_api(window, options["submit_timeout"])
    based_on = record.get("revision", 0) if edit else None
    saved = store.save(window, replace=edit, by=default_submitter(), based_on=based_on)
    _show(with_next_firing(saved, time.time()), options["as_json"])
    return EXIT_OK


@schedule_group.command("add")
@click.argument("name")
@click.argument("workflow")
@project_option
@_window_options
def schedule_add(name: str, workflow: str, **options: Any) -> int:
    """Add window NAME that runs WORKFLOW (needs --cron, --duration and --selector or --servers)."""
    return _save(name, workflow, options, edit=False)


@schedule_group.command("edit")
@click.argument("name")
@click.argument("workflow", required=False)
# No $HCLOUD_FLOW_PROJECT here: an edit of the cron must not move a window to the shell's project.
@partial(project_option, envvar=False)
@_window_options
@click.option(
    "--unset",
    multiple=True,
    metavar="PARAM",
    help="put workflow parameter PARAM (e.g. keep, leave_off) back to its default (repeatable)",
)
def schedule_edit(name: str, workflow: str | None, **options: Any) -> int:
    """Change window NAME: only the options given; workflow parameters one by one (a WORKFLOW other than
    the window's drops the old ones). Refused if another change came in meanwhile."""
    return _save(name, workflow, options, edit=True)


@schedule_group.command("list")
@json_option
def schedule_list(as_json: bool) -> int:
    """List the windows with their next firing; warn when no beat runs (then none fires)."""
    import time

    from workflows.beat import beat_seen
    from workflows.windows import with_next_firing

    store = _windows()
    now = time.time()
    rows = [with_next_firing(w, now) for w in filter(None, (store.get(n) for n in store.names()))]
    if as_json:
        print_json(rows)
    else:
        if rows:
            click.echo(
                f"{'NAME':<20} {'CRON':<16} {'TZ':<16} {'WORKFLOW':<12} {'TARGET':<28} {'STATE':<7} "
                "NEXT (IN TZ)"
            )
        for w in rows:
            state = "paused" if w.get("paused") else "active"
            target = w["selector"] or ",".join(map(str, w["servers"]))
            nxt = "paused" if w.get("paused") else (w["next_firing"] or "never")[:16].replace("T", " ")
            click.echo(
                f"{w['name']:<20} {w['cron']:<16} {w['tz']:<16} {w['workflow']:<12} {target:<28} "
                f"{state:<7} {nxt}"
            )
        if not rows:
            click.echo("no maintenance windows")
    from workers.celery_app import app

    if rows and beat_seen(store.redis, float(app.conf.beat_max_loop_interval)) is None:
        click.echo(
            "hcloud-flow: warning: no beat has run lately, so no window will fire; start one with "
            "`hcloud-flow beat`",
            err=True,
        )
    return EXIT_OK


@schedule_group.command("show")
@click.argument("name")
@json_option
def schedule_show(name: str, as_json: bool) -> int:
    """Show window NAME, its next firing and its last ten firings."""
    import time

    from workflows.windows import with_next_firing

    store = _windows()
    _show({**with_next_firing(_known(store, name), time.time()), "history": store.history(name, 10)}, as_json)
    return EXIT_OK


@schedule_group.command("history")
@click.argument("name")
@json_option
def schedule_history(name: str, as_json: bool) -> int:
    """List window NAME's firings: when, the outcome, and the job it started (or why none)."""
    store = _windows()
    _known(store, name)
    history = store.history(name)
    if as_json:
        print_json(history)
        return EXIT_OK
    for h in history:
        click.echo(f"{h['local']:<22} {h['outcome']:<16} {h.get('job_id') or h.get('reason') or ''}")
    if not history:
        click.echo("this window has not fired yet")
    return EXIT_OK


@schedule_group.command("remove")
@click.argument("name")
@json_option
def schedule_remove(name: str, as_json: bool) -> int:
    """Remove window NAME (a job it started goes on)."""
    _windows().remove(name)
    _show({"name": name, "removed": True}, as_json)
    return EXIT_OK


def _pausing(paused: bool, summary: str) -> click.Command:
    @click.argument("name")
    @json_option
    def command(name: str, as_json: bool) -> int:
        import time

        from workflows.api import default_submitter
        from workflows.windows import with_next_firing

        window = _windows().set_paused(name, paused, by=default_submitter())
        _show(with_next_firing(window, time.time()), as_json)
        return EXIT_OK

    return click.command("pause" if paused else "resume", help=summary)(command)


schedule_group.add_command(_pausing(True, "Pause window NAME: it does not fire until resumed."))
schedule_group.add_command(_pausing(False, "Resume window NAME."))

COMMANDS = (schedule_group,)
