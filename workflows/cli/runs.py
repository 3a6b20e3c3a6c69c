"""Single runs: ``run``, ``status``, ``list``, ``cancel``, ``secret``; ``workflows`` lists what runs take."""

from __future__ import annotations

import time
from typing import Any

import click

from .common import (
    EXIT_OK,
    StoppedWaiting,
    check_wait_flags,
    exit_for,
    flag_of,
    json_option,
    notify_option,
    param_options,
    params_from,
    print_json,
    project_name,
    project_option,
    runs,
    submit_timeout_option,
    wait_options,
)

__all__ = ["COMMANDS"]

# `list --server NAME` looks through this many newest runs for the name (the CLI has no token to resolve it).
_NAME_SCAN = 5000


@click.command("run")
@click.argument("workflow")
@click.option("--server", help="server id or name (restore: the --from-run run's server if left out)")
@click.option("--queue", is_flag=True, help="if the server is busy, queue behind its run")
@project_option
@wait_options("run")
@submit_timeout_option
@notify_option
@json_option
@param_options
def run_cmd(
    workflow: str,
    server: str | None,
    queue: bool,
    project: str | None,
    wait: bool,
    timeout: float | None,
    quiet: bool,
    submit_timeout: float,
    notify: tuple[str, ...],
    as_json: bool,
    **options: Any,
) -> int:
    """Submit WORKFLOW for one server (`hcloud-flow workflows` lists them and their options)."""
    from workers.ids import is_id
    from workflows.notify import check_urls
    from workflows.validate import check_params, check_server_ref, workflow_named

    check_wait_flags(wait, timeout, quiet)
    params = params_from(options)
    wf = workflow_named(workflow)
    if server is None and wf.from_run is None:
        raise click.UsageError("Missing option '--server'.")
    target: Any = int(server) if server is not None and is_id(server) else server
    if target is not None:
        check_server_ref(target)
    check_params(wf, params)  # refuse bad shapes before touching the broker
    check_urls(list(notify))
    answer = runs().submit_full(
        workflow,
        server=target,
        queue=queue,
        timeout=submit_timeout,
        notify=list(notify),
        project=project,
        **params,
    )
    if not as_json:
        for warning in answer.get("warnings") or []:
            click.echo(f"hcloud-flow: warning: {warning}", err=True)
    if not wait:
        if as_json:
            print_json(answer)
        else:
            behind = f" (queued behind run {answer['queued_behind']})" if answer.get("queued_behind") else ""
            click.echo(f"{answer['run_id']}{behind}")
        return EXIT_OK
    return wait_and_report([answer["run_id"]], timeout=timeout, quiet=quiet, as_json=as_json)


def wait_and_report(
    run_ids: list[str], *, timeout: float | None, quiet: bool, as_json: bool, known: bool = True
) -> int:
    """Follow runs until they end (or the deadline passes: StillRunning, exit 4) and say how they ended.
    ``known``: the runs exist (just submitted): one not found is a lost record from the first read on."""
    try:
        return _follow(run_ids, timeout=timeout, quiet=quiet, as_json=as_json, known=known)
    except KeyboardInterrupt:
        raise StoppedWaiting("run", run_ids[0], f"hcloud-flow status {run_ids[0]} --wait") from None


def _follow(run_ids: list[str], *, timeout: float | None, quiet: bool, as_json: bool, known: bool) -> int:
    """Follow runs; one that vanishes once it was there (or, ``known``, from the start) is RecordLost."""
    from workers.errors import NotFound, RecordLost, StillRunning
    from workers.run_store import has_ended
    from workflows.api import read_riding_out
    from workflows.progress import LiveView, render_run

    api = runs()
    seen = set(run_ids) if known else set()

    def read(run_id: str) -> dict[str, Any]:
        try:
            run = api.status(run_id)
        except NotFound:
            if run_id not in seen:
                raise
            # Redis restarted without its data (an outside test): "no run", exit 2, said it was bad input.
            raise RecordLost(f"run {run_id}") from None
        seen.add(run_id)
        return run

    view = None if as_json or quiet else LiveView()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = read_riding_out(lambda: [read(r) for r in run_ids], deadline, 0.5)
        if view is not None:
            view.update(current)
        if all(has_ended(r) for r in current):
            break
        if deadline is not None and time.monotonic() > deadline:
            running = next(r for r in current if not has_ended(r))
            raise StillRunning(
                f"run {running['id']}",
                running["state"],
                timeout or 0,
                f"hcloud-flow status {running['id']} --wait",
            )
        time.sleep(0.5)
    if as_json:
        print_json(current if len(current) > 1 else current[0])
    elif view is None or not view.tty:  # off a terminal the progress lines were a log: now the outcome
        for run in current:
            click.echo("\n".join(render_run(run)))
    return exit_for(*(r["state"] for r in current))


@click.command("status")
@click.argument("run_id")
@wait_options("run")
@json_option
def status_cmd(run_id: str, wait: bool, timeout: float | None, quiet: bool, as_json: bool) -> int:
    """Show a run: state, steps, actions, errors, images, and the server's state at the end."""
    from workflows.progress import render_run

    check_wait_flags(wait, timeout, quiet)
    if wait:
        # Not known to exist: a wrong id is bad input; a record gone once read is not.
        return wait_and_report([run_id], timeout=timeout, quiet=quiet, as_json=as_json, known=False)
    run = runs().status(run_id)
    if as_json:
        print_json(run)
    else:
        click.echo("\n".join(render_run(run)))
    return exit_for(run["state"])


