"""The fleet dry run: which servers, which steps on each, what the job will spend, how long it should take."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from workers.engine import Engine
from workers.errors import BadInput
from workers.labels import STEP_LABEL
from workers.server_actions import ACTIONS

from .build import plan_steps
from .definitions import WORKFLOWS
from .fleet_plan import GATES, estimate, waves_needed
from .gates import first_block
from .retention import Policy, decide

__all__ = ["describe"]

# Seconds an action typically takes when this installation has not measured it yet (its monitor learns).
TYPICAL_SECONDS = {
    "start_server": 10,
    "stop_server": 5,
    "reboot_server": 10,
    "reset_server": 10,
    "shutdown_server": 15,
    "reset_password": 5,
    "enable_rescue": 5,
    "disable_rescue": 5,
    "create_image": 90,
    "rebuild_server": 60,
}


def describe(plan: dict[str, Any], engine: Engine) -> dict[str, Any]:
    """Return the dry-run report of a validated fleet plan; nothing is started."""
    wf = WORKFLOWS[plan["workflow"]]
    facts_params = plan["facts"]["params"]
    prune = _would_prune(engine, plan["servers"], facts_params)
    rows, step_counts, seconds = [], [], []
    for server in plan["servers"]:
        try:
            steps, refused = plan_steps(wf, {"server": server, "params": facts_params}, "dry-run"), None
        except BadInput as exc:  # this server alone (booting, say): the job would refuse it as it came
            steps, refused = [], exc.message
        rows.append(
            {
                "id": server["id"],
                "name": server["name"],
                "status": server["status"],
                "location": (server.get("location") or {}).get("name"),
                "placement_group": (server.get("placement_group") or {}).get("name"),
                # By name when a drain read them; else the ids the server object names.
                "load_balancers": [m["name"] for m in plan["drain"].get(int(server["id"]), [])]
                or [f"id {i}" for i in server.get("load_balancers") or []],
                "steps": [s["name"] for s in steps],
                **({"refused": refused} if refused else {}),
                **({"would_prune": prune[int(server["id"])]} if prune is not None else {}),
            }
        )
        if refused:
            continue  # refused, it would spend no request and no time: left out of the estimate
        step_counts.append(len(steps))
        seconds.append(
            sum(_expected(engine, ACTIONS[s["action"]].command) for s in steps if s["action"] in ACTIONS)
        )
    budget = engine.client.budget.snapshot() if engine.client.budget is not None else {}
    limit = float(budget.get("limit", 3600))
    remaining = float(budget.get("tokens", limit))
    refill = engine.client.budget.refill_per_second if engine.client.budget is not None else 0.0
    figures = estimate(
        len(step_counts),
        sum(step_counts) / max(1, len(step_counts)),
        max(seconds, default=0.0),
        plan["max_concurrency"],
        remaining=remaining,
        limit=limit,
        refill_per_second=refill or limit / 3600,
        waves=waves_needed(
            [
                {
                    "placement_group": (s.get("placement_group") or {}).get("id"),
                    "location": (s.get("location") or {}).get("name"),
                }
                for s in plan["servers"]
            ],
            plan["max_concurrency"],
            plan["canary"],
            plan["max_per_placement_group"],
            plan["max_per_location"],
        ),
    )
    return {
        "workflow": wf.name,
        "servers": rows,
        "max_concurrency": plan["max_concurrency"],
        "max_errors": plan["max_errors"],
        "canary": plan["canary"],
        "max_per_placement_group": plan["max_per_placement_group"],
        "max_per_location": plan["max_per_location"],
        "limits": plan["limits"],
        # What the job will stop and wait for: each approval gate, and when it gives up on one.
        "gates": [
            f"{GATES[g][1]} (`hcloud-flow job approve`; cancelled after {plan['approval_timeout']} s without)"
            for g in plan["gates"]
        ]
        + [f"no server starts while {_host(u)} answers non-2xx or lists alerts" for u in plan["block_on"]]
        + (
            [
                "each server is taken out of the load balancers that target it before its run, put back "
                "after, and waited for until they report it healthy on every port"
            ]
            if plan["drain"]
            else []
        )
        + (
            [
                f"each server counts as done once {plan['health']['check']} is healthy for "
                f"{plan['health']['settle']} s (failed if not within {plan['health']['timeout']} s)"
            ]
            if plan.get("health")
            else []
        ),
        # Servers that load balancers send traffic to while they are disrupted: drain says what it does.
        "drain": bool(plan["drain"]),
        "warnings": _warnings(plan, wf.name, wf.disruptive),
        # Looked at now, as the job would before its first wave.
        "blocked_now": first_block(plan["block_on"]) if plan["block_on"] else None,
        **_with_prune(_with_drain(figures, plan["drain"]), prune),
    }


def _would_prune(
    engine: Engine, servers: list[dict[str, Any]], params: dict[str, Any]
) -> dict[int, list[int]] | None:
    """Return, per server, the snapshots the job's retention would delete once its new one exists (one
    listing of the project's snapshots we made); None when the job keeps everything."""
    policy = Policy(params.get("keep"), params.get("keep_within"))
    if not policy:
        return None
    made = engine.client.list_images(type="snapshot", label_selector=STEP_LABEL)
    now = engine.clock()
    out = {}
    for server in servers:
        # The snapshot the run will make: the newest, and kept.
        coming = {
            "id": 0,
            "type": "snapshot",
            "status": "creating",
            "created": _iso(now),
            "labels": {STEP_LABEL: ""},
            "created_from": {"id": server["id"]},
        }
        decision = decide([coming, *made], int(server["id"]), policy, now, just_made=0)
        out[int(server["id"])] = [int(i["id"]) for i in decision.delete]
    return out


def _with_prune(figures: dict[str, Any], prune: dict[int, list[int]] | None) -> dict[str, Any]:
    """Add what retention spends: per server one listing of our snapshots and one DELETE per one to go."""
    if prune is None:
        return figures
    extra = len(prune) + sum(len(ids) for ids in prune.values())
    return {**figures, "api_requests": figures["api_requests"] + extra}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _with_drain(figures: dict[str, Any], drain: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Add what a drain spends: per server and load balancer a remove and an add, and about three reads
    (the actions, the load balancer's health until it says healthy); and per server the wait for healthy
    (a load balancer's first health checks: about 15 s, once per wave that holds one)."""
    if not drain:
        return figures
    pairs = sum(len(m) for m in drain.values())
    return {
        **figures,
        "api_requests": figures["api_requests"] + 5 * pairs,
        "estimated_seconds": figures["estimated_seconds"] + 15 * min(len(drain), figures["waves"]),
    }


def _warnings(plan: dict[str, Any], workflow: str, disruptive: bool) -> list[str]:
    """What the plan should make a cautious operator look twice at."""
    out = []
    targets = sum(1 for s in plan["servers"] if s.get("load_balancers"))
    if targets and disruptive and not plan["drain"]:
        out.append(
            f"{targets} of the servers are load-balancer targets: --drain takes each out while disrupted"
        )
    if plan.get("drain_skipped"):
        out.append(f"--drain does nothing for {workflow}: it interrupts nothing")
    return out


def _expected(engine: Engine, command: str) -> float:
    learned = engine.durations.expected(command) if engine.durations is not None else None
    # The API stamps times to the second, so a learned 0 means "under a second", not free.
    return max(1.0, learned) if learned is not None else float(TYPICAL_SECONDS[command])


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc
