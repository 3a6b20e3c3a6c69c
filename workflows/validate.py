"""Submit-time checks: parameters by shape, then the server, image, ssh keys and protection at the API.

Everything here runs before a single step is enqueued; each refusal is a BadInput whose message says what
was wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from workers.errors import APIError, BadInput
from workers.ids import is_id
from workers.labels import check_labels
from workers.server_actions import ACTIONS, MAX_USER_DATA, check_description, check_ssh_key_count

from .definitions import SAFETY_DESCRIPTION, WORKFLOWS, Workflow
from .param_models import model_for
from .retention import check_policy

if TYPE_CHECKING:
    from workers.client import HcloudClient

__all__ = ["Lookups", "check_params", "check_submitter", "gather_facts", "workflow_named"]

_SUBMITTER_MAX = 100
_MAX_NAME = 253  # a server's name is a hostname (RFC 1123): no longer than this


def check_submitter(value: Any, field: str = "submitted_by") -> str | None:
    """Return who submitted a request (a user@host or service name, recorded with the run), or refuse it;
    ``field`` names it as the caller gave it (``by`` for who steers a run or job)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _SUBMITTER_MAX:
        raise BadInput(f"{field} must be a name of 1 to {_SUBMITTER_MAX} characters", field)
    if not value.isprintable():
        raise BadInput(f"{field} must not hold control characters", field)
    return value.strip()


_EMPTY_IMAGE = "image is empty; give an image id or a system image name (e.g. ubuntu-24.04)"


def require_unicode(value: Any, what: str = "the request") -> None:
    """Refuse text that is not Unicode: a lone surrogate (``\\ud800``) decodes from JSON, but no HTTP
    request can carry it, so it would fail at the API after the run was recorded."""
    import json

    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{what} holds text that is not Unicode (a lone surrogate, e.g. \\ud800)") from None


def _blank(value: Any) -> bool:
    """Tell whether a reference is a string with nothing in it but whitespace."""
    return isinstance(value, str) and not value.strip()


def workflow_named(name: Any) -> Workflow:
    """Return the workflow called ``name`` or refuse with the list of known ones."""
    if not isinstance(name, str) or name not in WORKFLOWS:
        raise BadInput(f"unknown workflow {name!r}; known workflows: {', '.join(WORKFLOWS)}", "workflow")
    return WORKFLOWS[name]


