"""The Hetzner Cloud API client: one ``request()`` seam, resource methods named after the API's verbs.

``request()`` adds the token, timeouts, the shared rate budget, error parsing and the bounded retry loop;
nothing else in hcloud-flow touches ``requests``. Results are the API's own JSON dicts: they cross Celery
as they are, and tests feed raw API JSON.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from . import __version__
from .errors import APIError, BadInput, ConfigError, TransportError
from .rate_budget import Priority, RateBudget
from .retry_policy import RetryPolicy, is_ambiguous, never_sent, should_retry

__all__ = [
    "DEFAULT_BASE_URL",
    "IDEMPOTENT_METHODS",
    "MAX_IDS_PER_ACTIONS_GET",
    "MAX_PER_PAGE",
    "HcloudClient",
    "session_for",
]

DEFAULT_BASE_URL = "https://api.hetzner.cloud/v1"
# hcloud-go's finding: GET /actions answers at most 25 ids, extra ids "might not be returned at all".
MAX_IDS_PER_ACTIONS_GET = 25
MAX_PER_PAGE = 50
# Methods whose repetition leaves the API as one request would (RFC 9110 §9.2.2), so an ambiguous failure
# (a lost answer, a read timeout, a gateway error) is retried as it is. The API's PUTs replace what they
# are given, and a second DELETE finds nothing to delete (404, which ``gone_is_done`` can count as done).
# A POST starts an action each time it is processed: it is resent only when the API certainly did not act.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# The budget priority of the requests made in this thread or task: fleet jobs spend as "bulk".
_PRIORITY: ContextVar[Priority | None] = ContextVar("hcloud_flow_priority", default=None)
# How long a request made in this thread or task may sleep for the budget (None: the budget's own bound).
# Action tasks sleep not at all: a task asleep holds its message unacknowledged, and a worker killed then
# would keep it until the visibility timeout; they park the step in Redis instead (workers/tasks.py).
_PATIENCE: ContextVar[float | None] = ContextVar("hcloud_flow_patience", default=None)
# How long the requests made in this thread or task may go on retrying (None: the policy's own max_total).
_RETRY_WITHIN: ContextVar[float | None] = ContextVar("hcloud_flow_retry_within", default=None)


def session_for(base_url: str) -> requests.Session:
    """Return a session for ``base_url`` that reads the environment once, here, instead of every request.

    requests looks up proxies, the CA bundle and ``~/.netrc`` before each request of a session that
    trusts the environment: a fifth of a request's CPU (client and fakecloud in one process, measured). And a
    ``.netrc`` entry for the API's host would replace our bearer token with its login. Proxy settings,
    ``no_proxy`` and a CA bundle (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) are still honoured, as
    read when the worker started.
    """
    session = requests.Session()
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(settings.get("proxies") or {})
    session.verify = settings.get("verify", True)
    session.trust_env = False
    return session


class HcloudClient:
    """Talk to the API (or fakecloud) with one token; safe to share between threads of one process."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: tuple[float, float] = (5.0, 30.0),
        budget: RateBudget | None = None,
        priority: Priority = "interactive",
        policy: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen dataclass, shared safely
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        application: str | None = None,
        on_response: Callable[[str, str, int], None] | None = None,
        on_retry: Callable[[str, str], None] | None = None,
        project: str | None = None,
    ) -> None:
        self.project = project  # named in a refusal of the token, where several projects are served
        if not token:
            raise ConfigError("no API token: set HCLOUD_TOKEN in the workers' environment")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.budget = budget
        self.priority: Priority = priority
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rnd = random.Random()
        self._on_response = on_response
        self._api_date: tuple[float, float] | None = None  # (the API's Date, our monotonic clock then)
        self._on_retry = on_retry
        self.session = session or session_for(self.base_url)
        agent = f"hcloud-flow/{__version__} python-requests/{requests.__version__}"
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"{application} {agent}" if application else agent,
            }
        )

    def __repr__(self) -> str:  # the token must never reach a log line through a repr
        return f"HcloudClient(base_url={self.base_url!r})"

    @contextmanager
    def priority_scope(self, priority: Priority | None, patience: float | None = None) -> Iterator[None]:
        """Spend the requests made inside the block at ``priority`` (None keeps the client's own), sleeping
        at most ``patience`` seconds for budget (None keeps the budget's own bound)."""
        token = _PRIORITY.set(priority)
        waiting = _PATIENCE.set(patience)
        try:
            yield
        finally:
            _PATIENCE.reset(waiting)
            _PRIORITY.reset(token)

    @contextmanager
    def retry_within(self, seconds: float) -> Iterator[None]:
        """Stop retrying the requests made inside the block once ``seconds`` have passed since their first
        attempt: for a caller that holds a lock others wait on, and asks again later anyway."""
        token = _RETRY_WITHIN.set(seconds)
        try:
            yield
        finally:
            _RETRY_WITHIN.reset(token)

    # -- the seam -------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        gone_is_done: bool = False,
    ) -> dict[str, Any]:
        """Send one API request with bounded retries and return its decoded JSON body ({} if it has none).

        A POST is retried only when the API certainly did not act on it (see ``retry_policy``); after an
        ambiguous failure the caller must look for the action it may have started before sending again.
        Methods in ``IDEMPOTENT_METHODS`` are retried after ambiguous failures too. With ``gone_is_done``
        (a DELETE), a 404 ``not_found`` that answers a retry after an ambiguous failure means the earlier
        attempt did the work and only its answer was lost: the call returns {} instead of raising.
        """
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        maybe_done = False  # an earlier attempt may have been processed, its answer lost

        def retry_on(exc: BaseException) -> bool:
            nonlocal maybe_done
            retry = should_retry(exc, idempotent=idempotent)
            maybe_done = maybe_done or (retry and is_ambiguous(exc))
            return retry

        def wait(state: RetryCallState) -> float:
            return self.policy.backoff(state.attempt_number, self._rnd)

        within = _RETRY_WITHIN.get()
        max_total = self.policy.max_total if within is None else min(within, self.policy.max_total)
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts) | stop_after_delay(max_total),
            wait=wait,
            retry=retry_if_exception(retry_on),
            sleep=self._sleep,
            reraise=True,
            before_sleep=None if self._on_retry is None else (lambda state: self._on_retry(method, path)),  # type: ignore[misc]
        )
        try:
            return retrying(self._send_once, method, path, params, json)
        except APIError as exc:
            if gone_is_done and maybe_done and exc.code == "not_found":
                return {}
            raise
        except requests.RequestException as exc:
            raise TransportError(
                f"{type(exc).__name__}: {exc}", method, path, maybe_sent=not never_sent(exc)
            ) from exc

    def _send_once(self, method: str, path: str, params: Any, body: Any) -> dict[str, Any]:
        if self.budget is not None:
            # RateBudgetExhausted goes to the caller, unretried.
            self.budget.take(_PRIORITY.get() or self.priority, max_wait=_PATIENCE.get())
        kwargs: dict[str, Any] = {"params": params, "timeout": self.timeout}
        if body is not None:
            kwargs["json"] = body
        response = self.session.request(method, self.base_url + path, **kwargs)
        self._note_date(response.headers.get("Date"))
        if self.budget is not None:
            self.budget.observe(response.headers)
        if self._on_response is not None:
            self._on_response(method, path, response.status_code)
        if response.status_code >= 400:
            error = _error_from(response, method, path)
            if response.status_code == 401 and self.project:
                # A new error, not an edited one: its arguments are what crosses the result backend.
                said = f"the API refused the token of project {self.project!r}: {error.message}"
                error = APIError(
                    error.code, said, error.status, error.details, error.correlation_id, method, path
                )
            raise error
        if not response.content:
            return {}
        return response.json()

    def _note_date(self, header: Any) -> None:
        if not isinstance(header, str):
            return
        try:
            stamp = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self._api_date = (stamp, self._clock())

    def api_now(self) -> float | None:
        """Return the API's own time now, from its last answer's ``Date`` header (None before any answer).

        For comparing with the times the API reports (an image's ``created``): never the local clock, which
        may differ from the API's by any amount.
        """
        if self._api_date is None:
            return None
        stamp, seen = self._api_date
        return stamp + max(0.0, self._clock() - seen)

    # -- servers --------------------------------------------------------------------------------------

    def get_server(self, server_id: int) -> dict[str, Any]:
        """Return one server object."""
        return self.request("GET", f"/servers/{int(server_id)}")["server"]

    def list_servers(
        self, *, label_selector: str | None = None, name: str | None = None, status: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Return every server matching the filters, following pagination."""
        params: list[tuple[str, Any]] = []
        if label_selector is not None:
            params.append(("label_selector", _lookup_filter("label_selector", label_selector)))
        if name is not None:
            params.append(("name", _lookup_filter("name", name)))
        params += [("status", s) for s in status or []]
        return list(self._pages("/servers", "servers", params))

    def iter_server_pages(
        self, params: list[tuple[str, Any]] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the server list page by page, so a caller can stop once it has what it needs."""
        yield from self._page_lists("/servers", "servers", params or [])

    def server_page(
        self, params: list[tuple[str, Any]] | None = None, page: int = 1
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Return one page of the server list and its ``meta.pagination`` (``next_page``, ``last_page``)."""
        query = [*(params or []), ("page", page), ("per_page", MAX_PER_PAGE)]
        body = self.request("GET", "/servers", params=query)
        return body.get("servers", []), (body.get("meta") or {}).get("pagination") or {}

    def _pages(self, path: str, key: str, params: list[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
        for page in self._page_lists(path, key, params):
            yield from page

    def _page_lists(
        self, path: str, key: str, params: list[tuple[str, Any]], *, per_page: int = MAX_PER_PAGE
    ) -> Iterator[list[dict[str, Any]]]:
        page: int | None = 1
        while page:
            body = self.request("GET", path, params=[*params, ("page", page), ("per_page", per_page)])
            yield body.get(key, [])
            pagination = (body.get("meta") or {}).get("pagination") or {}
            page = pagination.get("next_page")

    # -- the ten server actions -------------------------------------------------------------------------

    def server_action(self, server_id: int, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST one server action; return the whole answer (``action`` plus ``root_password``/``image``)."""
        return self.request("POST", f"/servers/{int(server_id)}/actions/{name}", json=body)

    def power_on(self, server_id: int) -> dict[str, Any]:
        """Start the server (``poweron``)."""
        return self.server_action(server_id, "poweron")

    def power_off(self, server_id: int) -> dict[str, Any]:
        """Cut the server's power at once (``poweroff``)."""
        return self.server_action(server_id, "poweroff")

    def reboot(self, server_id: int) -> dict[str, Any]:
        """Ask the guest to reboot by ACPI (``reboot``)."""
        return self.server_action(server_id, "reboot")

    def reset(self, server_id: int) -> dict[str, Any]:
        """Cut power and start again (``reset``)."""
        return self.server_action(server_id, "reset")

    def shutdown(self, server_id: int) -> dict[str, Any]:
        """Ask the guest to shut down by ACPI (``shutdown``); success means only that the signal went out."""
        return self.server_action(server_id, "shutdown")

    def reset_password(self, server_id: int) -> dict[str, Any]:
        """Reset the root password; the answer carries ``root_password``."""
        return self.server_action(server_id, "reset_password")

    def enable_rescue(
        self, server_id: int, *, type: str | None = None, ssh_keys: list[int] | None = None
    ) -> dict[str, Any]:
        """Boot into the rescue system at the next boot; the answer carries ``root_password``."""
        body: dict[str, Any] = {"type": type or "linux64"}
        if ssh_keys:
            body["ssh_keys"] = [int(k) for k in ssh_keys]
        return self.server_action(server_id, "enable_rescue", body)

    def disable_rescue(self, server_id: int) -> dict[str, Any]:
        """Boot from disk again at the next boot."""
        return self.server_action(server_id, "disable_rescue")

    def create_image(
        self,
        server_id: int,
        *,
        description: str | None = None,
        type: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Copy the server's disk into a new image; the answer carries ``image`` (status ``creating``)."""
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if type is not None:
            body["type"] = type
        if labels:
            body["labels"] = labels
        return self.server_action(server_id, "create_image", body or None)

    def rebuild(self, server_id: int, *, image: int | str, user_data: str | None = None) -> dict[str, Any]:
        """Overwrite the disk from an image (id or system name); the answer carries ``root_password``."""
        body: dict[str, Any] = {"image": image}
        if user_data is not None:
            body["user_data"] = user_data
        return self.server_action(server_id, "rebuild", body)

    # -- actions --------------------------------------------------------------------------------------

    def get_action(self, action_id: int) -> dict[str, Any]:
        """Return one action."""
        return self.request("GET", f"/actions/{int(action_id)}")["action"]

    def get_actions(self, action_ids: list[int]) -> list[dict[str, Any]]:
        """Return the given actions, 25 ids a request; ids the API does not know are left out."""
        found: list[dict[str, Any]] = []
        ids = sorted({int(i) for i in action_ids})
        for start in range(0, len(ids), MAX_IDS_PER_ACTIONS_GET):
            chunk = ids[start : start + MAX_IDS_PER_ACTIONS_GET]
            body = self.request("GET", "/actions", params=[("id", i) for i in chunk])
            found += body.get("actions", [])
        return found

    def get_server_actions(self, action_ids: list[int]) -> list[dict[str, Any]]:
        """Return the given server actions, 50 ids a request; ids the API does not know are left out.

        ``GET /servers/actions`` takes the same ``id`` filter as ``GET /actions`` but is a paginated list
        (``per_page`` up to 50), so one request carries twice the ids; a page cut short is followed by its
        ``next_page``, never taken as actions that are gone. Only server actions are found here.
        """
        found: list[dict[str, Any]] = []
        ids = sorted({int(i) for i in action_ids})
        for start in range(0, len(ids), MAX_PER_PAGE):
            chunk = [("id", i) for i in ids[start : start + MAX_PER_PAGE]]
            page: int | None = 1
            for _ in range(MAX_PER_PAGE):  # bounded: a chunk of 50 ids has at most 50 pages
                if page is None:
                    break
                params = [*chunk, ("per_page", MAX_PER_PAGE), ("page", page)]
                body = self.request("GET", "/servers/actions", params=params)
                found += body.get("actions", [])
                page = ((body.get("meta") or {}).get("pagination") or {}).get("next_page")
        return found

    # -- load balancers --------------------------------------------------------------------------------

    def list_load_balancers(self) -> list[dict[str, Any]]:
        """Return every load balancer of the project, following pagination."""
        return list(self._pages("/load_balancers", "load_balancers", []))

    def get_load_balancer(self, lb_id: int) -> dict[str, Any]:
        return self.request("GET", f"/load_balancers/{int(lb_id)}")["load_balancer"]

    def load_balancer_target(self, lb_id: int, verb: str, server_id: int) -> dict[str, Any]:
        """POST ``add_target`` or ``remove_target`` of one server; return the action."""
        if verb not in ("add_target", "remove_target"):
            raise ValueError(f"{verb!r} is not a target action")
        body = {"type": "server", "server": {"id": int(server_id)}}
        return self.request("POST", f"/load_balancers/{int(lb_id)}/actions/{verb}", json=body)["action"]

    def list_server_actions(
        self,
        server_id: int,
        *,
        status: list[str] | None = None,
        sort: str = "id:desc",
        pages: int = 1,
        per_page: int = MAX_PER_PAGE,
    ) -> list[dict[str, Any]]:
        """Return the server's actions, newest first by default, from at most ``pages`` pages."""
        params: list[tuple[str, Any]] = [("sort", sort)] + [("status", s) for s in status or []]
        path = f"/servers/{int(server_id)}/actions"
        out: list[dict[str, Any]] = []
        for n, page in enumerate(self._page_lists(path, "actions", params, per_page=per_page)):
            out += page
            if n + 1 >= pages:
                break
        return out

    # -- images and ssh keys --------------------------------------------------------------------------

    def get_image(self, image_id: int) -> dict[str, Any]:
        """Return one image."""
        return self.request("GET", f"/images/{int(image_id)}")["image"]

    def list_images(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        name: str | None = None,
        label_selector: str | None = None,
        sort: str | None = None,
        include_deprecated: bool = False,
    ) -> list[dict[str, Any]]:
        """Return every image matching the filters (None: no filter; a blank one is refused), all pages.

        The API lists deprecated images only when asked to, though it still builds servers from them.
        """
        params = self._image_params(type, status, name, label_selector, sort)
        if include_deprecated:
            params.append(("include_deprecated", "true"))
        return list(self._pages("/images", "images", params))

    def iter_image_pages(
        self, *, type: str | None = None, sort: str | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield the image list page by page, so a caller can stop once it has what it needs."""
        yield from self._page_lists("/images", "images", self._image_params(type, None, None, None, sort))

    def update_image(
        self, image_id: int, *, labels: dict[str, str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Change a snapshot's or backup's labels (the given set replaces all of them; {} removes every
        label) and/or its description; None leaves a field as it is. Return the updated image."""
        body: dict[str, Any] = {}
        if labels is not None:
            body["labels"] = dict(labels)
        if description is not None:
            body["description"] = description
        # A PUT: repeating it after a lost answer sets the same values again (IDEMPOTENT_METHODS).
        return self.request("PUT", f"/images/{int(image_id)}", json=body)["image"]

    def delete_image(self, image_id: int) -> None:
        """Delete a snapshot or backup (the API answers 204 with no body).

        A DELETE whose answer is lost (reset, read timeout, gateway error) is sent again, and a 404 to
        that retry means the first one deleted the image: done, not an error. A 404 to the first attempt,
        or after failures the API documents as "not processed", still raises APIError ``not_found``.
        Refusals raise too: ``protected`` (delete protection on), ``unsupported_error`` (a system image).
        """
        self.request("DELETE", f"/images/{int(image_id)}", gone_is_done=True)

    def change_image_protection(self, image_id: int, *, delete: bool) -> dict[str, Any]:
        """Turn a snapshot's delete protection on or off; return the ``change_protection`` action."""
        # A POST, but one that sets a flag to a value: a second one after a lost answer leaves the image as
        # the first did (its action simply is not the one returned), so it is retried like a PUT.
        body = {"delete": bool(delete)}
        path = f"/images/{int(image_id)}/actions/change_protection"
        return self.request("POST", path, json=body, idempotent=True)["action"]

    @staticmethod
    def _image_params(*values: str | None) -> list[tuple[str, Any]]:
        names = ("type", "status", "name", "label_selector", "sort")
        return [(k, _lookup_filter(k, v)) for k, v in zip(names, values, strict=True) if v is not None]

    def get_ssh_key(self, key_id: int) -> dict[str, Any]:
        """Return one ssh key."""
        return self.request("GET", f"/ssh_keys/{int(key_id)}")["ssh_key"]

    def list_ssh_keys(self, *, name: str | None = None) -> list[dict[str, Any]]:
        """Return the project's ssh keys, or only the one named ``name``; a blank name is refused."""
        params = [] if name is None else [("name", _lookup_filter("name", name))]
        return list(self._pages("/ssh_keys", "ssh_keys", params))


def _lookup_filter(field: str, value: object) -> str:
    """Return a lookup filter's value, refusing an empty or blank one; None (no filter) never gets here.

    Refused, not dropped: dropping ``name=""`` made the lookup list everything, and a caller taking the
    first match rebuilt a server from an image nobody named. Refused, not sent: the API does not document
    what an empty filter means, and ignoring it is just as likely. BadInput, not ValueError: the tasks
    declare it in ``throws``, so a blank that slips through from user input ends as a refusal that names
    the field, not as a crash.
    """
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{field} filter is empty: a lookup by an empty {field} would match everything", field)
    return value


def _error_from(response: requests.Response, method: str, path: str) -> APIError:
    """Turn an error answer into APIError; gateways answer HTML, so fall back to the status."""
    correlation = response.headers.get("X-Correlation-Id")
    try:
        error = response.json()["error"]
        code, message, details = str(error["code"]), str(error.get("message", "")), error.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = f"http_{response.status_code}", response.reason or "error", None
    return APIError(code, message, response.status_code, details, correlation, method, path)
