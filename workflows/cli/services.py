"""The long-running parts, started with the project's settings: ``worker``, ``beat``, ``flower``,
``fakecloud``, and ``demo`` (all of them in one process)."""

from __future__ import annotations

import os

import click

from .common import EXIT_OK, json_option

__all__ = ["COMMANDS"]

_LOGLEVEL = click.option(
    "--loglevel",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
)


@click.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="threads (tasks only post and park, so few go far)",
)
@_LOGLEVEL
@click.option("--hostname", default=None, help="the worker's node name (Celery's default: celery@HOST)")
def worker_cmd(concurrency: int, loglevel: str, hostname: str | None) -> int:
    """Start a worker configured from the environment (it refuses to start without a usable token)."""
    from workers.app import app

    argv = [
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "-Q",
        "hcloud_flow",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)
    return EXIT_OK


@click.command("beat")
@_LOGLEVEL
def beat_cmd(loglevel: str) -> int:
    """Start the scheduler that fires maintenance windows (one holds the lock; others stand by)."""
    from workers.app import app

    app.start(["beat", "-S", "workflows.beat:Scheduler", "--loglevel", loglevel])
    return EXIT_OK


@click.command("flower")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="address to listen on")
def flower_cmd(port: int, address: str) -> int:
    """Start Flower, the task monitor (needs FLOWER_BASIC_AUTH=user:password, or FLOWER_BASIC_AUTH_FILE)."""
    from workers.errors import BadInput, ConfigError
    from workers.projects import read_secret

    try:
        auth = read_secret(os.environ, "FLOWER_BASIC_AUTH")
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    user, colon, password = auth.partition(",")[0].partition(":")
    if not (user.strip() and colon and password.strip()):
        # Flower's HTTP API can cancel and send tasks: never without credentials (":" lets anybody in).
        raise BadInput(
            "set FLOWER_BASIC_AUTH (or FLOWER_BASIC_AUTH_FILE, a file holding it) to user:password, both "
            "non-empty, first; Flower needs it"
        )
    # Flower reads FLOWER_BASIC_AUTH from its own environment: the credentials never go on a command line,
    # which `ps` shows to every user of the host.
    os.environ.pop("FLOWER_BASIC_AUTH_FILE", None)
    os.environ["FLOWER_BASIC_AUTH"] = auth
    from workers.app import app

    app.start(["flower", f"--port={port}", f"--address={address}"])
    return EXIT_OK


@click.command(
    "fakecloud",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fakecloud_cmd(args: tuple[str, ...]) -> int:
    """Serve the Hetzner Cloud API simulator (`hcloud-flow fakecloud --help` lists its options)."""
    from fakecloud import cli as fake_cli

    # The simulator keeps its own parser, shared with `python -m fakecloud`.
    return fake_cli.run(fake_cli.build_parser("hcloud-flow fakecloud").parse_args(list(args)))


@click.command("demo")
@click.option(
    "--servers",
    type=click.IntRange(6, 50),
    default=6,
    show_default=True,
    help="servers in the simulated fleet; the scenario acts on the first 6, the rest stay idle",
)
@json_option
def demo_cmd(servers: int, as_json: bool) -> int:
    """Run the demo: fakecloud, broker, store and worker in one process, a workflow of each kind."""
    from workflows.demo import run_demo

    return run_demo(json_out=as_json, servers=servers)


@click.command("keygen")
def keygen_cmd() -> int:
    """Print a new sealing key for HCLOUD_FLOW_SECRET_KEY (to rotate: "NEW,OLD" until old runs expire)."""
    from workers.sealing import generate_key

    click.echo(generate_key())
    return 0


COMMANDS = (worker_cmd, beat_cmd, flower_cmd, fakecloud_cmd, demo_cmd, keygen_cmd)
