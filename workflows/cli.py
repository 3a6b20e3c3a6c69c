"""The ``hcloud-flow`` command line: one subcommand a job, ``--help`` on each, ``--json`` on reads.

Exit codes: 0 success, 1 a run failed or was cancelled, 2 bad input (nothing was enqueued), 3 Redis, the
workers or the API could not be reached.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

# The exit codes, documented in the README: the same for every command.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_STILL_RUNNING = 0, 1, 2, 3, 4
# `list --server NAME` looks through this many newest runs for the name (the CLI has no token to resolve it).
_NAME_SCAN = 5000


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _runs() -> Any:
    from workflows.api import default

    return default()


# -- run --------------------------------------------------------------------------------------------------


def _kv(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _flag(param: Any) -> str:
    """Return the command-line flag of a workflow parameter: one rule for the parser and the listings."""
    if param.kind is dict:
        return "--label"  # repeatable KEY=VALUE
    if param.kind is list:
        return "--ssh-key"  # repeatable ID|NAME
    return "--" + param.name.replace("_", "-")


def _add_param_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per workflow parameter (the union over all workflows; each run checks its own)."""
    from workflows.definitions import WORKFLOWS

    seen: set[str] = set()
    for wf in WORKFLOWS.values():
        for p in wf.params:
            if p.name in seen:
                continue
            seen.add(p.name)
            flag = _flag(p)
            if p.kind is bool:
                parser.add_argument(flag, dest=f"p_{p.name}", action="store_true", default=None, help=p.help)
            elif p.kind is dict:
                parser.add_argument(
                    flag,
                    dest=f"p_{p.name}",
                    action="append",
                    type=_kv,
                    metavar="KEY=VALUE",
                    help=p.help + " (repeatable)",
                )
            elif p.kind is list:
                parser.add_argument(
                    flag,
                    dest=f"p_{p.name}",
                    action="append",
                    metavar="ID|NAME",
                    help=p.help + " (repeatable)",
                )
            elif p.kind in ((int, float),):
                parser.add_argument(flag, dest=f"p_{p.name}", type=float, metavar="SECONDS", help=p.help)
            else:
                parser.add_argument(flag, dest=f"p_{p.name}", metavar=p.name.upper(), help=p.help)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    from workers.client import is_id

    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith("p_") or value is None:
            continue
        name = key[2:]
        if name == "labels":
            value = dict(value)
        if name == "ssh_keys":
            value = [int(v) if is_id(v) else v for v in value]
        if name == "image" and is_id(value):
            value = int(value)
        if name == "user_data" and value.startswith("@"):
            with open(value[1:], encoding="utf-8") as fh:
                value = fh.read()
        out[name] = value
    return out


