"""``hcloud-flow fakecloud`` / ``python -m fakecloud``: serve the simulator until interrupted.

The first line on stdout is the base URL (``http://HOST:PORT/v1``), flushed, so a parent process can read it
and then talk to the port it picked (``--port 0``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from .clock import check_skew
from .faults import FaultSpec, parse_faults
from .server import start
from .transitions import COMMAND_TO_NAME, TRANSITIONS

__all__ = ["add_arguments", "build_parser", "main", "run"]

FAULTS_HELP = """\
comma-separated name=probability items, probability in [0, 1]:
  502=P           answer 502 with an HTML body (request not processed)
  503=P / 504=P   answer 503 unavailable / 504 timeout (request not processed)
  conflict=P      answer 409 conflict to action POSTs (request not processed; alias 409)
  429=P           answer an extra 429 rate_limit_exceeded
  slow=P@S        process the request, answer S seconds later (default S=2)
  drop_answer=P   an action POST starts its action, then the connection closes without an answer
  action_error=P  the action is accepted but ends in error (action_failed or unknown_error)
  acpi_ignore=F   fraction F of servers (fixed by --seed) ignore shutdown/reboot
example: 502=0.02,503=0.02,504=0.01,conflict=0.05,429=0.05,slow=0.01@3,action_error=0.03,acpi_ignore=0.2
'none' (the default) turns every fault off."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: use an integer 0-65535 (0 picks a free port)"
        ) from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: use 0-65535 (0 picks a free port)")
    return port


def _servers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid server count {text!r}: use an integer >= 0") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"invalid server count {count}: use an integer >= 0")
    return count


def _speed(text: str) -> float:
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid speed {text!r}: use a number > 0, e.g. 10 for 10x"
        ) from None
    if not speed > 0:
        raise argparse.ArgumentTypeError(
            f"invalid speed {speed:g}: use a number > 0 (1 = real time, 10 = 10x)"
        )
    return speed


def _rate_limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid rate limit {text!r}: requests per hour, an integer >= 1"
        ) from None
    if limit < 1:
        raise argparse.ArgumentTypeError(f"invalid rate limit {limit}: requests per hour, an integer >= 1")
    return limit


def _faults(text: str) -> FaultSpec:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid --faults: {exc}") from None


def _skew(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --skew {text!r}: use seconds, e.g. -30 for an API clock 30 s behind"
        ) from None
    try:
        return check_skew(seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid --skew: {exc}") from None


def _durations(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, eq, seconds = item.partition("=")
        name = COMMAND_TO_NAME.get(name.strip(), name.strip())
        if not eq or name not in TRANSITIONS:
            raise argparse.ArgumentTypeError(
                f"invalid --durations item {item!r}: use action=seconds, "
                f"action one of {', '.join(TRANSITIONS)}"
            )
        try:
            out[name] = float(seconds)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid seconds in --durations item {item!r}") from None
        if out[name] < 0:
            raise argparse.ArgumentTypeError(f"invalid --durations item {item!r}: seconds must be >= 0")
    return out


class _Once(argparse.Action):
    """Keep an option's value, refusing it given twice: argparse keeps the last silently, and
    `--port 1 --port 2` listened on 2 (an outside test), where hcloud-flow's own CLI refuses a repeat."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        seen: set[str] = getattr(namespace, "_given", set())
        if self.dest in seen:
            parser.error(f"{option} is given more than once; give it once")
        namespace._given = seen | {self.dest}
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fakecloud options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = "Serve a simulated Hetzner Cloud API under /v1 (test controls under /_fakecloud)."
    parser.epilog = "--faults SPEC: " + FAULTS_HELP

    def once(*names: str, **options: Any) -> None:
        parser.add_argument(*names, action=_Once, **options)

    once("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    once("--port", type=_port, default=8080, help="port; 0 picks a free one (default 8080)")
    once("--servers", type=_servers, default=10, help="servers to seed (default 10)")
    once("--token", default="fakecloud-token", help="the accepted Bearer token")
    once("--seed", type=int, default=1, help="seed for the fleet and the fault dice (default 1)")
    once("--speed", type=_speed, default=1.0, help="time factor: durations / speed (default 1)")
    once("--rate-limit", type=_rate_limit, default=3600, help="requests per hour per project (default 3600)")
    once("--faults", type=_faults, default=FaultSpec(), metavar="SPEC", help="faults, see below")
    once(
        "--durations",
        type=_durations,
        default={},
        metavar="SPEC",
        help="override action durations in seconds at speed 1, e.g. rebuild=10,create_image=5",
    )
    once(
        "--skew",
        type=_skew,
        default=0.0,
        metavar="SECONDS",
        help="the API's clock offset in every time it reports; negative = behind (default 0)",
    )
    once(
        "--id-space",
        type=_id_space,
        default=0,
        metavar="N",
        help="0-99: a second project of one API takes 1, so the two never share a server, action or "
        "image id, as on the real API (default 0)",
    )


def _id_space(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 99")
    return value


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    try:
        fc = start(
            host=args.host,
            port=args.port,
            servers=args.servers,
            token=args.token,
            seed=args.seed,
            speed=args.speed,
            rate_limit=args.rate_limit,
            faults=args.faults,
            durations=args.durations or None,
            skew=args.skew,
            id_space=args.id_space,
        )
    except OSError as exc:
        print(
            f"fakecloud: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
            "pick another --port (0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    stopped = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stopped.set()

    # Before the URL is printed: a caller may signal as soon as it has read it (and a signal before the
    # handler killed the process with SIGINT's default, not a clean stop).
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(fc.base_url, flush=True)
    print(
        f"fakecloud: {len(fc.backend.servers)} servers, token {args.token!r}, faults {args.faults}, "
        f"controls at {fc.control_url}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        fc.stop()
    return 0


def build_parser(prog: str = "python -m fakecloud") -> argparse.ArgumentParser:
    """Return a parser with the fakecloud options."""
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run."""
    return run(build_parser().parse_args(argv))
