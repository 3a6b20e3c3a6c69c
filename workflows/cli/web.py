"""The web service: ``web`` serves the HTTP API, the dashboard and /metrics; ``apikey`` manages its keys."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING

import click

from .common import EXIT_OK, json_option, print_json

if TYPE_CHECKING:
    from workflows.web.keys import KeyFile

__all__ = ["COMMANDS"]

_KEYS_ENV = "HCLOUD_FLOW_API_KEYS_FILE"


def _key_file() -> KeyFile:
    from workers.errors import BadInput
    from workflows.web.keys import KeyFile

    path = os.environ.get(_KEYS_ENV, "").strip()
    if not path:
        raise BadInput(
            f"set {_KEYS_ENV} to the file that holds the API keys' hashes (it is created if missing)"
        )
    return KeyFile(path)


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
)
@click.option(
    "--proxy",
    "proxies",
    metavar="IP",
    multiple=True,
    help="the TLS proxy in front (repeatable): its X-Forwarded-Proto/-For are believed, so the session "
    "cookie is marked Secure behind it",
)
def web_cmd(host: str, port: int, log_level: str, proxies: tuple[str, ...]) -> int:
    """Serve the HTTP API (/api/v1, /openapi.json), the dashboard (/) and /metrics. Needs Redis and
    HCLOUD_FLOW_API_KEYS_FILE, never the API token."""
    import uvicorn

    from workflows.web.app import create_app
    from workflows.web.services import from_environment

    keys = _key_file()
    if not keys.list():
        click.echo(
            f"hcloud-flow: warning: {keys.path} holds no key yet: every request will be refused until "
            "`hcloud-flow apikey add NAME --role viewer|operator`",
            err=True,
        )
    for ip in proxies:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise click.BadParameter(f"{ip!r} is not an IP address", param_hint="--proxy") from None
    app = create_app(from_environment(str(keys.path)))
    # Forwarded headers are believed only from the proxies named: behind one, terminate TLS there (the
    # request's scheme is then https, and the session cookie Secure) and keep this on loopback.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        proxy_headers=bool(proxies),
        forwarded_allow_ips=list(proxies) or None,
        server_header=False,
    )
    return EXIT_OK


@click.group("apikey")
def apikey_group() -> None:
    """API keys of the web service, kept as hashes in HCLOUD_FLOW_API_KEYS_FILE."""


@apikey_group.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator"]),
    required=True,
    help="viewer reads; operator also writes",
)
def apikey_add(name: str, role: str) -> int:
    """Make a key called NAME and print it (alone, once: only its hash is kept)."""
    key = _key_file().add(name, role)
    click.echo(key)
    return EXIT_OK


@apikey_group.command("list")
@json_option
def apikey_list(as_json: bool) -> int:
    """List the keys' names and roles (never the keys)."""
    import time

    keys = _key_file().list()
    if as_json:
        print_json(keys)
        return EXIT_OK
    for k in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(k.get("created") or 0)))
        click.echo(f"{k['name']:<30} {k['role']:<9} {created} UTC")
    if not keys:
        click.echo("no API keys")
    return EXIT_OK


@apikey_group.command("remove")
@click.argument("name")
def apikey_remove(name: str) -> int:
    """Remove the key called NAME (the web service stops taking it at once)."""
    _key_file().remove(name)
    click.echo(f"removed API key {name}")
    return EXIT_OK


COMMANDS = (web_cmd, apikey_group)