def _seconds(text: str) -> float:
    """An argparse type: a wait in seconds, finite and above 0 (a wait of 0 or nan cannot be kept)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from workers.client import is_id
    from workflows.validate import check_params, workflow_named

    params = _params(args)
    server: Any = int(args.server) if is_id(args.server) else args.server
    check_params(workflow_named(args.workflow), params)  # refuse bad shapes before touching the broker
    answer = _runs().submit_full(
        args.workflow, server=server, queue=args.queue, timeout=args.submit_timeout, **params
    )
    run_id = answer["run_id"]
    if not args.json:
        for warning in answer.get("warnings") or []:
            print(f"hcloud-flow: warning: {warning}", file=sys.stderr)
    if not args.wait:
        if args.json:
            _print_json(answer)
        else:
            behind = f" (queued behind run {answer['queued_behind']})" if answer.get("queued_behind") else ""
            print(f"{run_id}{behind}")
        return EXIT_OK
    return _wait_and_report([run_id], args)


def _wait_and_report(run_ids: list[str], args: argparse.Namespace) -> int:
    from workers.run_store import has_ended
    from workflows.progress import LiveView, render_run

    runs = _runs()
    view = None if args.json or args.quiet else LiveView()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        current = [runs.status(r) for r in run_ids]
        if view is not None:
            view.update(current)
        if all(has_ended(r) for r in current):
            break
        if deadline is not None and time.monotonic() > deadline:
            from workers.errors import StillRunning

            running = [r for r in current if not has_ended(r)]
            raise StillRunning(
                f"run {running[0]['id']}",
                running[0]["state"],
                args.timeout,
                f"hcloud-flow status {running[0]['id']} --wait",
            )
        time.sleep(0.5)
    if args.json:
        _print_json(current if len(current) > 1 else current[0])
    elif view is None:
        for run in current:
            print("\n".join(render_run(run)))
    return EXIT_OK if all(r["state"] == "succeeded" for r in current) else EXIT_FAILED


# -- reads and cancel -------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from workflows.progress import render_run

    if args.wait:
        return _wait_and_report([args.run_id], args)
    run = _runs().status(args.run_id)
    if args.json:
        _print_json(run)
    else:
        print("\n".join(render_run(run)))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from workers.client import is_id
    from workers.errors import BadInput

    ref = args.server
    if ref is not None and not str(ref).strip():
        raise BadInput("--server is empty; give a server id or name", "server")
    if ref is None or is_id(ref):
        server_id = int(ref) if ref is not None else None
        runs = _runs().list(active=args.active, server_id=server_id, limit=args.limit)
    else:
        # The CLI holds no API token, so a name is matched against the name each run recorded.
        kept = _runs().list(active=args.active, limit=_NAME_SCAN)
        runs = [r for r in kept if r.get("server_name") == ref][: args.limit]
    if args.json:
        _print_json(runs)
        return EXIT_OK
    if not runs:
        print("no runs")
        return EXIT_OK
    print(
        f"{'RUN':<18}{'CREATED (UTC)':<21}{'WORKFLOW':<16}{'SERVER':<14}{'STATE':<12}{'STEPS':<8}"
        f"{'SECONDS':>8}  BY"
    )
    for r in runs:
        done = sum(1 for s in r["steps"] if s.get("status") == "succeeded")
        secs = (r.get("finished") or time.time()) - (r.get("started") or r["created"])
        name = str(r.get("server_name") or r["server_id"])
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["created"]))
        print(
            f"{r['id']:<18}{created:<21}{r['workflow']:<16}{name[:13]:<14}{r['state']:<12}"
            f"{done}/{len(r['steps']):<6}{secs:>8.1f}  {r.get('submitted_by') or '-'}"
        )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    answer = _runs().cancel(args.run_id)
    if args.json:
        _print_json(answer)
    else:
        note = (
            " (stops before its next step; a running action is waited out)"
            if answer["state"] == "cancelling"
            else ""
        )
        print(f"run {args.run_id}: {answer['state']}{note}")
    return EXIT_OK


def cmd_secret(args: argparse.Namespace) -> int:
    import celeryconfig
    from workers.errors import BadInput
    from workers.sealing import open_sealed

    run = _runs().status(args.run_id)
    sealed = [
        s["outputs"]["root_password"] for s in run["steps"] if (s.get("outputs") or {}).get("root_password")
    ]
    if not sealed:
        raise BadInput(
            f"run {args.run_id} holds no root password (only reset-password, rescue and rebuild do)"
        )
    secret = open_sealed(sealed[-1], celeryconfig.secret_key())
    if args.json:
        _print_json({"run_id": args.run_id, "root_password": secret})
    else:
        print(secret)
    return EXIT_OK


def _fleet_options(args: argparse.Namespace) -> dict[str, Any]:
    from workers.client import is_id

    servers = None
    if args.servers is not None:
        servers = [int(s) if is_id(s) else s for s in (p.strip() for p in args.servers.split(",")) if s]
    return {
        "selector": args.selector,
        "servers": servers,
        "params": _params(args),
        "max_concurrency": args.max_concurrency,
        "max_errors": args.max_errors,
        "canary": args.canary,
    }


def _job_line(job: dict[str, Any]) -> str:
    c = job["counts"]
    done = sum(v for k, v in c.items() if k not in ("running", "pending"))
    parts = [f"{k} {v}" for k, v in sorted(c.items()) if v and k not in ("pending", "running")]
    secs = (job.get("finished") or time.time()) - job["created"]
    return (
        f"job {job['id']} {job['workflow']}: {job['state']}  {done}/{len(job['servers'])} ended"
        f" ({', '.join(parts) or 'none yet'}), {c.get('running', 0)} in flight, {secs:.0f}s"
    )


def cmd_fleet(args: argparse.Namespace) -> int:
    from workflows.api import jobs
    from workflows.validate import check_params, workflow_named

    options = _fleet_options(args)
    check_params(workflow_named(args.workflow), options["params"])
    if args.dry_run:
        plan = jobs().plan(args.workflow, **options)
        if args.json:
            _print_json(plan)
            return EXIT_OK
        print(
            f"dry run: {plan['workflow']} on {len(plan['servers'])} servers,"
            f" at most {plan['max_concurrency']} "
            f"at once, stop after {plan['max_errors']} errors, canary {plan['canary']}"
        )
        for s in plan["servers"]:
            print(f"  {s['name']:<20} {s['status']:<10} {' → '.join(s['steps'])}")
        print(
            f"API requests: about {plan['api_requests']} ({plan['share_of_hourly_budget']:.1%} of the hourly "
            f"budget of {plan['budget_limit_per_hour']}; {plan['budget_remaining']} left now)"
        )
        print(
            f"estimated duration: {plan['estimated_seconds']} s in {plan['waves']} waves "
            f"(bound by {plan['bound_by']}); nothing was started"
        )
        return EXIT_OK
    job = jobs().start(args.workflow, **options)
    if not args.wait:
        if args.json:
            _print_json(job)
        else:
            print(job["id"])
        return EXIT_OK
    return _wait_job(job["id"], args)


def _wait_job(job_id: str, args: argparse.Namespace) -> int:
    from workflows.api import jobs

    last = ""

    def show(job: dict[str, Any]) -> None:
        nonlocal last
        if args.json or args.quiet:
            return
        line = _job_line(job)
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K" + line)
        elif line.rsplit(",", 1)[0] != last.rsplit(",", 1)[0]:
            sys.stderr.write(line + "\n")
        last = line
        sys.stderr.flush()

    job = jobs().wait(job_id, timeout=args.timeout, on_update=show)
    if sys.stderr.isatty() and not (args.json or args.quiet):
        sys.stderr.write("\n")
    if args.json:
        _print_json(job)
    else:
        print(_job_line(job) + (f" — {job['reason']}" if job.get("reason") else ""))
        for line in _unsucceeded(job):
            print(line)
    return EXIT_OK if job["state"] == "succeeded" else EXIT_FAILED


def _unsucceeded(job: dict[str, Any]) -> list[str]:
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


def cmd_job(args: argparse.Namespace) -> int:
    from workers.errors import BadInput
    from workflows.api import jobs

    if args.verb == "list":
        listed = jobs().list()
        if args.json:
            _print_json(listed)
        else:
            print("\n".join(_job_line(j) for j in listed) or "no fleet jobs")
        return EXIT_OK
    if args.job_id is None:
        raise BadInput(f"job {args.verb} needs a JOB_ID")
    if args.verb == "status":
        if args.wait:
            return _wait_job(args.job_id, args)
        job = jobs().status(args.job_id)
        if args.json:
            _print_json(job)
        else:
            print(_job_line(job) + (f" — {job['reason']}" if job.get("reason") else ""))
            names = {s["id"]: s["name"] for s in job["servers"]}
            for sid, entry in sorted(job["outcomes"].items()):
                note = f"  ({entry['reason']})" if entry.get("reason") else ""
                print(f"  {names.get(sid, sid)!s:<20} {entry['outcome']:<12} {entry.get('run_id', '')}{note}")
        return EXIT_OK
    answer = jobs().control(args.job_id, args.verb)
    if args.json:
        _print_json(answer)
    else:
        print(f"job {args.job_id}: {answer['state']}")
    return EXIT_OK


def _windows() -> Any:
    from workers.app import app, run_store
    from workflows.windows import WindowStore

    return WindowStore(run_store().redis, app)


def cmd_schedule(args: argparse.Namespace) -> int:
    from workers.errors import BadInput
    from workflows.windows import validate_window

    store = _windows()
    if args.verb == "list":
        return _schedule_list(store, args)
    if not args.name:
        raise BadInput(f"schedule {args.verb} needs a NAME")
    if args.verb in ("add", "edit"):
        old = store.get(args.name) if args.verb == "edit" else {}
        if old is None:
            raise BadInput(f"no window named {args.name!r}; `hcloud-flow schedule list` shows them")
        if args.verb == "add" and not args.workflow:
            raise BadInput("schedule add needs a WORKFLOW after the name")
        given = _window_options(args)
        if old and given.get("workflow", old["workflow"]) != old["workflow"]:
            # Another workflow: the old one's parameters (with their defaults) need not fit it.
            old = {k: v for k, v in old.items() if k != "params"}
        window = validate_window({**_WINDOW_DEFAULTS, **(old or {}), **given})
        store.save(window, replace=args.verb == "edit")
        answer: Any = window
    elif args.verb == "show":
        answer = store.get(args.name)
        if answer is None:
            raise BadInput(f"no window named {args.name!r}")
        answer = {**answer, "history": store.history(args.name, 10)}
    elif args.verb == "remove":
        store.remove(args.name)
        answer = {"name": args.name, "removed": True}
    elif args.verb in ("pause", "resume"):
        answer = store.set_paused(args.name, args.verb == "pause")
    else:  # history
        if store.get(args.name) is None:
            raise BadInput(f"no window named {args.name!r}; `hcloud-flow schedule list` shows them")
        answer = store.history(args.name)
    if args.json:
        _print_json(answer)
    elif args.verb == "history":
        for h in answer:
            extra = h.get("job_id") or h.get("reason") or ""
            print(f"{h['local']:<22} {h['outcome']:<16} {extra}")
        if not answer:
            print("this window has not fired yet")
    else:
        print(json.dumps(answer, indent=2, default=str))
    return EXIT_OK


# What `schedule add` assumes for an option not given; `schedule edit` keeps the window's own instead.
_WINDOW_DEFAULTS: dict[str, Any] = {
    "tz": "UTC",
    "cutoff": "0",
    "max_concurrency": "1",
    "max_errors": "0",
    "canary": 0,
    "params": {},
    "selector": None,
    "servers": None,
}


def _window_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the window fields given on the command line (only those: an edit keeps the rest)."""
    given: dict[str, Any] = {"name": args.name}
    if args.workflow:
        given["workflow"] = args.workflow
    for field in ("cron", "tz", "duration", "cutoff", "max_concurrency", "max_errors", "canary"):
        if getattr(args, field) is not None:
            given[field] = getattr(args, field)
    if args.selector is not None:
        given.update(selector=args.selector, servers=None)
    if args.servers is not None:
        given.update(servers=[s.strip() for s in args.servers.split(",")], selector=None)
    params = _params(args)
    if params:
        given["params"] = params
    return given


