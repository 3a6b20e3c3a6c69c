"""Load balancers: their targets, the health the API reports of each, and the add/remove target actions.

What is simulated (SPEC ``load_balancer``, ``add_target``, ``remove_target``):

- A target is a server (``{"type": "server", "server": {"id"}}``) or a label selector (``{"type":
  "label_selector", "label_selector": {"selector"}, "targets": [the servers it matches]}``).
- ``health_status`` lists, per service ``listen_port``, ``healthy``, ``unhealthy`` or ``unknown``: a target
  is ``unknown`` for the first ``health_delay`` seconds after it was added (the first health checks), then
  ``healthy`` while its server is ``running`` and ``unhealthy`` otherwise. The health follows the server's
  power state, as a real health check of a service on it would.
- ``add_target`` of a server already a direct target is 422 ``target_already_defined``; ``remove_target`` of
  one that is not is 422 ``load_balancer_target_not_found`` (the code clients such as the Cluster API
  provider treat as "already removed"). Both actions succeed at once: their 201 already says ``success``.
- A server object's ``load_balancers`` lists the ids of the load balancers that target it, directly or
  through a label selector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .exceptions import FakeCloudError, InvalidInput
from .labels import compile_selector
from .models import rfc3339

if TYPE_CHECKING:
    from .backend import Backend
    from .models import Action

__all__ = ["LoadBalancer", "Target", "add_target", "remove_target"]


class TargetAlreadyDefined(FakeCloudError):
    status, code = 422, "target_already_defined"


class TargetNotFound(FakeCloudError):
    status, code = 422, "load_balancer_target_not_found"


@dataclass
class Target:
    """A direct server target (``server_id``) or a label-selector target (``selector``)."""

    added: float
    server_id: int | None = None
    selector: str | None = None
    use_private_ip: bool = False


@dataclass
class LoadBalancer:
    id: int
    name: str
    created: float
    location: dict[str, Any]
    services: list[dict[str, Any]]
    health_delay: float = 3.0  # seconds (at speed 1) a new target is "unknown"
    labels: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    def members(self, backend: Backend, target: Target) -> list[int]:
        """Return the ids of the servers a target stands for."""
        if target.server_id is not None:
            return [target.server_id]
        matches = compile_selector(target.selector or "")
        return [s.id for _, s in sorted(backend.servers.items()) if matches(s.labels)]

    def targets_server(self, backend: Backend, server_id: int) -> bool:
        return any(server_id in self.members(backend, t) for t in self.targets)

    def health(self, backend: Backend, target: Target, server_id: int) -> list[dict[str, Any]]:
        now = backend.clock.now()
        server = backend.servers.get(server_id)
        if now - target.added < self.health_delay / backend.clock.speed:
            status = "unknown"
        else:
            status = "healthy" if server is not None and server.status == "running" else "unhealthy"
        return [{"listen_port": s["listen_port"], "status": status} for s in self.services]

    def to_json(self, backend: Backend) -> dict[str, Any]:
        def server_target(t: Target, sid: int) -> dict[str, Any]:
            return {
                "type": "server",
                "server": {"id": sid},
                "health_status": self.health(backend, t, sid),
                "use_private_ip": t.use_private_ip,
            }

        targets = []
        for t in self.targets:
            if t.server_id is not None:
                targets.append(server_target(t, t.server_id))
            else:
                targets.append(
                    {
                        "type": "label_selector",
                        "label_selector": {"selector": t.selector},
                        "targets": [server_target(t, sid) for sid in self.members(backend, t)],
                        "use_private_ip": t.use_private_ip,
                    }
                )
        return {
            "id": self.id,
            "name": self.name,
            "created": rfc3339(self.created, backend.skew),
            "labels": dict(self.labels),
            "location": self.location,
            "load_balancer_type": {"id": 1, "name": "lb11"},
            "algorithm": {"type": "round_robin"},
            "protection": {"delete": False},
            "public_net": {"enabled": True, "ipv4": {"ip": f"198.51.100.{self.id % 256}"}, "ipv6": None},
            "private_net": [],
            "services": [dict(s) for s in self.services],
            "targets": targets,
            "outgoing_traffic": None,
            "ingoing_traffic": None,
            "included_traffic": 21_990_232_555_520,
        }


def _server_of(body: dict[str, Any], backend: Backend) -> int:
    if body.get("type") != "server":
        raise InvalidInput.field("type", "only server targets are simulated by add_target and remove_target")
    ref = (body.get("server") or {}).get("id")
    if isinstance(ref, bool) or not isinstance(ref, int):
        raise InvalidInput.field("server", 'must look like {"id": 42}')
    backend.server(ref)  # 404 for an unknown server
    return ref


def _action(backend: Backend, lb: LoadBalancer, command: str, server_id: int) -> Action:
    return backend.instant_action(command, {"id": lb.id, "type": "load_balancer"}, {"server_id": server_id})


def add_target(backend: Backend, lb_id: int, body: dict[str, Any]) -> Action:
    with backend.lock:
        lb = backend.load_balancer(lb_id)
        sid = _server_of(body, backend)
        if any(t.server_id == sid for t in lb.targets):
            raise TargetAlreadyDefined(f"server {sid} is already a target of load balancer {lb.name}")
        lb.targets.append(
            Target(added=backend.clock.now(), server_id=sid, use_private_ip=bool(body.get("use_private_ip")))
        )
        return _action(backend, lb, "add_target", sid)


def remove_target(backend: Backend, lb_id: int, body: dict[str, Any]) -> Action:
    with backend.lock:
        lb = backend.load_balancer(lb_id)
        sid = _server_of(body, backend)
        kept = [t for t in lb.targets if t.server_id != sid]
        if len(kept) == len(lb.targets):
            raise TargetNotFound(f"server {sid} is not a target of load balancer {lb.name}")
        lb.targets = kept
        return _action(backend, lb, "remove_target", sid)
