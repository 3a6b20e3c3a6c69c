"""One handler per API operation, named after it (SPEC operation ids): HTTP parsing only.

A handler reads path arguments, the query string and the JSON body, checks their *shape* (types, enums,
sizes), calls one backend method and renders the answer. Every rule about state lives in the backend.
Handlers return ``(status, body)`` or ``(status, body, extra headers)``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import images, load_balancers
from .backend import Backend
from .exceptions import InvalidInput, JsonError, NotFound, UniquenessError
from .labels import compile_selector, validate_labels
from .listing import Request, flag, ints, is_uint, many, one, paginate, parse_sort, sort_items
from .transitions import ACTION_STATUSES, SERVER_STATUSES

Answer = tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], list[tuple[str, str]]]

MAX_USER_DATA = 32 * 1024  # SPEC rebuild: user_data is limited to 32 KiB
MAX_ACTION_IDS = 25  # hcloud-go: more ids "might not be returned at all"
IMAGE_TYPES = frozenset({"system", "app", "snapshot", "backup"})
IMAGE_STATUSES = frozenset({"available", "creating", "unavailable"})
ARCHITECTURES = frozenset({"x86", "arm"})

_ACTION_SORT_KEYS = {
    "id": lambda a: a.id,
    "command": lambda a: a.command,
    "status": lambda a: a.status,
    "started": lambda a: a.started,
    "finished": lambda a: a.finished,
}
_NAMED_SORT_KEYS = {"id": lambda r: r.id, "name": lambda r: r.name, "created": lambda r: r.created}


# ----- request parsing helpers --------------------------------------------------------------------
def _body(request: Request) -> dict[str, Any]:
    # Official clients send no body for most actions; hcloud-go may send explicit nulls (reference §2.2).
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


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInput.field(name, "must be a string")
    return value


def _selector(request: Request) -> Any:
    text = one(request.query, "label_selector")
    return compile_selector(text) if text is not None else None


def _id(request: Request, index: int = 0) -> int:
    return int(request.args[index])


def _list(backend: Backend, request: Request, key: str, items: list[Any], render: Any, **kw: Any) -> Answer:
    chunk, meta, headers = paginate(items, request, **kw)
    return 200, {key: [render(i) for i in chunk], "meta": meta}, headers


# ----- servers ------------------------------------------------------------------------------------
def get_servers(backend: Backend, request: Request) -> Answer:
    """GET /servers"""
    q = request.query
    sorts = parse_sort(q, ("id", "name", "created"))
    servers = backend.find_servers(
        name=one(q, "name"), selector=_selector(request), statuses=many(q, "status", SERVER_STATUSES)
    )
    return _list(
        backend, request, "servers", sort_items(servers, sorts, _NAMED_SORT_KEYS), backend.server_json
    )


def get_server(backend: Backend, request: Request) -> Answer:
    """GET /servers/{id}"""
    return 200, {"server": backend.server_json(backend.server(_id(request)))}


# SPEC: server names are valid hostnames as per RFC 1123 (letters, digits, periods and dashes).
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)


def put_server(backend: Backend, request: Request) -> Answer:
    """PUT /servers/{id}: its name and labels (the labels given replace the whole set)."""
    body = _body(request)
    with backend.lock:
        server = backend.server(_id(request))
        name = body.get("name")
        if name is not None:
            if not isinstance(name, str) or not _HOSTNAME.match(name):
                raise InvalidInput.field("name", "must be a valid hostname (RFC 1123)")
            if any(s.name == name and s.id != server.id for s in backend.servers.values()):
                raise UniquenessError("name", f"server name {name!r} is already used")
        labels = validate_labels(body["labels"]) if body.get("labels") is not None else None
        if name is not None:
            server.name = name
        if labels is not None:
            server.labels = labels
        return 200, {"server": backend.server_json(server)}


def get_server_actions(backend: Backend, request: Request) -> Answer:
    """GET /servers/{id}/actions"""
    sorts = parse_sort(request.query, tuple(_ACTION_SORT_KEYS))
    actions = backend.server_actions(_id(request), many(request.query, "status", ACTION_STATUSES))
    actions = sort_items(actions, sorts or [("id", False)], _ACTION_SORT_KEYS)
    return _list(backend, request, "actions", actions, backend.action_json)


def get_server_action(backend: Backend, request: Request) -> Answer:
    """GET /servers/{id}/actions/{action_id} (deprecated in the SPEC, still served)"""
    server = backend.server(_id(request))
    action = backend.action(_id(request, 1))
    if action.server_id != server.id:
        raise NotFound(f"action with ID '{action.id}' not found")
    return 200, {"action": backend.action_json(action)}


def get_servers_actions(backend: Backend, request: Request) -> Answer:
    """GET /servers/actions (the actions of every server; hcloud-python ``client.servers.actions``)"""
    q = request.query
    ids = ints(q, "id")
    sorts = parse_sort(q, tuple(_ACTION_SORT_KEYS))
    statuses = many(q, "status", ACTION_STATUSES)
    every = [a for a in backend.actions.values() if a.resource is None]
    actions = backend.find_actions(ids, servers_only=True) if ids else every
    actions = [a for a in actions if not statuses or a.status in statuses]
    actions = sort_items(actions, sorts or [("id", False)], _ACTION_SORT_KEYS)
    return _list(backend, request, "actions", actions, backend.action_json)


def get_servers_action(backend: Backend, request: Request) -> Answer:
    """GET /servers/actions/{id}"""
    action = backend.action(_id(request))
    if action.resource is not None:  # a load balancer's or an image's action is not found here
        raise NotFound(f"action with ID '{action.id}' not found")
    return 200, {"action": backend.action_json(action)}


# ----- the ten server actions ---------------------------------------------------------------------
def _simple(name: str) -> Any:
    def handler(backend: Backend, request: Request) -> Answer:
        _body(request)  # any body is accepted, but it must be JSON if present
        action = backend.simple_action(_id(request), name)
        return 201, {"action": backend.action_json(action)}

    handler.__doc__ = f"POST /servers/{{id}}/actions/{name}"
    return handler


poweron_server = _simple("poweron")
poweroff_server = _simple("poweroff")
reboot_server = _simple("reboot")
reset_server = _simple("reset")
shutdown_server = _simple("shutdown")
disable_server_rescue = _simple("disable_rescue")
for _handler, _name in (
    (poweron_server, "poweron_server"),
    (poweroff_server, "poweroff_server"),
    (reboot_server, "reboot_server"),
    (reset_server, "reset_server"),
    (shutdown_server, "shutdown_server"),
    (disable_server_rescue, "disable_server_rescue"),
):
    _handler.__name__ = _handler.__qualname__ = _name


def reset_server_password(backend: Backend, request: Request) -> Answer:
    """POST /servers/{id}/actions/reset_password"""
    _body(request)
    action, password = backend.reset_password(_id(request))
    return 201, {"action": backend.action_json(action), "root_password": password}


def enable_server_rescue(backend: Backend, request: Request) -> Answer:
    """POST /servers/{id}/actions/enable_rescue"""
    body = _body(request)
    rescue_type = body.get("type")
    # hcloud-python sends {"type": null}, hcloud-go {"type": ""}: both mean the default, linux64.
    if rescue_type not in (None, "", "linux64"):
        raise InvalidInput.field("type", f"invalid rescue type {rescue_type!r}; allowed: linux64")
    keys = body.get("ssh_keys")
    if keys is None:
        keys = []
    if not isinstance(keys, list) or any(isinstance(k, bool) or not isinstance(k, int) for k in keys):
        raise InvalidInput.field("ssh_keys", "must be a list of SSH key IDs (integers)")
    action, password = backend.enable_rescue(_id(request), keys)
    return 201, {"action": backend.action_json(action), "root_password": password}


def create_server_image(backend: Backend, request: Request) -> Answer:
    """POST /servers/{id}/actions/create_image"""
    body = _body(request)
    description = _optional_str(body, "description")
    image_type = body.get("type")
    if image_type not in (None, "snapshot", "backup"):
        raise InvalidInput.field("type", f"invalid image type {image_type!r}; allowed: snapshot, backup")
    labels = body.get("labels")
    labels = {} if labels is None else validate_labels(labels)
    action, image = backend.create_image(
        _id(request), description=description, image_type=image_type or "snapshot", labels=labels
    )
    return 201, {"action": backend.action_json(action), "image": backend.image_json(image)}


def rebuild_server(backend: Backend, request: Request) -> Answer:
    """POST /servers/{id}/actions/rebuild"""
    body = _body(request)
    image = body.get("image")
    # "ID or name": hcloud-go sends an ID as a JSON number, older clients as a string of digits.
    if isinstance(image, str) and is_uint(image):
        image = int(image)
    if image is None or image == "":
        raise InvalidInput.field("image", "is required (an image ID or the name of a system image)")
    if isinstance(image, bool) or not isinstance(image, int | str):
        raise InvalidInput.field("image", "must be an image ID (integer) or a system image name (string)")
    user_data = _optional_str(body, "user_data")
    if user_data is not None and len(user_data.encode()) > MAX_USER_DATA:
        raise InvalidInput.field("user_data", f"is too long (more than {MAX_USER_DATA} bytes)")
    action, password = backend.rebuild(_id(request), image, user_data)
    return 201, {"action": backend.action_json(action), "root_password": password}


# ----- actions ------------------------------------------------------------------------------------
def get_action(backend: Backend, request: Request) -> Answer:
    """GET /actions/{id}"""
    return 200, {"action": backend.action_json(backend.action(_id(request)))}


def get_actions(backend: Backend, request: Request) -> Answer:
    """GET /actions?id=…&id=… (``id`` required since 2025-01-30)"""
    ids = ints(request.query, "id")
    if not ids:
        raise InvalidInput.field("id", "is required: list the action IDs to fetch (?id=1&id=2)")
    sorts = parse_sort(request.query, tuple(_ACTION_SORT_KEYS))
    actions = backend.find_actions(ids)
    statuses = many(request.query, "status", ACTION_STATUSES)
    if statuses:
        actions = [a for a in actions if a.status in statuses]
    actions = sort_items(actions, sorts or [("id", False)], _ACTION_SORT_KEYS)
    return _list(backend, request, "actions", actions, backend.action_json, max_per_page=MAX_ACTION_IDS)


# ----- images and SSH keys ------------------------------------------------------------------------
def get_images(backend: Backend, request: Request) -> Answer:
    """GET /images"""
    q = request.query
    sorts = parse_sort(q, ("id", "name", "created"))
    bound = ints(q, "bound_to")
    found = backend.find_images(
        types=many(q, "type", IMAGE_TYPES),
        statuses=many(q, "status", IMAGE_STATUSES),
        name=one(q, "name"),
        selector=_selector(request),
        bound_to=set(bound),
        architectures=many(q, "architecture", ARCHITECTURES),
        include_deprecated=bool(flag(q, "include_deprecated")),
    )
    return _list(backend, request, "images", sort_items(found, sorts, _NAMED_SORT_KEYS), backend.image_json)


def get_image(backend: Backend, request: Request) -> Answer:
    """GET /images/{id}"""
    return 200, {"image": backend.image_json(backend.image(_id(request)))}


def update_image(backend: Backend, request: Request) -> Answer:
    """PUT /images/{id}: description, type (only ``snapshot``: a backup becomes a snapshot) and labels
    (the labels given replace the whole set); what is left out or null stays as it is."""
    # Fields the SPEC's UpdateImageRequest does not name are ignored, not refused: the schema does not
    # forbid additional properties (the OpenAPI default allows them; the SPEC says
    # ``additionalProperties: false`` only where it means it), and PUT /servers/{id} is served the same way.
    body = _body(request)
    with backend.lock:
        backend.image(_id(request))  # 404 before the fields, as PUT /servers/{id}
        description = _optional_str(body, "description")
        image_type = body.get("type")
        if image_type not in (None, "snapshot"):
            raise InvalidInput.field("type", f"invalid image type {image_type!r}; allowed: snapshot")
        labels = validate_labels(body["labels"]) if body.get("labels") is not None else None
        image = images.update_image(
            backend, _id(request), description=description, image_type=image_type, labels=labels
        )
        return 200, {"image": backend.image_json(image)}


def delete_image(backend: Backend, request: Request) -> Answer:
    """DELETE /images/{id}: 204 and no body (SPEC)"""
    images.delete_image(backend, _id(request))
    return 204, {}


def change_image_protection(backend: Backend, request: Request) -> Answer:
    """POST /images/{id}/actions/change_protection"""
    body = _body(request)
    with backend.lock:
        backend.image(_id(request))  # 404 before the fields, as PUT /images/{id}
        delete = body.get("delete")  # hcloud-python sends {}, hcloud-go leaves it out, when given none
        if delete is not None and not isinstance(delete, bool):
            raise InvalidInput.field("delete", "must be a boolean")
        action = images.change_protection(backend, _id(request), delete)
        return 201, {"action": backend.action_json(action)}


def _action_list(backend: Backend, request: Request, actions: list[Any]) -> Answer:
    sorts = parse_sort(request.query, tuple(_ACTION_SORT_KEYS))
    statuses = many(request.query, "status", ACTION_STATUSES)
    actions = [a for a in actions if not statuses or a.status in statuses]
    actions = sort_items(actions, sorts or [("id", False)], _ACTION_SORT_KEYS)
    return _list(backend, request, "actions", actions, backend.action_json)


def get_image_actions(backend: Backend, request: Request) -> Answer:
    """GET /images/{id}/actions"""
    return _action_list(backend, request, images.image_actions(backend, _id(request)))


def get_images_actions(backend: Backend, request: Request) -> Answer:
    """GET /images/actions (the actions of every image; hcloud-python ``client.images.actions``)"""
    every = images.image_actions(backend)
    ids = set(ints(request.query, "id"))
    return _action_list(backend, request, [a for a in every if not ids or a.id in ids])


def _image_action(backend: Backend, action_id: int, image_id: int | None = None) -> Answer:
    action = backend.action(action_id)
    resource = action.resource or {}
    if resource.get("type") != "image" or image_id not in (None, resource.get("id")):
        raise NotFound(f"action with ID '{action.id}' not found")
    return 200, {"action": backend.action_json(action)}


def get_images_action(backend: Backend, request: Request) -> Answer:
    """GET /images/actions/{id}"""
    return _image_action(backend, _id(request))


def get_image_action(backend: Backend, request: Request) -> Answer:
    """GET /images/{id}/actions/{action_id} (deprecated in the SPEC, still served)"""
    image = backend.image(_id(request))
    return _image_action(backend, _id(request, 1), image.id)


def get_placement_groups(backend: Backend, request: Request) -> Answer:
    """GET /placement_groups"""
    q = request.query
    sorts = parse_sort(q, ("id", "name", "created"))
    groups = backend.find_placement_groups(
        name=one(q, "name"), types=many(q, "type", frozenset({"spread"})), selector=_selector(request)
    )
    return _list(
        backend,
        request,
        "placement_groups",
        sort_items(groups, sorts, _NAMED_SORT_KEYS),
        backend.placement_group_json,
    )


def get_placement_group(backend: Backend, request: Request) -> Answer:
    """GET /placement_groups/{id}"""
    return 200, {"placement_group": backend.placement_group_json(backend.placement_group(_id(request)))}


def get_load_balancers(backend: Backend, request: Request) -> Answer:
    """GET /load_balancers"""
    q = request.query
    sorts = parse_sort(q, ("id", "name", "created"))
    name, selector = one(q, "name"), _selector(request)
    lbs = [
        lb
        for _, lb in sorted(backend.load_balancers.items())
        if (name is None or lb.name == name) and (selector is None or selector(lb.labels))
    ]
    return _list(
        backend,
        request,
        "load_balancers",
        sort_items(lbs, sorts, _NAMED_SORT_KEYS),
        lambda lb: lb.to_json(backend),
    )


def get_load_balancer(backend: Backend, request: Request) -> Answer:
    """GET /load_balancers/{id}"""
    return 200, {"load_balancer": backend.load_balancer(_id(request)).to_json(backend)}


def add_load_balancer_target(backend: Backend, request: Request) -> Answer:
    """POST /load_balancers/{id}/actions/add_target"""
    action = load_balancers.add_target(backend, _id(request), _body(request))
    return 201, {"action": backend.action_json(action)}


def remove_load_balancer_target(backend: Backend, request: Request) -> Answer:
    """POST /load_balancers/{id}/actions/remove_target"""
    action = load_balancers.remove_target(backend, _id(request), _body(request))
    return 201, {"action": backend.action_json(action)}


def get_ssh_keys(backend: Backend, request: Request) -> Answer:
    """GET /ssh_keys"""
    q = request.query
    sorts = parse_sort(q, ("id", "name"))
    keys = backend.find_ssh_keys(
        name=one(q, "name"), fingerprint=one(q, "fingerprint"), selector=_selector(request)
    )
    return _list(
        backend, request, "ssh_keys", sort_items(keys, sorts, _NAMED_SORT_KEYS), backend.ssh_key_json
    )


def get_ssh_key(backend: Backend, request: Request) -> Answer:
    """GET /ssh_keys/{id}"""
    return 200, {"ssh_key": backend.ssh_key_json(backend.ssh_key(_id(request)))}