def _schedule_list(store: Any, args: argparse.Namespace) -> int:
    """List the windows with their next firing, and say so when no beat runs (then none fires)."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from workflows.beat import beat_seen
    from workflows.windows import next_firing, parse_cron

    now = datetime.now(UTC)
    seen = beat_seen(store.redis)
    rows = []
    for w in filter(None, (store.get(n) for n in store.names())):
        fires = None if w.get("paused") else next_firing(parse_cron(w["cron"]), ZoneInfo(w["tz"]), now)
        rows.append({**w, "next_firing": fires.isoformat() if fires else None})
    if args.json:
        _print_json(rows)
    else:
        if rows:
            print(f"{'NAME':<20} {'CRON':<16} {'TZ':<16} {'WORKFLOW':<12} {'TARGET':<28} {'STATE':<7} NEXT")
        for w in rows:
            state = "paused" if w.get("paused") else "active"
            target = w["selector"] or ",".join(map(str, w["servers"]))
            nxt = "paused" if w.get("paused") else (w["next_firing"] or "never")[:16].replace("T", " ")
            print(
                f"{w['name']:<20} {w['cron']:<16} {w['tz']:<16} {w['workflow']:<12} {target:<28} {state:<7} "
                f"{nxt}"
            )
        if not rows:
            print("no maintenance windows")
    if rows and seen is None:
        print(
            "hcloud-flow: warning: no beat has run lately, so no window will fire; start one with "
            "`hcloud-flow beat`",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_servers(args: argparse.Namespace) -> int:
    rows = _runs().servers(args.selector, timeout=args.submit_timeout)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no servers" + (f" match {args.selector!r}" if args.selector else ""))
        return EXIT_OK
    print(f"{'ID':<10} {'NAME':<24} {'STATUS':<10} {'TYPE':<8} {'LOCATION':<9} {'HELD BY RUN':<18} LABELS")
    for s in rows:
        labels = ",".join(f"{k}={v}" if v else k for k, v in sorted(s["labels"].items()))
        print(
            f"{s['id']:<10} {s['name']:<24} {s['status']:<10} {s['server_type'] or '-':<8} "
            f"{s['location'] or '-':<9} {s['held_by'] or '-':<18} {labels}"
        )
    return EXIT_OK


def cmd_images(args: argparse.Namespace) -> int:
    rows = _runs().images(timeout=args.submit_timeout)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no snapshots or backups")
        return EXIT_OK
    columns = f"{'ID':<10} {'TYPE':<9} {'STATUS':<10} {'CREATED':<20} {'FROM SERVER':<20}"
    print(f"{columns} {'MADE BY RUN':<18} DESCRIPTION")
    for i in rows:
        created = (i["created"] or "-")[:19].replace("T", " ")
        print(
            f"{i['id']:<10} {i['type']:<9} {i['status']:<10} {created:<20} {i['from_server'] or '-':<20} "
            f"{i['run_id'] or '-':<18} {(i['description'] or '')[:60]}"
        )
    return EXIT_OK


def cmd_beat(args: argparse.Namespace) -> int:
    from workers.app import app

    app.start(["beat", "-S", "workflows.beat:Scheduler", "--loglevel", args.loglevel])
    return EXIT_OK


def cmd_flower(args: argparse.Namespace) -> int:
    from workers.errors import BadInput

    user, colon, password = os.environ.get("FLOWER_BASIC_AUTH", "").partition(",")[0].partition(":")
    if not (user.strip() and colon and password.strip()):
        # Flower's HTTP API can cancel and send tasks: never without credentials (":" lets anybody in).
        raise BadInput("set FLOWER_BASIC_AUTH to user:password (both non-empty) first; Flower needs it")
    from workers.app import app

    app.start(["flower", f"--port={args.port}", f"--address={args.address}"])
    return EXIT_OK


def cmd_workflows(args: argparse.Namespace) -> int:
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
                    "flag": _flag(p),
                    "required": p.required,
                    "default": p.default,
                    "help": p.help,
                }
                for p in w.params
            ],
        }
        for w in WORKFLOWS.values()
    ]
    if args.json:
        _print_json(table)
        return EXIT_OK
    for w in table:
        print(f"{w['name']}: {w['summary']}\n  steps: {' → '.join(w['steps'])}")
        for p in w["params"]:
            need = " (required)" if p["required"] else ""
            print(f"  {p['flag']}{need}: {p['help']}")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.app import app

    argv = [
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(args.concurrency),
        "-Q",
        "hcloud_flow",
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from workflows.demo import run_demo

    return run_demo(json_out=args.json, servers=args.servers)


# -- the parser ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcloud-flow",
        description="Run Hetzner Cloud server actions as durable Celery workflows.",
        epilog="Exit codes: 0 ok, 1 run failed or cancelled, 2 bad input (nothing enqueued), "
        "3 Redis, workers or API unreachable. Settings come from the environment (see README).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def reader(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    p = reader("run", "submit a workflow run for one server")
    p.add_argument("workflow", help="workflow name (see `hcloud-flow workflows`)")
    p.add_argument("--server", required=True, help="server id or name")
    p.add_argument("--queue", action="store_true", help="if the server is busy, queue behind its run")
    p.add_argument("--wait", action="store_true", help="wait for the run, showing live progress")
    p.add_argument("--timeout", type=_seconds, default=None, help="with --wait: give up after SECONDS")
    p.add_argument("--quiet", action="store_true", help="with --wait: no live progress")
    p.add_argument(
        "--submit-timeout", type=_seconds, default=60.0, help="seconds to wait for a worker to accept"
    )
    _add_param_flags(p)
    p.set_defaults(func=cmd_run)

    p = reader("status", "show a run: state, steps, actions, errors")
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends")
    p.add_argument("--timeout", type=_seconds, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_status)

    p = reader("list", "list runs, newest first")
    p.add_argument("--active", action="store_true", help="only queued and running runs")
    p.add_argument("--server", help="only runs of this server (id or name)")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_list)

    p = reader("cancel", "cancel a run before its next step")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)

    p = reader("secret", "reveal the root password a run sealed (needs HCLOUD_FLOW_SECRET_KEY)")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_secret)

    p = reader("fleet", "run a workflow over many servers: sliding window, canary, error threshold")
    p.add_argument("workflow", help="workflow name (see `hcloud-flow workflows`)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--selector", help="Hetzner label selector, e.g. 'env=staging,role in (web,api)'")
    target.add_argument("--servers", help="comma-separated server ids or names, e.g. 1,2,srv-7")
    p.add_argument("--max-concurrency", required=True, metavar="N|P%", help="servers in flight at most")
    p.add_argument("--max-errors", required=True, metavar="N|P%", help="stop starting new servers past this")
    p.add_argument(
        "--canary", type=int, default=0, metavar="N", help="first N servers must all succeed first"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and its API budget; start nothing")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    p.add_argument("--timeout", type=_seconds, default=None, help="with --wait: give up after SECONDS")
    p.add_argument("--quiet", action="store_true", help="with --wait: no progress lines")
    _add_param_flags(p)
    p.set_defaults(func=cmd_fleet)

    p = reader("job", "show, list, pause, resume or cancel fleet jobs")
    p.add_argument("verb", choices=("status", "list", "pause", "resume", "cancel"))
    p.add_argument("job_id", nargs="?")
    p.add_argument("--wait", action="store_true", help="with status: follow the job until it ends")
    p.add_argument("--timeout", type=_seconds, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_job)

    p = reader("schedule", "maintenance windows: a cron schedule that starts a fleet job")
    p.add_argument("verb", choices=("add", "edit", "list", "show", "remove", "pause", "resume", "history"))
    p.add_argument("name", nargs="?", help="window name")
    p.add_argument("workflow", nargs="?", help="with add (or edit): the workflow to run")
    p.add_argument("--cron", help="five-field cron in the window's time zone, e.g. '0 3 * * SUN'")
    p.add_argument("--tz", help="IANA time zone of the cron (add: default UTC)")
    p.add_argument("--duration", help="how long the window stays open, e.g. 2h")
    p.add_argument("--cutoff", help="no new server starts this long before the end, e.g. 30m (add: 0)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--selector", help="label selector of the servers")
    target.add_argument("--servers", help="comma-separated server ids or names")
    p.add_argument("--max-concurrency", metavar="N|P%", help="add: default 1")
    p.add_argument("--max-errors", metavar="N|P%", help="add: default 0")
    p.add_argument("--canary", type=int, metavar="N", help="add: default 0")
    _add_param_flags(p)
    p.set_defaults(func=cmd_schedule)

    p = reader("workflows", "list the workflows and their parameters")
    p.set_defaults(func=cmd_workflows)

    p = sub.add_parser("worker", help="start a worker configured from the environment")
    p.add_argument("--concurrency", type=int, default=8, help="threads (default 8; tasks only post and park)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname", default=None)
    p.set_defaults(func=cmd_worker)

    p = reader("servers", "list the project's servers: status, labels, the run holding each")
    p.add_argument("--selector", help="only servers this label selector picks, e.g. 'env=staging'")
    p.add_argument("--submit-timeout", type=_seconds, default=60.0, help="seconds to wait for a worker")
    p.set_defaults(func=cmd_servers)

    p = reader("images", "list the project's snapshots and backups, with the run that made each")
    p.add_argument("--submit-timeout", type=_seconds, default=60.0, help="seconds to wait for a worker")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("beat", help="start the scheduler that fires maintenance windows")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser("flower", help="start Flower, the task monitor (needs FLOWER_BASIC_AUTH)")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default loopback)")
    p.set_defaults(func=cmd_flower)

    p = reader("demo", "run the demo: fakecloud, broker, store and worker in one process")
    p.add_argument("--servers", type=int, default=6, help="servers in the demo fleet (default 6)")
    p.set_defaults(func=cmd_demo)

    from fakecloud import cli as fake_cli

    p = sub.add_parser("fakecloud", help="serve the Hetzner Cloud API simulator")
    fake_cli.add_arguments(p)
    p.set_defaults(func=fake_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # The reader went away (`hcloud-flow list | head -5`): that is not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _dispatch(args: argparse.Namespace) -> int:
    import redis
    from kombu.exceptions import OperationalError

    from workers.errors import BadInput, HcloudFlowError, SecretError, ServerBusy, StillRunning

    try:
        return int(args.func(args) or 0)
    except (BadInput, ServerBusy, SecretError) as exc:
        return _refuse(args, exc, EXIT_BAD_INPUT)
    except (redis.ConnectionError, OperationalError) as exc:
        return _refuse(
            args, exc, EXIT_UNREACHABLE, f"cannot reach Redis ({exc}); check HCLOUD_FLOW_REDIS_URL"
        )
    except StillRunning as exc:
        return _refuse(args, exc, EXIT_STILL_RUNNING)
    except HcloudFlowError as exc:
        return _refuse(args, exc, EXIT_UNREACHABLE)
    except KeyboardInterrupt:
        print(
            "\nhcloud-flow: stopped waiting; what was submitted goes on: `hcloud-flow list --active` "
            "shows it, `hcloud-flow status RUN_ID --wait` follows a run",
            file=sys.stderr,
        )
        return 130


def _refuse(args: argparse.Namespace, exc: BaseException, code: int, message: str | None = None) -> int:
    """Say why a command stopped (as JSON on stdout too, under --json) and return its exit code."""
    text = message or str(exc)
    print(f"hcloud-flow: {text}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json({"error": {"type": type(exc).__name__, "message": text, "exit_code": code}})
    return code


if __name__ == "__main__":
    sys.exit(main())