@click.command("list")
@click.option("--active", is_flag=True, help="only queued and running runs")
@click.option("--server", help="only runs of this server (id or name)")
@click.option("--project", metavar="NAME", callback=project_name, help="only runs of this project")
@click.option(
    "--limit", type=click.IntRange(1, _NAME_SCAN), default=50, show_default=True, help="runs at most"
)
@json_option
def list_cmd(active: bool, server: str | None, project: str | None, limit: int, as_json: bool) -> int:
    """List runs, newest first, with when they were created and who submitted them."""
    from workers.errors import BadInput
    from workers.ids import is_id
    from workers.projects import in_project

    if server is not None and not server.strip():
        raise BadInput("--server is empty; give a server id or name", "server")
    if (server is None or is_id(server)) and project is None:
        found = runs().list(active=active, server_id=int(server) if server else None, limit=limit)
    else:
        # The CLI holds no API token, so a name is matched against the name each run recorded (and the
        # same name may be a server of two projects: --project tells them apart).
        kept = runs().list(
            active=active, server_id=int(server) if server and is_id(server) else None, limit=_NAME_SCAN
        )
        found = [
            r
            for r in kept
            if (server is None or is_id(server) or r.get("server_name") == server) and in_project(r, project)
        ][:limit]
    if as_json:
        print_json(found)
        return EXIT_OK
    if not found:
        click.echo("no runs")
        return EXIT_OK
    click.echo(
        f"{'RUN':<18}{'CREATED (UTC)':<21}{'WORKFLOW':<16}{'SERVER (PROJECT)':<24}{'STATE':<12}{'STEPS':<8}"
        f"{'SECONDS':>8}  BY"
    )
    for r in found:
        done = sum(1 for s in r["steps"] if s.get("status") == "succeeded")
        secs = (r.get("finished") or time.time()) - (r.get("started") or r["created"])
        name = str(r.get("server_name") or r["server_id"])
        if r.get("project") not in (None, "default"):
            name = f"{name} ({r['project']})"
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created"]))
        click.echo(
            f"{r['id']:<18}{created:<21}{r['workflow']:<16}{name[:23]:<24}{r['state']:<12}"
            f"{done}/{len(r['steps']):<6}{secs:>8.1f}  {r.get('submitted_by') or '-'}"
        )
    return EXIT_OK


@click.command("cancel")
@click.argument("run_id")
@json_option
def cancel_cmd(run_id: str, as_json: bool) -> int:
    """Cancel a run before its next step (a running action is waited out)."""
    answer = runs().cancel(run_id)
    if as_json:
        print_json(answer)
    else:
        note = (
            " (stops before its next step; a running action is waited out)"
            if answer["state"] == "cancelling"
            else ""
        )
        click.echo(f"run {run_id}: {answer['state']}{note}")
    return EXIT_OK


@click.command("secret")
@click.argument("run_id")
@json_option
def secret_cmd(run_id: str, as_json: bool) -> int:
    """Reveal the root password a run sealed (needs HCLOUD_FLOW_SECRET_KEY)."""
    import celeryconfig
    from workers.errors import BadInput
    from workers.sealing import open_sealed

    run = runs().status(run_id)
    sealed = [
        s["outputs"]["root_password"] for s in run["steps"] if (s.get("outputs") or {}).get("root_password")
    ]
    if not sealed:
        raise BadInput(f"run {run_id} holds no root password (only reset-password, rescue and rebuild do)")
    secret = open_sealed(sealed[-1], celeryconfig.secret_key())
    if as_json:
        print_json({"run_id": run_id, "root_password": secret})
    else:
        click.echo(secret)
    return EXIT_OK


@click.command("workflows")
@json_option
def workflows_cmd(as_json: bool) -> int:
    """List the workflows, their steps and their options (with --json, each one's parameter schema)."""
    from workflows.definitions import WORKFLOWS
    from workflows.param_models import schema_for

    table: list[dict[str, Any]] = [
        {
            "name": w.name,
            "summary": w.summary,
            "steps": [s.name for s in w.steps],
            # What a caller in another language validates against (send_task's params, or the Python API's).
            "params_schema": schema_for(w.name),
            "params": [
                {
                    "name": p.name,
                    "flag": flag_of(p),
                    "required": p.required,
                    "default": p.default,
                    "help": p.help,
                }
                for p in w.params
            ],
        }
        for w in WORKFLOWS.values()
    ]
    if as_json:
        print_json(table)
        return EXIT_OK
    for w in table:
        click.echo(f"{w['name']}: {w['summary']}\n  steps: {' → '.join(w['steps'])}")
        for p in w["params"]:
            need = " (required)" if p["required"] else ""
            click.echo(f"  {p['flag']}{need}: {p['help']}")
    return EXIT_OK


COMMANDS = (run_cmd, status_cmd, list_cmd, cancel_cmd, secret_cmd, workflows_cmd)
