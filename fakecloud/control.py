"""Test and benchmark controls under ``/_fakecloud``: JSON in and out, no auth, no rate limit, no faults.

- ``GET /_fakecloud/stats`` → ``{"requests": [{"method", "route", "status", "count"}], "total",
  "rate_limited", "injected_faults": {fault: n}}`` (``/v1`` traffic only)
- ``GET /_fakecloud/requests?since=SEQ[&limit=N]`` → ``{"requests": [{"seq", "time", "method", "path",
  "route", "status", "server_id", "action_id", "command", "dropped"}], "next": SEQ}``
- ``POST /_fakecloud/reset`` ``{"servers"?, "seed"?, + any config key}`` → fresh state
- ``POST /_fakecloud/seed`` ``{"servers": N, "labels"?, "status"?}`` → ``{"ids": [...]}``
- ``GET|PUT /_fakecloud/config`` ``{"speed", "rate_limit", "durations", "faults", "skew",
  "drop_answer_next"}``; PUT merges given keys. ``skew``: seconds the API's clock is ahead (negative:
  behind) in every time ``/v1`` reports. ``drop_answer_next``: the answers of that many coming action POSTs
  that start an action are dropped for certain (sets the count; GET shows what is left)
- ``PATCH /_fakecloud/servers/{id}`` ``{"acpi", "status", "protection", "labels", "fail_next"}``
- ``POST /_fakecloud/clock/advance`` ``{"seconds": x}`` → ``{"now"}``; 409 unless the clock is manual
- ``GET /_fakecloud/secrets`` → ``{"root_passwords": [...], "token"}``
- ``GET /_fakecloud/actions`` → ``{"actions": [{"id", "server_id", "name", "command", "status",
  "started_at", "finished_at"}]}`` with UNIX times to the microsecond (the API's own are to the second),
  for benchmarks that measure how soon a client noticed an action's end
"""

from __future__ import annotations

import json
from typing import Any

from .backend import Backend
from .clock import check_skew
from .exceptions import Conflict, InvalidInput, JsonError, NotFound
from .faults import ACTION_ERRORS
from .labels import compile_selector, validate_labels
from .listing import Request, is_uint, one
from .transitions import COMMAND_TO_NAME, SERVER_STATUSES

__all__ = ["ROUTES", "config_json"]

Answer = tuple[int, dict[str, Any]]
CONFIG_KEYS = frozenset({"speed", "rate_limit", "durations", "faults", "skew", "drop_answer_next"})


