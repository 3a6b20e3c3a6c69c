"""Load-balancer drain: a server that is a direct target of a load balancer is taken out before its run and
put back after, and counts as done only once every load balancer reports it healthy on every port.

A fleet job with ``drain`` walks each such server through these states (kept in its outcome entry, so any
worker can carry on after a crash; every request here is safe to send again):

    draining    remove_target sent (or to send) to each of its load balancers; the run starts once done
    out         its run is going on
    restoring   add_target sent (or to send); waits until every load balancer says healthy on every port
    back        in again: the server is done (or its health check, if any, starts now)

A server that a load balancer reaches through a *label selector* cannot be taken out by removing it (the
selector would match it again): such a job is refused before anything starts, naming the load balancer and
the selector. The API's "already removed" (``load_balancer_target_not_found``) and "already there"
(``target_already_defined``) answers count as done: that is what makes sending again safe.
"""

from __future__ import annotations

from typing import Any

from workers.client import HcloudClient
from workers.errors import APIError, BadInput, HcloudFlowError

__all__ = ["Drainer", "memberships", "refuse_selector_targets", "target_health"]

# The API's answers that mean the target is already as we want it.
_ALREADY = {"remove_target": "load_balancer_target_not_found", "add_target": "target_already_defined"}


def memberships(lbs: list[dict[str, Any]], server_ids: set[int]) -> dict[int, list[dict[str, Any]]]:
    """Return, per server, the load balancers that target it: ``{"lb", "name", "via", "selector"}``."""
    out: dict[int, list[dict[str, Any]]] = {}
    for lb in lbs:
        for target in lb.get("targets") or []:
            if target.get("type") == "server":
                sid = int((target.get("server") or {}).get("id", 0))
                if sid in server_ids:
                    out.setdefault(sid, []).append({"lb": lb["id"], "name": lb["name"], "via": "server"})
            elif target.get("type") == "label_selector":
                selector = (target.get("label_selector") or {}).get("selector")
                for member in target.get("targets") or []:
                    sid = int((member.get("server") or {}).get("id", 0))
                    if sid in server_ids:
                        entry = {
                            "lb": lb["id"],
                            "name": lb["name"],
                            "via": "label_selector",
                            "selector": selector,
                        }
                        out.setdefault(sid, []).append(entry)
    return out


def refuse_selector_targets(found: dict[int, list[dict[str, Any]]], names: dict[int, str]) -> None:
    """Refuse a drain of servers that a load balancer reaches through a label selector."""
    bad = [(sid, m) for sid, ms in sorted(found.items()) for m in ms if m["via"] == "label_selector"]
    if bad:
        sid, m = bad[0]
        others = sorted({str(names.get(s, s)) for s, _ in bad[1:]} - {str(names.get(sid, sid))})
        more = f" (so are {', '.join(others[:10])}{' ...' if len(others) > 10 else ''})" if others else ""
        raise BadInput(
            f"{names.get(sid, sid)} is a target of load balancer {m['name']} through the label selector "
            f"{m['selector']!r}{more}: removing the server would not take it out (the selector matches it "
            "again). Change its labels or the load balancer's targets first, or run without drain",
            "drain",
        )


def target_health(lb: dict[str, Any], server_id: int) -> tuple[bool, str]:
    """Return whether a load balancer reports the server healthy on every port, and what it reports."""
    for target in lb.get("targets") or []:
        if target.get("type") == "server" and int((target.get("server") or {}).get("id", 0)) == server_id:
            statuses = target.get("health_status") or []
            bad = [
                f"{s.get('listen_port')} {s.get('status')}" for s in statuses if s.get("status") != "healthy"
            ]
            if not bad:
                return True, "healthy on every port"
            return False, f"{lb.get('name')}: port " + ", port ".join(bad)
    return False, f"{lb.get('name')}: not a target (yet)"


class Drainer:
    """The requests of a drain, each safe to send again."""

    def __init__(self, client: HcloudClient) -> None:
        self.client = client

    def send(self, verb: str, lb_ids: list[int], server_id: int) -> list[dict[str, Any]]:
        """Send ``verb`` to each load balancer; return the actions started (an "already" answer: none)."""
        actions = []
        for lb_id in lb_ids:
            try:
                actions.append(self.client.load_balancer_target(lb_id, verb, server_id))
            except APIError as exc:
                if exc.code != _ALREADY[verb]:
                    raise
        return actions

    def finished(self, action_ids: list[int]) -> tuple[bool, str | None]:
        """Return whether these actions all ended, and the error of one that failed (None: all fine)."""
        if not action_ids:
            return True, None
        found = {int(a["id"]): a for a in self.client.get_actions(action_ids)}
        for aid in action_ids:
            action = found.get(aid)
            if action is None or action.get("status") == "running":
                return False, None
            if action.get("status") == "error":
                err = action.get("error") or {}
                return True, f"action {aid} failed: {err.get('message')} ({err.get('code')})"
        return True, None

    def healthy(
        self, lb_ids: list[int], server_id: int, cache: dict[int, dict[str, Any]]
    ) -> tuple[bool, str]:
        """Return whether every load balancer reports the server healthy (one read per load balancer and
        pass, shared by the servers in it through ``cache``)."""
        for lb_id in lb_ids:
            if lb_id not in cache:
                cache[lb_id] = self.client.get_load_balancer(lb_id)
            ok, detail = target_health(cache[lb_id], server_id)
            if not ok:
                return False, detail
        return True, "healthy on every port"


def safely(call: Any, *args: Any) -> tuple[Any, str | None]:
    """Run one drain request; return its result, or None and why it could not be done now."""
    try:
        return call(*args), None
    except HcloudFlowError as exc:
        return None, str(exc)
