"""Fleet jobs: ``fleet`` starts (or plans) one, ``job`` follows and steers them."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from workflows.fleet_plan import JOB_CONTROLS  # the job verbs: one table for the CLI, HTTP and the workers

from .common import (
    EXIT_OK,
    StoppedWaiting,
    check_wait_flags,
    exit_for,
    json_option,
    notify_option,
    param_options,
    params_from,
    print_json,
    project_name,
    project_option,
    split_servers,
    submit_timeout_option,
    wait_options,
)

__all__ = ["COMMANDS"]


def _jobs() -> Any:
    from workflows.api import jobs

    return jobs()


def job_line(job: dict[str, Any]) -> str:
    """One line for a job: state, how many servers ended and how, what is in flight, its age."""
    c = job["counts"]
    done = sum(v for k, v in c.items() if k not in ("running", "pending"))
    parts = [f"{k} {v}" for k, v in sorted(c.items()) if v and k not in ("pending", "running")]
    secs = (job.get("finished") or time.time()) - job["created"]
    where = f" ({job['project']})" if job.get("project") not in (None, "default") else ""
    line = (
        f"job {job['id']} {job['workflow']}{where}: {job['state']}  {done}/{len(job['servers'])} ended"
        f" ({', '.join(parts) or 'none yet'}), {c.get('running', 0)} in flight, {secs:.0f}s"
    )
    if job.get("reason"):  # why it ended, why it stopped starting servers, or the gate it waits at
        line += f" — {job['reason']}"
    if job.get("blocked") and job["state"] == "running":
        line += f" — waiting: {job['blocked']['reason']}"
    approval = job.get("approval")
    if job["state"] in ("awaiting_approval", "paused") and approval:
        left = max(0.0, approval["deadline"] - time.time())
        resume = f"`hcloud-flow job resume {job['id']}`, then " if job["state"] == "paused" else ""
        approve = f"`hcloud-flow job approve {job['id']}` or `job reject`"
        line += f": {resume}{approve} within {left:.0f}s, or it cancels"
    return line


def unsucceeded(job: dict[str, Any]) -> list[str]:
    """Return one line per server of a job that did not succeed, saying what happened and why."""
    names = {int(s["id"]): s.get("name") or s["id"] for s in job["servers"]}
    lines = []
    for sid, entry in sorted((int(k), v) for k, v in job["outcomes"].items()):
        if entry["outcome"] in ("succeeded", "running"):
            continue
        why = f": {entry['reason']}" if entry.get("reason") else ""
        run = f" (run {entry['run_id']})" if entry.get("run_id") else ""
        lines.append(f"  {names.get(sid, sid)} ({sid}) {entry['outcome']}{run}{why}")
    return lines


@click.command("fleet")
@click.argument("workflow")
@click.option("--selector", help="Hetzner label selector, e.g. 'env=staging,role in (web,api)'")
@click.option("--servers", help="comma-separated server ids or names, e.g. 1,2,srv-7")
@click.option("--max-concurrency", required=True, metavar="N|P%", help="servers in flight at most")
@click.option("--max-errors", required=True, metavar="N|P%", help="stop starting new servers past this")
@click.option(
    "--canary",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="first N servers must all succeed first",
)
@click.option(
    "--max-per-placement-group",
    type=click.IntRange(min=1),
    metavar="N",
    help="servers of one placement group in flight at most",
)
@click.option(
    "--max-per-location",
    type=click.IntRange(min=1),
    metavar="N",
    help="servers of one location in flight at most",
)
@click.option("--approve-before-start", is_flag=True, help="wait for `job approve` before any server starts")
@click.option(
    "--approve-after-canary", is_flag=True, help="wait for `job approve` after the canary wave succeeded"
)
@click.option(
    "--approval-timeout",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="cancel the job if no approval comes within this long",
)
@click.option(
    "--health-check",
    metavar="URL",
    help="after each server: http://{ipv4}:8080/healthz (2xx) or tcp://{ipv4}:22 must be healthy",
)
@click.option(
    "--health-timeout", default="5m", show_default=True, metavar="DURATION", help="to become healthy"
)
@click.option(
    "--health-settle",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="to stay healthy without a break",
)
@click.option(
    "--drain",
    is_flag=True,
    help="take each server out of the load balancers that target it before its run; back in, healthy, after",
)
@click.option(
    "--block-on",
    multiple=True,
    metavar="URL",
    help="no new server starts while URL answers non-2xx or lists alerts (Alertmanager, Prometheus)",
)
@click.option("--dry-run", is_flag=True, help="print the plan and its API budget; start nothing")
@project_option
@wait_options("job")
@submit_timeout_option
@notify_option
@json_option
@param_options
def fleet_cmd(
    workflow: str,
    selector: str | None,
    servers: str | None,
    max_concurrency: str,
    max_errors: str,
    canary: int,
    max_per_placement_group: int | None,
    max_per_location: int | None,
    approve_before_start: bool,
    approve_after_canary: bool,
    approval_timeout: str,
    health_check: str | None,
    health_timeout: str,
    health_settle: str,
    drain: bool,
    block_on: tuple[str, ...],
    dry_run: bool,
    project: str | None,
    wait: bool,
    timeout: float | None,
    quiet: bool,
    submit_timeout: float,
    notify: tuple[str, ...],
    as_json: bool,
    **options: Any,
) -> int:
    """Run WORKFLOW over many servers (--selector or --servers): sliding window, canary, error threshold."""
    from workers.errors import BadInput
    from workflows.specs import FleetSpec, checked

    check_wait_flags(wait, timeout, quiet)
    if (selector is None) == (servers is None):
        raise BadInput("give either --selector or --servers (one of them)")
    spec: dict[str, Any] = {
        "project": project,
        "selector": selector,
        "servers": split_servers(servers),
        "params": params_from(options),
        "max_concurrency": max_concurrency,
        "max_errors": max_errors,
        "canary": canary,
        "max_per_placement_group": max_per_placement_group,
        "max_per_location": max_per_location,
        "notify": list(notify),
        "approve_before_start": approve_before_start,
        "approve_after_canary": approve_after_canary,
        "approval_timeout": approval_timeout,
        "block_on": list(block_on),
        "drain": drain,
        "health_check": health_check,
        "health_timeout": health_timeout,
        "health_settle": health_settle,
    }
    checked(FleetSpec, {"workflow": workflow, **spec})  # refused here, before anything is sent
    if dry_run:
        _print_plan(_jobs().plan(workflow, timeout=submit_timeout, **spec), as_json)
        return EXIT_OK
    job = _jobs().start(workflow, timeout=submit_timeout, **spec)
    if not wait:
        print_json(job) if as_json else click.echo(job["id"])
        return EXIT_OK
    return wait_job(job["id"], timeout=timeout, quiet=quiet, as_json=as_json)


def _print_plan(plan: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    click.echo(
        f"dry run: {plan['workflow']} on {len(plan['servers'])} servers, at most {plan['max_concurrency']} "
        f"at once, stop after {plan['max_errors']} errors, canary {plan['canary']}"
    )
    spread = [
        f"{plan[k]} per {what}"
        for k, what in (("max_per_placement_group", "placement group"), ("max_per_location", "location"))
        if plan.get(k)
    ]
    if spread:
        click.echo(f"spread limits: at most {' and '.join(spread)} in flight")
    for gate in plan.get("gates") or []:
        click.echo(f"gate: {gate}")
    for warning in plan.get("warnings") or []:
        click.echo(f"hcloud-flow: warning: {warning}", err=True)
    if plan.get("blocked_now"):
        click.echo(f"now: {plan['blocked_now']} (the job would wait)")
    for s in plan["servers"]:
        lbs = (
            f"  [load balancers: {', '.join(map(str, s['load_balancers']))}]"
            if s.get("load_balancers")
            else ""
        )
        where = " ".join(x for x in (s.get("location"), s.get("placement_group")) if x)
        steps = " → ".join(s["steps"]) if not s.get("refused") else f"refused: {s['refused']}"
        click.echo(f"  {s['name']:<20} {s['status']:<10} {where:<16} {steps}{lbs}")
        if s.get("would_prune"):
            click.echo(f"    then deletes older snapshots: {', '.join(map(str, s['would_prune']))}")
    click.echo(
        f"API requests: about {plan['api_requests']} ({plan['share_of_hourly_budget']:.1%} of the hourly "
        f"budget of {plan['budget_limit_per_hour']}; {plan['budget_remaining']} left now)"
    )
    click.echo(
        f"estimated duration: {plan['estimated_seconds']} s in {plan['waves']} waves "
        f"(bound by {plan['bound_by']}); nothing was started"
    )


def wait_job(job_id: str, *, timeout: float | None, quiet: bool, as_json: bool) -> int:
    """Follow a job (one progress line per change off a terminal) and say how it ended, server by server."""
    last = ""
    tty = sys.stderr.isatty()

    def show(job: dict[str, Any]) -> None:
        nonlocal last
        if as_json or quiet:
            return
        line = job_line(job)
        if tty:
            click.echo("\r\x1b[K" + line, nl=False, err=True)
        elif line.rsplit(",", 1)[0] != last.rsplit(",", 1)[0]:  # the age alone changed: no new line
            click.echo(line, err=True)
        last = line

    try:
        job = _jobs().wait(job_id, timeout=timeout, on_update=show)
    except KeyboardInterrupt:
        raise StoppedWaiting("fleet job", job_id, f"hcloud-flow job status {job_id} --wait") from None
    if tty and not (as_json or quiet):
        click.echo("", err=True)
    if as_json:
        print_json(job)
    else:
        click.echo(job_line(job))
        for line in unsucceeded(job):
            click.echo(line)
    return exit_for(job["state"])


@click.group("job")
def job_group() -> None:
    """Show, list, pause, resume, cancel, approve, reject or retry fleet jobs."""


@job_group.command("list")
@click.option("--project", metavar="NAME", callback=project_name, help="only jobs of this project")
@json_option
def job_list(project: str | None, as_json: bool) -> int:
    """List fleet jobs, newest first."""
    listed = _jobs().list(project=project)
    if as_json:
        print_json(listed)
    else:
        click.echo("\n".join(job_line(j) for j in listed) or "no fleet jobs")
    return EXIT_OK


@job_group.command("status")
@click.argument("job_id")
@wait_options("job")
@json_option
def job_status(job_id: str, wait: bool, timeout: float | None, quiet: bool, as_json: bool) -> int:
    """Show a job and each server's outcome (with --wait, follow it until it ends)."""
    check_wait_flags(wait, timeout, quiet)
    if wait:
        return wait_job(job_id, timeout=timeout, quiet=quiet, as_json=as_json)
    job = _jobs().status(job_id)
    if as_json:
        print_json(job)
        return exit_for(job["state"])
    click.echo(job_line(job))
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(job["created"]))
    click.echo(f"  submitted {created} by {job.get('submitted_by') or '-'}")
    for c in job.get("controls") or []:
        at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(c["at"]))
        click.echo(f"  {c['verb']} {at} by {c['by'] or '-'}")
    names = {s["id"]: s["name"] for s in job["servers"]}
    for sid, entry in sorted(job["outcomes"].items()):
        note = f"  ({entry['reason']})" if entry.get("reason") else ""
        check, drain = entry.get("health") or {}, entry.get("drain") or {}
        if check.get("state") == "checking":
            note = f"  (health check: {check.get('last') or 'first look due'})"
        elif entry["outcome"] == "running" and drain.get("state") in ("draining", "out", "restoring"):
            doing = {
                "draining": "being taken out of its load balancers",
                "out": "out of its load balancers while its run goes on",
                "restoring": "back in its load balancers, waiting for healthy: "
                + (drain.get("last") or "first look due"),
            }[drain["state"]]
            note = f"  ({doing})"
        click.echo(f"  {names.get(sid, sid)!s:<20} {entry['outcome']:<12} {entry.get('run_id', '')}{note}")
    return exit_for(job["state"])


def _control(verb: str, summary: str) -> click.Command:
    @click.argument("job_id")
    @submit_timeout_option
    @json_option
    def command(job_id: str, submit_timeout: float, as_json: bool) -> int:
        answer = _jobs().control(job_id, verb, timeout=submit_timeout)
        print_json(answer) if as_json else click.echo(f"job {job_id}: {answer['state']}")
        return EXIT_OK

    return click.command(verb, help=summary)(command)


for _verb, _summary in JOB_CONTROLS.items():
    job_group.add_command(_control(_verb, _summary))


@job_group.command("retry")
@click.argument("job_id")
@click.option("--failed", is_flag=True, help="the servers that failed or were refused")
@click.option(
    "--not-started", is_flag=True, help="the servers that never started (not_started, or skipped as busy)"
)
@click.option(
    "--user-data",
    metavar="TEXT|@FILE",
    help="the job's user data again: a job keeps only its fingerprint once it has started its last server",
)
@wait_options("job")
@submit_timeout_option
@json_option
def job_retry(
    job_id: str,
    failed: bool,
    not_started: bool,
    user_data: str | None,
    wait: bool,
    timeout: float | None,
    quiet: bool,
    submit_timeout: float,
    as_json: bool,
) -> int:
    """Start a new job over an ended job's failed and/or not started servers, same workflow and options."""
    from workers.errors import BadInput

    check_wait_flags(wait, timeout, quiet)
    if not (failed or not_started):
        raise BadInput("say which servers to retry: --failed, --not-started or both")
    given = params_from({"p_user_data": user_data}).get("user_data")
    job = _jobs().retry(
        job_id, failed=failed, not_started=not_started, timeout=submit_timeout, user_data=given
    )
    if not wait:
        print_json(job) if as_json else click.echo(job["id"])
        return EXIT_OK
    return wait_job(job["id"], timeout=timeout, quiet=quiet, as_json=as_json)


COMMANDS = (fleet_cmd, job_group)