def _body(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise JsonError(f"request body is not valid JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JsonError("request body must be a JSON object")
    return data


def _count(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput.field(name, f"must be an integer >= 0, got {value!r}")
    return value


def config_json(backend: Backend) -> dict[str, Any]:
    """Return the current configuration."""
    return {
        "speed": backend.clock.speed,
        "rate_limit": backend.bucket.limit,
        "durations": {name: t.duration for name, t in backend.transitions.items()},
        "faults": backend.faults.to_dict(),
        "fault_spec": str(backend.faults),
        "seed": backend.seed,
        "clock": "manual" if getattr(backend.clock, "manual", False) else "real",
        "now": backend.clock.now(),  # the true time; /v1 reports now + skew
        "skew": backend.skew,
        "drop_answer_next": backend.drop_answer_next,
    }


def apply_config(backend: Backend, body: dict[str, Any]) -> None:
    """Apply the config keys present in ``body``; validate everything before changing anything."""
    unknown = sorted(set(body) - CONFIG_KEYS)
    if unknown:
        raise InvalidInput.field(unknown[0], f"unknown config key; known: {', '.join(sorted(CONFIG_KEYS))}")
    try:
        faults = backend.faults.merged(body.get("faults"))
    except ValueError as exc:
        raise InvalidInput.field("faults", str(exc)) from None
    speed = body.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, int | float) or speed <= 0):
        raise InvalidInput.field("speed", f"must be a number > 0, got {speed!r}")
    rate_limit = body.get("rate_limit")
    if rate_limit is not None and (
        isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
    ):
        raise InvalidInput.field("rate_limit", f"must be an integer >= 1, got {rate_limit!r}")
    skew = body.get("skew")
    if skew is not None:
        try:
            skew = check_skew(skew)
        except ValueError as exc:
            raise InvalidInput.field("skew", str(exc)) from None
    drop_answer_next = _count(body, "drop_answer_next") if "drop_answer_next" in body else None
    durations = body.get("durations")
    if durations is not None:
        if not isinstance(durations, dict):
            raise InvalidInput.field("durations", "must be an object of {action: seconds}")
        saved = dict(backend.transitions)
        try:
            backend.set_durations(durations)
        except (TypeError, ValueError) as exc:
            backend.transitions = saved
            raise InvalidInput.field("durations", str(exc)) from None
    backend.faults = faults
    if skew is not None:
        backend.skew = skew
    if drop_answer_next is not None:
        backend.drop_answer_next = drop_answer_next
    if speed is not None:
        backend.set_speed(speed)
    if rate_limit is not None:
        backend.bucket.set_limit(rate_limit)  # a new limit starts with a full bucket


def get_stats(backend: Backend, request: Request) -> Answer:
    """GET /_fakecloud/stats"""
    return 200, backend.traffic.stats()


def get_requests(backend: Backend, request: Request) -> Answer:
    """GET /_fakecloud/requests?since=SEQ[&limit=N]"""
    values = {}
    for name in ("since", "limit"):
        raw = one(request.query, name)
        if raw is not None and not is_uint(raw):
            raise InvalidInput.field(name, f"must be an integer >= 0, got {raw!r}")
        values[name] = None if raw is None else int(raw)
    return 200, backend.traffic.since(values["since"] or 0, values["limit"])


def post_reset(backend: Backend, request: Request) -> Answer:
    """POST /_fakecloud/reset"""
    body = _body(request)
    servers = _count(body, "servers", backend.initial_servers) if "servers" in body else None
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
        raise InvalidInput.field("seed", "must be an integer or a string")
    config = {k: v for k, v in body.items() if k not in ("servers", "seed")}
    apply_config(backend, config)
    backend.reset(servers=servers, seed=seed)  # disarms drop_answer_next ...
    if "drop_answer_next" in config:
        backend.drop_answer_next = config["drop_answer_next"]  # ... unless this very reset arms it
    return 200, {"servers": sorted(backend.servers), "config": config_json(backend)}


def post_seed(backend: Backend, request: Request) -> Answer:
    """POST /_fakecloud/seed"""
    body = _body(request)
    count = _count(body, "servers")
    labels = validate_labels(body["labels"]) if body.get("labels") is not None else None
    status = body.get("status")
    if status is not None and status not in SERVER_STATUSES:
        raise InvalidInput.field("status", f"unknown server status {status!r}")
    return 200, {"ids": backend.seed_servers(count, labels=labels, status=status)}


def get_config(backend: Backend, request: Request) -> Answer:
    """GET /_fakecloud/config"""
    return 200, config_json(backend)


def put_config(backend: Backend, request: Request) -> Answer:
    """PUT /_fakecloud/config"""
    apply_config(backend, _body(request))
    return 200, config_json(backend)


def _fail_next(value: Any) -> tuple[str, tuple[str, str]]:
    if not isinstance(value, dict) or not isinstance(value.get("command"), str):
        raise InvalidInput.field(
            "fail_next", 'must look like {"command": "create_image", "code"?, "message"?}'
        )
    name = str(COMMAND_TO_NAME.get(value["command"], value["command"]))
    if name not in COMMAND_TO_NAME.values():
        raise InvalidInput.field("fail_next", f"unknown action {value['command']!r}")
    code = value.get("code") or ACTION_ERRORS[0][0]
    default_message = dict(ACTION_ERRORS).get(code, "Action failed")
    return name, (str(code), str(value.get("message") or default_message))


def patch_server(backend: Backend, request: Request) -> Answer:
    """PATCH /_fakecloud/servers/{id}"""
    if not is_uint(request.args[0]):
        raise NotFound(f"server with ID {request.args[0]!r} not found")
    server = backend.server(int(request.args[0]))
    body = _body(request)
    acpi = body.get("acpi", server.acpi_override)
    if acpi is not None and not isinstance(acpi, bool):
        raise InvalidInput.field("acpi", "must be true, false or null (null: as the seed decides)")
    status = body.get("status", server.status)
    if status not in SERVER_STATUSES:
        raise InvalidInput.field("status", f"unknown server status {status!r}")
    protection = body.get("protection") or {}
    if not isinstance(protection, dict) or any(
        k not in ("delete", "rebuild") or not isinstance(v, bool) for k, v in protection.items()
    ):
        raise InvalidInput.field("protection", 'must look like {"delete": bool, "rebuild": bool}')
    labels = validate_labels(body["labels"]) if body.get("labels") is not None else None
    fail = _fail_next(body["fail_next"]) if body.get("fail_next") is not None else None
    server.acpi_override = acpi
    server.status = status
    server.protection_delete = protection.get("delete", server.protection_delete)
    server.protection_rebuild = protection.get("rebuild", server.protection_rebuild)
    if labels is not None:
        server.labels = labels
    if fail is not None:
        server.fail_next[fail[0]] = fail[1]
    return 200, {
        "server": backend.server_json(server),
        "acpi": server.honours_acpi(backend.faults.acpi_ignore),
        "fail_next": {name: {"code": c, "message": m} for name, (c, m) in server.fail_next.items()},
    }


def post_placement_group(backend: Backend, request: Request) -> Answer:
    """POST /_fakecloud/placement_groups: a spread group of the given servers (the API's own POST needs
    the servers stopped and added one by one; tests want the group as it stands)."""
    body = _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 63:
        raise InvalidInput.field("name", "must be a name of 1-63 characters")
    members = body.get("servers") or []
    if not isinstance(members, list) or not all(is_uint(str(i)) for i in members):
        raise InvalidInput.field("servers", "must be a list of server ids")
    labels = validate_labels(body.get("labels") or {})
    group = backend.add_placement_group(name, labels, [int(i) for i in members])
    return 201, {"placement_group": backend.placement_group_json(group)}


def post_load_balancer(backend: Backend, request: Request) -> Answer:
    """POST /_fakecloud/load_balancers: a load balancer with its services and targets, as a test sets it up
    (the API's own POST /load_balancers is not simulated)."""
    from .load_balancers import Target

    body = _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 63:
        raise InvalidInput.field("name", "must be a name of 1-63 characters")
    ports = body.get("ports") or [80]
    if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise InvalidInput.field("ports", "must be a list of listen ports")
    services = [
        {"protocol": "tcp", "listen_port": p, "destination_port": p, "proxyprotocol": False,
         "health_check": {"protocol": "tcp", "port": p, "interval": 15, "timeout": 10, "retries": 3}}
        for p in ports
    ]  # fmt: skip
    now = backend.clock.now() - 3600.0  # set up an hour ago: its targets' first health checks are long done
    targets = []
    for sid in body.get("servers") or []:
        if not is_uint(str(sid)):
            raise InvalidInput.field("servers", "must be a list of server ids")
        backend.server(int(sid))
        targets.append(Target(added=now, server_id=int(sid)))
    for selector in body.get("selectors") or []:
        compile_selector(str(selector))
        targets.append(Target(added=now, selector=str(selector)))
    delay = body.get("health_delay", 3.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise InvalidInput.field("health_delay", "must be a number of seconds >= 0")
    with backend.lock:
        lb = backend.add_load_balancer(name, services, targets, float(delay))
    return 201, {"load_balancer": lb.to_json(backend)}


def post_clock_advance(backend: Backend, request: Request) -> Answer:
    """POST /_fakecloud/clock/advance"""
    if not getattr(backend.clock, "manual", False):
        raise Conflict("the clock is real; start fakecloud with clock=ManualClock() to move time by hand")
    seconds = _body(request).get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise InvalidInput.field("seconds", f"must be a number >= 0, got {seconds!r}")
    now = backend.clock.advance(seconds)  # type: ignore[attr-defined]
    backend.tick()
    return 200, {"now": now}


def get_secrets(backend: Backend, request: Request) -> Answer:
    """GET /_fakecloud/secrets"""
    return 200, {"root_passwords": list(backend.root_passwords), "token": backend.token}


def get_actions(backend: Backend, request: Request) -> Answer:
    """GET /_fakecloud/actions"""
    backend.tick()
    with backend.lock:
        actions = [
            {
                "id": a.id,
                "server_id": a.server_id,
                "name": a.name,
                "command": a.command,
                "status": a.status,
                "started_at": a.started,
                "finished_at": a.finished,
            }
            for a in backend.actions.values()
        ]
    return 200, {"actions": actions}


ROUTES = [
    ("GET", "/stats", get_stats),
    ("GET", "/requests", get_requests),
    ("POST", "/reset", post_reset),
    ("POST", "/seed", post_seed),
    ("GET", "/config", get_config),
    ("PUT", "/config", put_config),
    ("PATCH", "/servers/{id}", patch_server),
    ("POST", "/placement_groups", post_placement_group),
    ("POST", "/load_balancers", post_load_balancer),
    ("POST", "/clock/advance", post_clock_advance),
    ("GET", "/secrets", get_secrets),
    ("GET", "/actions", get_actions),
]
