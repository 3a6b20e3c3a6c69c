"""Reads an operator needs beside the hcloud CLI: ``servers`` and ``images``, with our runs on them."""

from __future__ import annotations

from typing import Any

import click

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    json_option,
    print_json,
    project_option,
    runs,
    shown,
    split_servers,
    submit_timeout_option,
)

__all__ = ["COMMANDS"]


@click.command("servers")
@click.option("--selector", help="only servers this label selector picks, e.g. 'env=staging'")
@project_option
@submit_timeout_option
@json_option
def servers_cmd(selector: str | None, project: str | None, submit_timeout: float, as_json: bool) -> int:
    """List the project's servers: status, type, location, labels, and the run holding each."""
    rows = runs().servers(selector, timeout=submit_timeout, project=project)
    if as_json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        click.echo("no servers" + (f" match {selector!r}" if selector else ""))
        return EXIT_OK
    click.echo(
        f"{'ID':<10} {'NAME':<24} {'STATUS':<10} {'TYPE':<8} {'LOCATION':<9} {'HELD BY RUN':<18} LABELS"
    )
    for s in rows:
        labels = ",".join(f"{k}={v}" if v else k for k, v in sorted(s["labels"].items()))
        click.echo(
            f"{s['id']:<10} {shown(s['name']):<24} {s['status']:<10} {s['server_type'] or '-':<8} "
            f"{s['location'] or '-':<9} {s['held_by'] or '-':<18} {shown(labels)}"
        )
    return EXIT_OK


@click.group("images", invoke_without_command=True)
@project_option
@submit_timeout_option
@json_option
@click.pass_context
def images_cmd(ctx: click.Context, project: str | None, submit_timeout: float, as_json: bool) -> int:
    """List the project's snapshots and backups, with the run that made each (`images prune`: retention)."""
    if ctx.invoked_subcommand is not None:
        return EXIT_OK
    rows = runs().images(timeout=submit_timeout, project=project)
    if as_json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        click.echo("no snapshots or backups")
        return EXIT_OK
    click.echo(
        f"{'ID':<10} {'TYPE':<9} {'STATUS':<10} {'CREATED':<20} {'FROM SERVER':<20} "
        f"{'MADE BY RUN':<18} DESCRIPTION"
    )
    for i in rows:
        created = (i["created"] or "-")[:19].replace("T", " ")
        click.echo(
            f"{i['id']:<10} {i['type']:<9} {i['status']:<10} {created:<20} {i['from_server'] or '-':<20} "
            f"{i['run_id'] or '-':<18} {shown((i['description'] or '')[:60])}"
        )
    return EXIT_OK


@images_cmd.command("prune")
@click.option("--selector", help="the servers whose snapshots to prune, by label selector, e.g. 'env=prod'")
@click.option("--servers", help="comma-separated server ids or names (instead of --selector)")
@click.option(
    "--keep", type=int, metavar="N", help="keep the newest N snapshots hcloud-flow made of each server"
)
@click.option("--keep-within", metavar="DURATION", help="keep every one made within this long, e.g. 30d")
@click.option("--dry-run", is_flag=True, help="list what would be deleted; delete nothing")
@project_option
@submit_timeout_option
@json_option
def prune_cmd(
    selector: str | None,
    servers: str | None,
    keep: int | None,
    keep_within: str | None,
    dry_run: bool,
    project: str | None,
    submit_timeout: float,
    as_json: bool,
) -> int:
    """Delete older snapshots hcloud-flow made of each server beyond --keep/--keep-within (either keeps one).

    Never an image hcloud-flow did not make, a backup, one with delete protection, or one not available.
    """
    from workers.errors import BadInput
    from workflows.retention import check_policy
    from workflows.specs import Targets, checked

    check_policy(keep, keep_within, required=True)  # refused here, before anything is sent
    if (selector is None) == (servers is None):
        raise BadInput("give either --selector or --servers (one of them)")
    targets = {"selector": selector, "servers": split_servers(servers), "project": project}
    checked(Targets, targets)
    answer = runs().prune_images(
        **targets, keep=keep, keep_within=keep_within, dry_run=dry_run, timeout=submit_timeout
    )
    failed = sum(len(r["failed"]) for r in answer["servers"])
    if as_json:
        print_json(answer)
        return EXIT_FAILED if failed else EXIT_OK
    verb = "would delete" if dry_run else "deleted"
    gone_key = "would_delete" if dry_run else "deleted"
    for row in answer["servers"]:
        if row.get("skipped"):
            click.echo(f"{row['name']} ({row['server_id']}): skipped: {row['skipped']}")
            continue
        gone = row[gone_key]
        click.echo(f"{row['name']} ({row['server_id']}): {verb} {len(gone)}, kept {len(row['kept'])}")
        for image in gone:
            click.echo(
                f"  {verb} {image['id']}  {(image.get('created') or '')[:19]}  "
                f"{(image.get('description') or '')[:60]}"
            )
        for image in row["failed"]:
            click.echo(f"  FAILED {image['id']}: {image['error']}")
        for image in row["kept"]:
            click.echo(f"  kept {image['id']}  ({image['why']})")
    total = sum(len(r[gone_key]) for r in answer["servers"])
    click.echo(
        f"{verb} {total} snapshot(s) of {len(answer['servers'])} server(s)"
        + (f", {failed} failed" if failed else "")
    )
    return EXIT_FAILED if failed else EXIT_OK


@click.command("projects")
@json_option
def projects_cmd(as_json: bool) -> int:
    """List the projects the workers serve (as they noted them in Redis: no token here), with each one's
    API endpoint and rate budget; `--project NAME` picks one on the commands that act."""
    import time

    from workers.runtime import noted_projects
    from workflows.web.state import budgets

    store = runs().store.redis
    noted = noted_projects(store)
    left = {b["bucket"]: b for b in budgets(store, time.time())}
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "default": bool(entry.get("default")),
            "endpoint": entry.get("endpoint"),
            "budget": {k: left[entry["bucket"]][k] for k in ("remaining", "limit")}
            if entry.get("bucket") in left
            else None,
            "noted": entry.get("seen"),
        }
        for name, entry in sorted(noted.items(), key=lambda item: (not item[1].get("default"), item[0]))
    ]
    if as_json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        click.echo("no projects noted: no worker has started on this Redis yet")
        return EXIT_OK
    click.echo(f"{'NAME':<20} {'DEFAULT':<8} {'BUDGET':<14} ENDPOINT")
    for row in rows:
        budget = row["budget"]
        shown = f"{budget['remaining']:.0f}/{budget['limit']:.0f}" if budget else "-"
        click.echo(f"{row['name']:<20} {'yes' if row['default'] else '':<8} {shown:<14} {row['endpoint']}")
    return EXIT_OK


COMMANDS = (servers_cmd, images_cmd, projects_cmd)
