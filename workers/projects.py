"""Named Hetzner Cloud projects: each its own token, endpoint and rate budget.

A token belongs to exactly one project, and the API's rate limit is counted per project, so every part
that talks to the API (the engine, its client, its budget, its monitor) is built per project. Runs, jobs and
windows name the project they act in; a fleet or a window never mixes two.

Configuration (read at the edge, in ``celeryconfig``; documented in the README):

- ``HCLOUD_FLOW_PROJECTS=prod,staging``: the names. Unset, there is one project, ``default``, whose token
  is ``HCLOUD_TOKEN``.
- For each name, its token in ``HCLOUD_TOKEN_<NAME>`` (upper case, ``-`` as ``_``) or, better, in a file
  named by ``HCLOUD_TOKEN_<NAME>_FILE`` (a compose secret, readable by the workers only); the project named
  ``default`` falls back to ``HCLOUD_TOKEN[_FILE]``. Its endpoint is ``HCLOUD_ENDPOINT_<NAME>``, else
  ``HCLOUD_ENDPOINT``.
- ``HCLOUD_FLOW_DEFAULT_PROJECT``: the project a submission without ``--project`` acts in (the first name
  by default).

Submitters (CLI, web, other services) have no tokens: they send a project's name, and the worker that
takes the submission refuses a name it does not serve.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import BadInput, ConfigError

__all__ = [
    "DEFAULT_PROJECT",
    "Project",
    "Projects",
    "check_project_name",
    "in_project",
    "projects_from",
    "read_secret",
    "variable_suffix",
]

DEFAULT_PROJECT = "default"


def in_project(record: dict[str, Any], project: str | None) -> bool:
    """Tell whether a run or job record is of ``project`` (any, for None); records from before projects
    name none and are the default project's."""
    return project is None or (record.get("project") or DEFAULT_PROJECT) == project


_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# Secret files are small; a larger one is a mistake (a key file, a directory dump), not a token.
_MAX_SECRET_FILE = 64 * 1024


def check_project_name(value: Any, field_name: str = "project") -> str:
    """Return a project name (lower-case letters, digits and '-', at most 32, a letter first), or refuse."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):  # fullmatch: "prod\n" is not "prod"
        shown = value if isinstance(value, str) else type(value).__name__
        raise BadInput(
            f"a project name is 1 to 32 lower-case letters, digits or '-', starting with a letter, "
            f"not {str(shown)[:40]!r}",
            field_name,
        )
    return value


def variable_suffix(name: str) -> str:
    """Return the part a project's name adds to its variables: ``eu-prod`` -> ``EU_PROD``."""
    return name.upper().replace("-", "_")


def read_secret(environ: Mapping[str, str], variable: str, *, empty_file: bool = True) -> str:
    """Return a secret from ``VARIABLE``, or from the file ``VARIABLE_FILE`` names; "" when neither is set.

    An empty file is "" too (compose mounts a file for every secret, and an empty sealing or webhook key
    says "none"), unless ``empty_file`` is False: then it is refused.

    Both set is refused: which one wins would be a guess. The file's surrounding whitespace (a trailing
    newline from ``echo``) is not part of the secret.
    """
    direct = environ.get(variable, "")
    path = environ.get(f"{variable}_FILE", "")
    if direct and path:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    if not path:
        return direct.strip()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{variable}_FILE: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_SECRET_FILE:
        raise ConfigError(f"{variable}_FILE: {path} is larger than {_MAX_SECRET_FILE} bytes; not a secret")
    try:
        text = raw.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}_FILE: {path} is not UTF-8 text") from None
    if not text and not empty_file:
        raise ConfigError(f"{variable}_FILE: {path} is empty")
    return text


@dataclass(frozen=True)
class Project:
    """One project: its name, its API endpoint and its token (never printed: repr leaves it out)."""

    name: str
    endpoint: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Projects:
    """The projects a worker serves, and the one a submission without a project name acts in."""

    by_name: dict[str, Project]
    default: str

    def get(self, name: str | None) -> Project:
        """Return the named project (the default for None), or refuse a name not served here."""
        wanted = self.default if name is None else check_project_name(name)
        project = self.by_name.get(wanted)
        if project is None:
            served = ", ".join(sorted(self.by_name)) or "none"
            raise BadInput(
                f"no project {wanted!r} is configured on the workers (they serve: {served})", "project"
            )
        return project

    def names(self) -> list[str]:
        """Return the names served, the default first."""
        return [self.default, *sorted(n for n in self.by_name if n != self.default)]


def _endpoint(variable: str, url: str) -> str:
    """Return an API base URL, or refuse it at start: a worker given ``notaurl`` started and failed every
    request (an outside test)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The scheme only: the rest of a URL may hold credentials.
        raise ConfigError(f"{variable} must be an http(s) URL of the API, not one starting {url[:8]!r}")
    return url.strip()


def projects_from(environ: Mapping[str, str], *, default_endpoint: str) -> Projects:
    """Return the projects configured in ``environ`` (see the module's docstring); tokens may be empty.

    An empty token is not refused here (the CLI and the web service read this too and need none); the
    engine of a project refuses to start without one.
    """
    endpoint = _endpoint("HCLOUD_ENDPOINT", environ.get("HCLOUD_ENDPOINT", "") or default_endpoint)
    listed = [n.strip() for n in environ.get("HCLOUD_FLOW_PROJECTS", "").split(",") if n.strip()]
    if not listed:
        token = read_secret(environ, "HCLOUD_TOKEN")
        return Projects({DEFAULT_PROJECT: Project(DEFAULT_PROJECT, endpoint, token)}, DEFAULT_PROJECT)
    by_name: dict[str, Project] = {}
    for name in listed:
        try:
            check_project_name(name)
        except BadInput as exc:
            raise ConfigError(f"HCLOUD_FLOW_PROJECTS: {exc.message}") from None
        if name in by_name:
            raise ConfigError(f"HCLOUD_FLOW_PROJECTS names {name!r} twice")
        suffix = variable_suffix(name)
        token = read_secret(environ, f"HCLOUD_TOKEN_{suffix}")
        if not token and name == DEFAULT_PROJECT:
            # The single-project installation's token keeps serving its project when others are added.
            token = read_secret(environ, "HCLOUD_TOKEN")
        own = environ.get(f"HCLOUD_ENDPOINT_{suffix}", "")
        by_name[name] = Project(name, _endpoint(f"HCLOUD_ENDPOINT_{suffix}", own) if own else endpoint, token)
    default = environ.get("HCLOUD_FLOW_DEFAULT_PROJECT", "").strip() or listed[0]
    if default not in by_name:
        raise ConfigError(
            f"HCLOUD_FLOW_DEFAULT_PROJECT={default[:40]!r} not in HCLOUD_FLOW_PROJECTS ({','.join(listed)})"
        )
    return Projects(by_name, default)