def check_params(workflow: Workflow, params: dict[str, Any]) -> dict[str, Any]:
    """Check parameters by name, type and range; return them with defaults filled in."""
    if not isinstance(params, dict):
        raise BadInput("params must be an object of parameter names to values", "params")
    known = {p.name: p for p in workflow.params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise BadInput(
            f"{workflow.name} does not take {', '.join(unknown)} (it takes: {allowed})", unknown[0]
        )
    for p in workflow.params:
        if p.required and params.get(p.name) is None:
            raise BadInput(f"{workflow.name} needs {p.name}: {p.help}", p.name)
    try:
        model = model_for(workflow.name).model_validate(params)
    except ValidationError as exc:
        raise _refusal(workflow, params, exc) from None
    clean = model.model_dump()
    _check_values(clean)
    return clean


def _refusal(workflow: Workflow, params: dict[str, Any], exc: ValidationError) -> BadInput:
    """Say what the parameter model refused, in the words of the parameter's table row."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "params"
    p = next((p for p in workflow.params if p.name == name), None)
    if p is None:
        return BadInput(str(error["msg"]), name)
    value = params.get(name)
    if p.choices:
        return BadInput(f"{name} must be one of {', '.join(map(str, p.choices))}, not {value!r}", name)
    # A union (an integer or a number) reports each member: one that says "out of range" says it all.
    kinds = {str(e["type"]) for e in exc.errors() if e["loc"] and e["loc"][0] == name}
    if kinds & {"greater_than_equal", "less_than_equal"}:
        return BadInput(f"{name} must be between {p.minimum:g} and {p.maximum:g}, not {value!r}", name)
    if isinstance(value, bool) and bool not in _kinds(p.kind):
        return BadInput(f"{name} must be {_kind_name(p.kind)}, not a boolean", name)
    if isinstance(value, _kinds(p.kind)):  # the right type, refused inside (a key of a dict, say)
        return BadInput(f"{name}: {error['msg']}", name)
    return BadInput(f"{name} must be {_kind_name(p.kind)}, not {type(value).__name__}", name)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "an object",
        list: "a list",
    }
    return " or ".join(names.get(k, k.__name__) for k in _kinds(kind))


def _check_values(p: dict[str, Any]) -> None:
    if p.get("user_data") is not None and len(p["user_data"].encode()) > MAX_USER_DATA:
        raise BadInput("user_data is larger than the API's 32 KiB limit", "user_data")
    if p.get("description") is not None:
        check_description(p["description"])
        if p["description"].startswith(SAFETY_DESCRIPTION):
            # Retention tells a rebuild's safety snapshot (an undo point it never deletes) by this prefix: a
            # snapshot described so would never be counted or pruned (an outside test).
            raise BadInput(
                f"description may not begin with {SAFETY_DESCRIPTION!r}: it marks a rebuild's undo point",
                "description",
            )
    if p.get("labels") is not None:
        check_labels(p["labels"])
    if p.get("keep_within") is not None:
        p["keep_within"] = check_policy(None, p["keep_within"]).keep_within
    if (p.get("keep") is not None or p.get("keep_within") is not None) and p.get("image_type") == "backup":
        raise BadInput(
            "keep and keep_within rotate snapshots; a backup is not one of them (the API rotates backups "
            "itself, seven per server)",
            "keep",
        )
    image = p.get("image")
    # An empty name must never reach a lookup: it once became "no filter", and the first image of the
    # whole catalogue (debian-11) was rebuilt onto the server.
    if _blank(image):
        raise BadInput(_EMPTY_IMAGE, "image")
    if image is not None and is_id(image) and int(image) <= 0:
        raise BadInput(f"image id must be positive, not {image}", "image")
    keys = p.get("ssh_keys")
    if keys is not None and not all(isinstance(k, int | str) and not isinstance(k, bool) for k in keys):
        raise BadInput("ssh_keys must be a list of ssh key ids or names", "ssh_keys")
    check_ssh_key_count(keys or [])
    for key in keys or []:
        if _blank(key):
            raise BadInput("ssh_keys holds an empty name; give each ssh key as an id or a name", "ssh_keys")
        if is_id(key) and int(key) <= 0:
            raise BadInput(f"ssh key id must be positive, not {key}", "ssh_keys")


@dataclass
class Lookups:
    """Answers already read from the API in this pass (one wave of a fleet job), to be read once, not per run.

    ``servers`` holds server objects listed at the wave's start (fresh: 50 a request instead of one each);
    images and ssh keys are the same for every server of a job.
    """

    servers: dict[int, dict[str, Any]] = field(default_factory=dict)
    images: dict[tuple[Any, Any], dict[str, Any]] = field(default_factory=dict)
    ssh_keys: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)


def check_server_ref(ref: Any) -> int | str:
    """Return a server reference fit to look up (an id or a name), or refuse it; every entry point's rule."""
    if isinstance(ref, bool) or not isinstance(ref, int | str) or _blank(ref):
        raise BadInput(f"give the server as an id or a name, not {_shown(ref)}", "server")
    if (is_id(ref) and int(ref) <= 0) or (isinstance(ref, str) and ref[:1] == "-" and is_id(ref[1:])):
        # "-1" had been looked up as a name on the CLI, where HTTP's -1 was refused as an id.
        raise BadInput(f"server id must be positive, not {ref}", "server")
    return ref


def _shown(value: Any) -> str:
    return "an empty name" if isinstance(value, str) else f"{type(value).__name__} {str(value)[:40]!r}"


def find_server(client: HcloudClient, ref: Any, known: Lookups | None = None) -> dict[str, Any]:
    """Return the server named or numbered ``ref``, or refuse."""
    check_server_ref(ref)
    if is_id(ref):
        if known is not None and int(ref) in known.servers:
            return known.servers[int(ref)]
        try:
            return client.get_server(int(ref))
        except APIError as exc:
            if exc.code == "not_found":
                raise BadInput(f"no server with id {ref} in this project", "server") from exc
            raise
    if len(str(ref)) > _MAX_NAME:
        raise BadInput(f"a server name is at most {_MAX_NAME} characters, not {len(str(ref))}", "server")
    found = client.list_servers(name=str(ref))
    if not found:
        raise BadInput(f"no server named {ref!r} in this project", "server")
    return found[0]


def _find_image(client: HcloudClient, ref: int | str, server: dict[str, Any]) -> dict[str, Any]:
    """Return the image ``ref`` names for this server: an id exactly as given, a name for its architecture."""
    if _blank(ref):
        raise BadInput(_EMPTY_IMAGE, "image")
    arch = (server.get("server_type") or {}).get("architecture")
    if is_id(ref):
        try:
            image = client.get_image(int(ref))
        except APIError as exc:
            if exc.code == "not_found":
                raise BadInput(f"no image with id {ref}", "image") from exc
            raise
        # An id is used as that id or refused, never swapped for the same name's build of the other
        # architecture. (A server without an architecture is left to the API, which refuses a mismatch.)
        if arch is not None and image.get("architecture") != arch:
            raise BadInput(_wrong_architecture(image, server, arch), "image")
    else:
        # Deprecated images too: the API still builds from them until they become unavailable.
        named = client.list_images(name=str(ref), include_deprecated=True)
        # As the API does for names: the image of that name built for the server's architecture.
        candidates = [i for i in named if arch is None or i.get("architecture") == arch]
        if not candidates:
            if named:
                built_for = ", ".join(sorted({str(i.get("architecture")) for i in named}))
                raise BadInput(
                    f"image {ref!r} is built for {built_for} only; server {server['name']} is {arch}",
                    "image",
                )
            raise BadInput(
                f"no system image named {ref!r}; images by name are system images (e.g. ubuntu-24.04), "
                "snapshots go by id",
                "image",
            )
        image = candidates[0]
    if image.get("status") != "available":
        raise BadInput(f"image {ref!r} is {image.get('status')}, not available", "image")
    return image


def image_warning(image: dict[str, Any]) -> str | None:
    """Return what to tell a user about a deprecated image, which the API still accepts, or None."""
    if not image.get("deprecated"):
        return None
    until = (image.get("deprecation") or {}).get("unavailable_after")
    name = image.get("name") or image.get("id")
    return (
        f"image {name} is deprecated"
        + (f" and unavailable after {until}" if until else "")
        + ("; it still works, but pick a current one for future runs")
    )


def _wrong_architecture(image: dict[str, Any], server: dict[str, Any], arch: str) -> str:
    """Return the refusal of an image id built for another architecture than the server's."""
    server_type = (server.get("server_type") or {}).get("name", "?")
    built_for = image.get("architecture") or "an unknown architecture"
    what = f"image {image['id']}" + (f" ({image['name']})" if image.get("name") else "")
    hint = (
        f"give the id of its {arch} build, or the name {image['name']!r} to use the {arch} build"
        if image.get("type") == "system" and image.get("name")
        else f"give an image built for {arch}"
    )
    return (
        f"{what} is built for {built_for}, but server {server['name']} is {arch} "
        f"(server type {server_type}); {hint}"
    )


def _ssh_key_ids(client: HcloudClient, refs: list[int | str]) -> list[int]:
    ids: list[int] = []
    for ref in dict.fromkeys(refs):  # each key read once, in the order given
        if is_id(ref):
            try:
                ids.append(int(client.get_ssh_key(int(ref))["id"]))
            except APIError as exc:
                if exc.code == "not_found":
                    raise BadInput(f"no ssh key with id {ref}", "ssh_keys") from exc
                raise
        else:
            found = client.list_ssh_keys(name=str(ref))
            if not found:
                raise BadInput(f"no ssh key named {ref!r}", "ssh_keys")
            ids.append(int(found[0]["id"]))
    return list(dict.fromkeys(ids))


def check_fits(image: dict[str, Any], server: dict[str, Any]) -> None:
    """Refuse an image whose disk is larger than the server's: a rebuild from it cannot fit.

    A snapshot's ``disk_size`` is the disk of the server it was taken from (GB); a server's is
    ``primary_disk_size``. Caught here, before the server is switched off for a rebuild that would fail.
    """
    need, have = image.get("disk_size"), server.get("primary_disk_size")
    if isinstance(need, int | float) and isinstance(have, int | float) and need > have:
        what = image.get("name") or image.get("description") or image.get("id")
        raise BadInput(
            f"image {what} ({image.get('id')}) needs a disk of {need:g} GB; server {server.get('name')} has "
            f"{have:g} GB: use a server type with a larger disk, or another image",
            "image",
        )


def gather_facts(
    client: HcloudClient,
    workflow: Workflow,
    server_ref: Any,
    params: dict[str, Any],
    known: Lookups | None = None,
) -> dict[str, Any]:
    """Check the request against the API and return the facts the workflow's steps are built from."""
    known = known if known is not None else Lookups()
    warnings: list[str] = []  # things the API accepts that the user should hear about
    server = find_server(client, server_ref, known)
    if workflow.needs_running and server["status"] != "running":
        raise BadInput(
            f"{workflow.name} needs a running server; {server['name']} is {server['status']}", "server"
        )
    rows = [ACTIONS[step.action] for step in workflow.steps if step.action in ACTIONS]
    image: dict[str, Any] | None = None
    for row in rows:
        if row.protected_by and (server.get("protection") or {}).get(row.protected_by):
            raise BadInput(
                f"server {server['name']} is protected against {row.protected_by}; lift the protection "
                "in the Hetzner console or API first",
                "server",
            )
    if params.get("image") is not None and any("image" in row.params for row in rows):
        arch = (server.get("server_type") or {}).get("architecture")
        key = (params["image"], arch)
        if key not in known.images:
            known.images[key] = _find_image(client, params["image"], server)
        image = known.images[key]
        check_fits(image, server)
        warning = image_warning(image)
        if warning:
            warnings.append(warning)
        # By id: exactly that image. By name: the name, which the API resolves for the server's architecture
        # as we just did.
        by_name = not is_id(params["image"]) and image.get("type") == "system"
        params = {**params, "image": image["name"] if by_name else int(image["id"])}
    if params.get("ssh_keys"):
        keys = tuple(params["ssh_keys"])
        if keys not in known.ssh_keys:
            known.ssh_keys[keys] = _ssh_key_ids(client, params["ssh_keys"])
        params = {**params, "ssh_key_ids": known.ssh_keys[keys]}
    return {"server": server, "params": params, "warnings": warnings, "image": image}
