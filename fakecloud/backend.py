"""The state of one fake project and the rules of the API (moto's ``models`` backend).

HTTP parsing lives in ``responses.py``; this module only sees typed arguments and raises
``FakeCloudError`` subclasses. State is guarded by ``self.lock`` (re-entrant): the HTTP layer holds it for a
whole request, and every method that changes state takes it too, so a test may call them from its own
thread. A test that reads several things at once, or edits a model directly, holds ``backend.lock``. Time
moves actions forward only when ``tick()`` runs (at the start of every request); call it after advancing a
manual clock by hand if you then read models directly.
"""

from __future__ import annotations

import heapq
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from . import fleet
from .clock import Clock, RealClock, check_skew
from .exceptions import Conflict, InvalidInput, NotFound
from .faults import FaultDice, FaultSpec, parse_faults
from .load_balancers import LoadBalancer, Target
from .models import Action, Image, PlacementGroup, Server, SshKey
from .ratelimit import TokenBucket
from .server_actions import ServerActions
from .traffic import TrafficLog
from .transitions import COMMAND_TO_NAME, TRANSITIONS, Transition

__all__ = ["Backend"]

SPREAD_MAX = 10  # servers a spread placement group may hold (SPEC)


class Backend(ServerActions):
    """One fake Hetzner Cloud project: servers, actions, images, SSH keys, rate bucket, faults."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        token: str = "fakecloud-token",  # noqa: S107 - a fake token for a fake API
        seed: int | str = 1,
        servers: int = 10,
        rate_limit: int = 3600,
        faults: str | dict[str, Any] | FaultSpec | None = None,
        durations: Mapping[str, float] | None = None,
        skew: float = 0.0,
        id_space: int = 0,
    ) -> None:
        self.lock = threading.RLock()
        # The real API draws the ids of every project from one space: two fakeclouds standing for two
        # projects of one API take different id_space numbers, so their servers, actions and snapshots
        # never share an id.
        if isinstance(id_space, bool) or not isinstance(id_space, int) or not 0 <= id_space < 100:
            raise ValueError(f"id_space must be 0 to 99, not {id_space!r}")
        self.id_space = id_space
        self.clock: Clock = clock or RealClock()
        self.token = token
        self.faults = parse_faults(faults)
        # Seconds the API's clock is ahead of the true one (negative: behind); only reported times move.
        self.skew = check_skew(skew)
        self.transitions: dict[str, Transition] = dict(TRANSITIONS)
        if durations:
            self.set_durations(durations)
        self.bucket = TokenBucket(self.clock, rate_limit)
        self.traffic = TrafficLog()
        self.initial_servers = servers
        self.reset(servers=servers, seed=seed)

    # ----- lifecycle -------------------------------------------------------------------------------------
    def reset(self, *, servers: int | None = None, seed: int | str | None = None) -> None:
        """Start over: new fleet, no actions or snapshots, counters and log cleared, bucket full."""
        with self.lock:
            self.seed = self.__dict__.get("seed", 1) if seed is None else seed
            self.dice = FaultDice(self.seed)
            self.fleet_rng = random.Random(f"fleet:{self.seed}")
            now = self.clock.now()
            self.servers: dict[int, Server] = {}
            self.actions: dict[int, Action] = {}
            self.images: dict[int, Image] = {i.id: i for i in fleet.system_images(now)}
            # Deleted by DELETE /images/{id}: gone from /images, still shown by the servers built from them.
            self.deleted_images: dict[int, Image] = {}
            self.ssh_keys: dict[int, SshKey] = {k.id: k for k in fleet.ssh_keys(now)}
            self.placement_groups: dict[int, PlacementGroup] = {}
            self.load_balancers: dict[int, LoadBalancer] = {}
            self.server_types = fleet.server_types()
            self.due: list[tuple[float, int]] = []  # heap of (due time, action id)
            self.root_passwords: list[str] = []
            self.next_action_id = fleet.ACTION_ID_BASE + self.id_space * 1_000_000_000
            self.next_image_id = fleet.SNAPSHOT_ID_BASE + self.id_space * 1_000_000
            self.server_count = 0
            self.traffic.clear()
            # Armed drops belong to the test that armed them, not to the project that comes next.
            self.drop_answer_next = 0
            self.bucket.set_limit(self.bucket.limit)
            self.seed_servers(self.initial_servers if servers is None else servers)

    def seed_servers(
        self, count: int, *, labels: dict[str, str] | None = None, status: str | None = None
    ) -> list[int]:
        """Add ``count`` servers (``srv-<n>``) and return their ids."""
        with self.lock:
            now = self.clock.now()
            system = [i for i in self.images.values() if i.type == "system"]
            ids = []
            for _ in range(count):
                self.server_count += 1
                server_id = fleet.SERVER_ID_BASE + self.id_space * 100_000 + self.server_count
                server = fleet.make_server(
                    self.fleet_rng,
                    server_id,
                    self.server_count,
                    now,
                    system,
                    self.server_types,
                    labels,
                    status,
                )
                server.acpi_draw = self.dice.acpi_draw(server_id)
                self.servers[server_id] = server
                ids.append(server_id)
            return ids

    def set_durations(self, durations: Mapping[str, float]) -> None:
        """Override default durations (seconds at speed 1) by action name or command name."""
        with self.lock:
            for key, seconds in durations.items():
                name = COMMAND_TO_NAME.get(key, key)
                if name not in self.transitions:
                    known = ", ".join(self.transitions)
                    raise ValueError(f"unknown action {key!r} in durations; known: {known}")
                seconds = float(seconds)
                if not seconds >= 0:
                    raise ValueError(f"duration of {name!r} must be >= 0 seconds, got {seconds!r}")
                self.transitions[name] = replace(self.transitions[name], duration=seconds)

    def set_speed(self, speed: float) -> None:
        """Change the time factor (the bucket first settles its refill at the old rate)."""
        with self.lock:
            self.bucket.settle()
            if not float(speed) > 0:
                raise ValueError(f"speed must be > 0, got {speed!r}")
            self.clock.speed = float(speed)

    def set_faults(self, faults: str | dict[str, Any] | FaultSpec | None) -> None:
        """Replace (spec string) or merge (dict) the fault probabilities."""
        with self.lock:
            self.faults = self.faults.merged(faults)

    def drop_answer(self) -> bool:
        """Return whether to lose the answer of an action POST that has just started its action."""
        with self.lock:
            if self.drop_answer_next > 0:
                self.drop_answer_next -= 1  # a test's certain drop comes before the dice, and uses none
                return True
            return self.dice.drop_answer(self.faults)

    # ----- time ------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Settle every action whose time has come (called at the start of each request)."""
        with self.lock:
            now = self.clock.now()
            due = self.due
            while due and due[0][0] <= now:
                _, action_id = heapq.heappop(due)
                self._settle(self.actions[action_id])

    def _settle(self, action: Action) -> None:
        server = self.servers.get(action.server_id)
        transition = self.transitions[action.name]
        action.finished = action.due
        if action.fail_with is not None:
            action.status = "error"
            action.error = {"code": action.fail_with[0], "message": action.fail_with[1]}
            if server is not None:
                if action.status_before is not None:
                    server.status = action.status_before
                if transition.undo is not None:
                    transition.undo(self, action, server)
        else:
            action.status = "success"
            if server is not None:
                if not action.noop:
                    if transition.final is not None:
                        server.status = transition.final
                    if transition.boots:
                        server.rescue_enabled = False  # "disabled when you first boot into it" (SPEC)
                if transition.effect is not None:
                    transition.effect(self, action, server)
        if server is not None and server.running_action_id == action.id:
            server.running_action_id = None

    # ----- lookups ---------------------------------------------------------------------------------------
    def server(self, server_id: int) -> Server:
        """Return the server or raise 404."""
        try:
            return self.servers[server_id]
        except KeyError:
            raise NotFound(f"server with ID '{server_id}' not found") from None

    def action(self, action_id: int) -> Action:
        """Return the action or raise 404."""
        try:
            return self.actions[action_id]
        except KeyError:
            raise NotFound(f"action with ID '{action_id}' not found") from None

    def image(self, image_id: int) -> Image:
        """Return the image or raise 404."""
        try:
            return self.images[image_id]
        except KeyError:
            raise NotFound(f"image with ID '{image_id}' not found") from None

    def ssh_key(self, key_id: int) -> SshKey:
        """Return the SSH key or raise 404."""
        try:
            return self.ssh_keys[key_id]
        except KeyError:
            raise NotFound(f"ssh_key with ID '{key_id}' not found") from None

    # Every rendering goes through these, so the clock skew reaches every timestamp ``/v1`` reports.
    def server_json(self, server: Server) -> dict[str, Any]:
        """Render a server with its image."""
        image = None
        if server.image_id is not None:
            image = self.images.get(server.image_id) or self.deleted_images.get(server.image_id)
        group = self.placement_groups.get(server.placement_group_id or 0)
        out = server.to_json(
            self.image_json(image) if image is not None else None,
            self.skew,
            self.placement_group_json(group) if group is not None else None,
        )
        out["load_balancers"] = [
            i for i, lb in sorted(self.load_balancers.items()) if lb.targets_server(self, server.id)
        ]
        return out

    def placement_group_json(self, group: PlacementGroup) -> dict[str, Any]:
        """Render a placement group with its members."""
        members = [s.id for _, s in sorted(self.servers.items()) if s.placement_group_id == group.id]
        return group.to_json(members, self.skew)

    def load_balancer(self, lb_id: int) -> LoadBalancer:
        try:
            return self.load_balancers[lb_id]
        except KeyError:
            raise NotFound(f"load_balancer with ID '{lb_id}' not found") from None

    def add_load_balancer(
        self, name: str, services: list[dict[str, Any]], targets: list[Target], health_delay: float
    ) -> LoadBalancer:
        """Create a load balancer with these services and targets (a test's setup, not an API call)."""
        if any(lb.name == name for lb in self.load_balancers.values()):
            raise Conflict(f"load balancer name {name!r} is already used")
        lb = LoadBalancer(
            id=len(self.load_balancers) + 1,
            name=name,
            created=self.clock.now(),
            location=fleet.LOCATIONS[0],
            services=services,
            health_delay=health_delay,
            targets=targets,
        )
        self.load_balancers[lb.id] = lb
        return lb

    def placement_group(self, group_id: int) -> PlacementGroup:
        try:
            return self.placement_groups[group_id]
        except KeyError:
            raise NotFound(f"placement_group with ID '{group_id}' not found") from None

    def add_placement_group(self, name: str, labels: dict[str, str], members: list[int]) -> PlacementGroup:
        """Create a spread group holding these servers (at most 10, as the API allows), by id."""
        if any(g.name == name for g in self.placement_groups.values()):
            raise Conflict(f"placement group name {name!r} is already used")
        if len(members) > SPREAD_MAX:
            raise InvalidInput.field("servers", f"a spread group holds at most {SPREAD_MAX} servers")
        servers = [self.server(i) for i in members]
        group = PlacementGroup(
            id=len(self.placement_groups) + 1, name=name, created=self.clock.now(), labels=labels
        )
        self.placement_groups[group.id] = group
        for server in servers:
            server.placement_group_id = group.id
        return group

    def instant_action(
        self, command: str, resource: dict[str, Any], params: dict[str, Any] | None = None
    ) -> Action:
        """Record an action of another resource than a server that succeeded at once: its 201 already
        says ``success``. It holds no server's lock and is not listed by ``GET /servers/actions``."""
        with self.lock:
            now = self.clock.now()
            self.next_action_id += 1
            action = Action(
                id=self.next_action_id,
                name=command,
                command=command,
                server_id=0,  # not a server action: GET /servers/{id}/actions does not list it
                started=now,
                due=now,
                status="success",
                finished=now,
                params=params or {},
                resource=resource,
            )
            self.actions[action.id] = action
            return action

    def action_json(self, action: Action) -> dict[str, Any]:
        """Render an action as of now."""
        return action.to_json(self.clock.now(), self.skew)

    def image_json(self, image: Image) -> dict[str, Any]:
        """Render an image."""
        return image.to_json(self.skew)

    def ssh_key_json(self, key: SshKey) -> dict[str, Any]:
        """Render an SSH key."""
        return key.to_json(self.skew)

    def reported_now(self) -> float:
        """Return the time as the API's (possibly skewed) clock reads it, for ``Date`` and the like."""
        return self.clock.now() + self.skew

    # ----- queries ---------------------------------------------------------------------------------------
    def find_servers(
        self, *, name: str | None, selector: Callable[[Mapping[str, str]], bool] | None, statuses: set[str]
    ) -> list[Server]:
        """Return servers matching every given filter, by id."""
        return [
            s
            for _, s in sorted(self.servers.items())
            if (name is None or s.name == name)
            and (not statuses or s.status in statuses)
            and (selector is None or selector(s.labels))
        ]

    def find_actions(self, ids: Iterable[int], *, servers_only: bool = False) -> list[Action]:
        """Return the actions with these ids; unknown ids are left out, as the API does (and with
        ``servers_only``, another resource's actions too, as ``GET /servers/actions`` does)."""
        found = [self.actions[i] for i in dict.fromkeys(ids) if i in self.actions]
        return [a for a in found if a.resource is None] if servers_only else found

    def server_actions(self, server_id: int, statuses: set[str]) -> list[Action]:
        """Return the actions of one server (404 if the server does not exist)."""
        self.server(server_id)
        return [
            a
            for a in self.actions.values()
            if a.server_id == server_id and (not statuses or a.status in statuses)
        ]

    def find_images(
        self,
        *,
        types: set[str],
        statuses: set[str],
        name: str | None,
        selector: Callable[[Mapping[str, str]], bool] | None,
        bound_to: set[int],
        architectures: set[str],
        include_deprecated: bool,
    ) -> list[Image]:
        """Return images matching every given filter, by id."""
        return [
            i
            for _, i in sorted(self.images.items())
            if (not types or i.type in types)
            and (not statuses or i.status in statuses)
            and (name is None or i.name == name)
            and (selector is None or selector(i.labels))
            and (not bound_to or i.bound_to in bound_to)
            and (not architectures or i.architecture in architectures)
            and (include_deprecated or i.deprecated is None)
        ]

    def find_placement_groups(
        self, *, name: str | None, types: set[str], selector: Callable[[Mapping[str, str]], bool] | None
    ) -> list[PlacementGroup]:
        """Return placement groups matching every given filter, by id."""
        return [
            g
            for _, g in sorted(self.placement_groups.items())
            if (name is None or g.name == name)
            and (not types or g.type in types)
            and (selector is None or selector(g.labels))
        ]

    def find_ssh_keys(
        self,
        *,
        name: str | None,
        fingerprint: str | None,
        selector: Callable[[Mapping[str, str]], bool] | None,
    ) -> list[SshKey]:
        """Return SSH keys matching every given filter, by id."""
        return [
            k
            for _, k in sorted(self.ssh_keys.items())
            if (name is None or k.name == name)
            and (fingerprint is None or k.fingerprint == fingerprint)
            and (selector is None or selector(k.labels))
        ]
