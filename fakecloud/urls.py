"""The ``/v1`` route table (method + path template → handler) and the router that matches it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import responses
from .exceptions import MethodNotAllowed, NotFound

__all__ = ["V1_ROUTES", "Router"]

Handler = Callable[..., Any]

V1_ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/servers", responses.get_servers),
    ("GET", "/servers/{id}", responses.get_server),
    ("PUT", "/servers/{id}", responses.put_server),
    ("GET", "/servers/actions", responses.get_servers_actions),
    ("GET", "/servers/actions/{id}", responses.get_servers_action),
    ("GET", "/servers/{id}/actions", responses.get_server_actions),
    ("GET", "/servers/{id}/actions/{action_id}", responses.get_server_action),
    ("POST", "/servers/{id}/actions/poweron", responses.poweron_server),
    ("POST", "/servers/{id}/actions/poweroff", responses.poweroff_server),
    ("POST", "/servers/{id}/actions/reboot", responses.reboot_server),
    ("POST", "/servers/{id}/actions/reset", responses.reset_server),
    ("POST", "/servers/{id}/actions/shutdown", responses.shutdown_server),
    ("POST", "/servers/{id}/actions/reset_password", responses.reset_server_password),
    ("POST", "/servers/{id}/actions/enable_rescue", responses.enable_server_rescue),
    ("POST", "/servers/{id}/actions/disable_rescue", responses.disable_server_rescue),
    ("POST", "/servers/{id}/actions/create_image", responses.create_server_image),
    ("POST", "/servers/{id}/actions/rebuild", responses.rebuild_server),
    ("GET", "/actions", responses.get_actions),
    ("GET", "/actions/{id}", responses.get_action),
    ("GET", "/images", responses.get_images),
    ("GET", "/images/{id}", responses.get_image),
    ("PUT", "/images/{id}", responses.update_image),
    ("DELETE", "/images/{id}", responses.delete_image),
    ("GET", "/images/actions", responses.get_images_actions),
    ("GET", "/images/actions/{id}", responses.get_images_action),
    ("GET", "/images/{id}/actions", responses.get_image_actions),
    ("GET", "/images/{id}/actions/{action_id}", responses.get_image_action),
    ("POST", "/images/{id}/actions/change_protection", responses.change_image_protection),
    ("GET", "/load_balancers", responses.get_load_balancers),
    ("GET", "/load_balancers/{id}", responses.get_load_balancer),
    ("POST", "/load_balancers/{id}/actions/add_target", responses.add_load_balancer_target),
    ("POST", "/load_balancers/{id}/actions/remove_target", responses.remove_load_balancer_target),
    ("GET", "/placement_groups", responses.get_placement_groups),
    ("GET", "/placement_groups/{id}", responses.get_placement_group),
    ("GET", "/ssh_keys", responses.get_ssh_keys),
    ("GET", "/ssh_keys/{id}", responses.get_ssh_key),
]


class Router:
    """Match ``(method, path)`` to ``(template, handler, args)``; 404 for no path, 405 for a wrong method."""

    # ASCII digits only (re's \d takes any Unicode digit), and no more than an id could ever have.
    def __init__(self, routes: list[tuple[str, str, Handler]], arg_pattern: str = r"([0-9]{1,32})") -> None:
        self.static: dict[str, dict[str, Handler]] = {}
        # Dynamic templates grouped by first path segment, so a request tries only a handful of regexes.
        self.dynamic: dict[str, list[tuple[re.Pattern[str], str, dict[str, Handler]]]] = {}
        by_template: dict[str, dict[str, Handler]] = {}
        for method, template, handler in routes:
            by_template.setdefault(template, {})[method] = handler
        for template, methods in by_template.items():
            if "{" not in template:
                self.static[template] = methods
                continue
            regex = re.compile(re.sub(r"\\\{\w+\\\}", lambda _: arg_pattern, re.escape(template)) + r"\Z")
            self.dynamic.setdefault(template.split("/")[1], []).append((regex, template, methods))

    def resolve(self, path: str) -> tuple[str, dict[str, Handler], tuple[str, ...]] | None:
        """Return the template, its handlers by method and the path arguments, or None."""
        methods = self.static.get(path)
        if methods is not None:
            return path, methods, ()
        for regex, template, candidate in self.dynamic.get(path.split("/", 2)[1] if "/" in path else "", ()):
            m = regex.match(path)
            if m:
                return template, candidate, m.groups()
        return None

    def match(self, method: str, path: str) -> tuple[str, Handler, tuple[str, ...]]:
        """Return the route template, its handler and the path arguments."""
        found = self.resolve(path)
        if found is None:
            raise NotFound(f"no route for {path}")
        template, methods, args = found
        handler = methods.get(method)
        if handler is None:
            # HEAD is served as GET (server.py), so a GET route allows it too.
            allowed = tuple(sorted({*methods, "HEAD"} if "GET" in methods else set(methods)))
            raise MethodNotAllowed(
                f"method {method} is not allowed on {template}; allowed: {', '.join(sorted(methods))}",
                allowed,
            )
        return template, handler, args
