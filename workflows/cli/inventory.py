"""Reads an operator needs beside the hcloud CLI: ``servers`` and ``images``, with our runs on them."""

from __future__ import annotations

import click

from .common import EXIT_OK, json_option, print_json, project_option, runs, submit_timeout_option

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
            f"{s['id']:<10} {s['name']:<24} {s['status']:<10} {s['server_type'] or '-':<8} "
            f"{s['location'] or '-':<9} {s['held_by'] or '-':<18} {labels}"
        )
    return EXIT_OK


@click.command("images")
@project_option
@submit_timeout_option
@json_option
def images_cmd(project: str | None, submit_timeout: float, as_json: bool) -> int:
    """List the project's snapshots and backups, with the run that made each."""
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
            f"{i['run_id'] or '-':<18} {(i['description'] or '')[:60]}"
        )
    return EXIT_OK


COMMANDS = (servers_cmd, images_cmd)
