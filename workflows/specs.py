"""The input models of fleet jobs and maintenance windows: one definition of each field's rules.

Every entry point builds these (the CLI before it sends, the Python API, the ``hcloud_flow.fleet_*`` tasks
that ``send_task`` and Flower reach, the window store, the HTTP API's request bodies), so a field is checked
one way everywhere. The rules themselves stay the named functions they were (``parse_amount``,
``check_selector``, ``check_params``, ``parse_duration``, ``parse_cron``): each model field runs its rule
*before* pydantic's own type check, so a refusal is a ``BadInput`` in our words; the field types give the
JSON schema (``FleetSpec.model_json_schema()``) for callers in other languages.

Checks that need the API (do the servers exist, is the image there) come after, in ``FleetRunner.plan``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workers.errors import BadInput
from workers.ids import is_id
from workers.labels import check_selector
from workers.projects import check_project_name

from .cron import MAX_DURATION, WINDOW_NAME, cron_can_fire, parse_cron, parse_duration, zone
from .fleet_plan import parse_amount
from .gates import check_template
from .notify import check_urls
from .validate import check_params, require_unicode, workflow_named

__all__ = ["FleetSpec", "Targets", "WindowSpec", "checked"]

_MAX_SERVERS = 10_000  # one job; a bigger list is a mistake (a fleet of more is several jobs)
APPROVAL_TIMEOUT = 3600  # seconds a job awaits approval by default: an unattended gate must not hold forever


def checked(model: type[BaseModel], data: Any) -> Any:
    """Build ``model`` from ``data`` or refuse with a BadInput naming the field (nothing is changed)."""
    if not isinstance(data, dict):
        raise BadInput(f"expected an object of {model.__name__} fields, not {type(data).__name__}")

    noun = getattr(model, "noun", model.__name__)
    unknown = sorted(map(str, set(data) - set(model.model_fields)))
    if unknown:
        known = ", ".join(model.model_fields)
        raise BadInput(f"unknown {noun}s {', '.join(unknown)} (known: {known})", unknown[0])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or model.__name__
        if error["type"] == "missing":
            about = model.model_fields[field].description if field in model.model_fields else None
            raise BadInput(f"{field} is missing" + (f"; {about}" if about else ""), field) from None
        raise BadInput(f"{field}: {error['msg']}", field) from None


class Targets(BaseModel):
    """Which servers, in which project: a fleet job's, a window's and `images prune`'s (one rule each)."""

    model_config = ConfigDict(extra="forbid")
    noun: ClassVar[str] = "option"

    project: str | None = Field(None, description="the project to act in (the workers' default)")
    selector: str | None = Field(None, description="label selector, e.g. 'env=staging,role in (web,api)'")
    servers: list[int | str] | None = Field(None, description="server ids or names (instead of a selector)")

    @field_validator("project", mode="before")
    @classmethod
    def _project(cls, value: Any) -> Any:
        return None if value is None else check_project_name(value)

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: Any) -> Any:
        return None if value is None else check_selector(value)

    @field_validator("servers", mode="before")
    @classmethod
    def _servers(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # "1,2,srv-7", as the CLI and a form send it
            value = [int(s) if is_id(s) else s for s in (p.strip() for p in value.split(",")) if s]
        if not isinstance(value, list) or not value:
            raise BadInput("servers must be a non-empty list of server ids or names", "servers")
        if len(value) > _MAX_SERVERS:
            raise BadInput(f"servers: at most {_MAX_SERVERS} in one job, not {len(value)}", "servers")
        for ref in value:
            if isinstance(ref, bool) or not isinstance(ref, int | str) or not str(ref).strip():
                raise BadInput(f"servers holds {ref!r}; give each server as an id or a name", "servers")
            if isinstance(ref, int) and ref <= 0:
                raise BadInput(f"servers holds {ref}; server ids are positive", "servers")
        twice = next((ref for i, ref in enumerate(value) if ref in value[:i]), None)
        if twice is not None:  # here too, for windows stored with --no-check (the API finds an id and a name)
            raise BadInput(f"servers names {twice!r} more than once; name each server once", "servers")
        return value


class FleetSpec(Targets):
    """What a fleet job runs, on which servers, and how carefully."""

    model_config = ConfigDict(extra="forbid")
    noun: ClassVar[str] = "fleet option"

    workflow: str = Field(description="workflow name (hcloud-flow workflows)")
    params: dict[str, Any] = Field(default_factory=dict, description="the workflow's parameters")
    max_concurrency: str = Field("1", description="servers in flight at most: N or P% (of the fleet)")
    max_errors: str = Field("0", description="stop starting servers past this many errors: N or P%")
    canary: int = Field(0, ge=0, description="the first N servers must all succeed before any other starts")
    max_per_placement_group: int | None = Field(
        None, ge=1, description="servers of one placement group in flight at most (beside max_concurrency)"
    )
    max_per_location: int | None = Field(
        None, ge=1, description="servers of one location in flight at most (beside max_concurrency)"
    )
    notify: list[str] = Field(
        default_factory=list, description="webhook URLs told of the job's start and end"
    )
    drain: bool = Field(
        False,
        description="take each server out of the load balancers that target it directly before its run, "
        "put it back after, and wait until they report it healthy",
    )
    block_on: list[str] = Field(
        default_factory=list,
        description="no new server starts while one of these URLs answers non-2xx or lists alerts",
    )
    health_check: str | None = Field(
        None,
        description="after each server's run: http(s)://{ipv4}:8080/healthz or tcp://{ipv4}:22 must be "
        "healthy ({ipv4}, {name} and {id} are filled in)",
    )
    health_timeout: int = Field(300, gt=0, description="how long a server may take to be healthy, e.g. 5m")
    health_settle: int = Field(
        30, ge=0, description="how long it must stay healthy without a break, e.g. 30s"
    )
    approve_before_start: bool = Field(False, description="wait for `job approve` before any server starts")
    approve_after_canary: bool = Field(
        False, description="wait for `job approve` after the canary wave succeeded (needs canary)"
    )
    approval_timeout: int = Field(
        APPROVAL_TIMEOUT,
        gt=0,
        description="cancel the job if no approval comes within this long, e.g. 1h (seconds over HTTP)",
    )

    @field_validator("workflow", mode="before")
    @classmethod
    def _workflow(cls, value: Any) -> str:
        wf = workflow_named(value)
        if wf.from_run is not None:
            raise BadInput(
                f"{wf.name} takes its server from an earlier run; it does not run over a fleet", "workflow"
            )
        return wf.name

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, value: Any) -> list[str]:
        return check_urls(value)

    @field_validator("block_on", mode="before")
    @classmethod
    def _block_on(cls, value: Any) -> list[str]:
        return check_urls(value, "block_on", slack=False)

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise BadInput("params must be an object of parameter names to values", "params")
        return value

    @field_validator("max_concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> str:
        return str(parse_amount(value, "max_concurrency", minimum=1))

    @field_validator("max_errors", mode="before")
    @classmethod
    def _errors(cls, value: Any) -> str:
        return str(parse_amount(value, "max_errors", minimum=0))

    @field_validator("canary", mode="before")
    @classmethod
    def _canary(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadInput(f"canary must be a whole number >= 0, not {value!r}", "canary")
        return value

    @field_validator("approve_before_start", "approve_after_canary", "drain", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> bool:
        if value is None:  # JSON null: not set
            return False
        if not isinstance(value, bool):
            raise BadInput(f"{info.field_name} must be true or false, not {value!r}", str(info.field_name))
        return value

    @field_validator("max_per_placement_group", "max_per_location", mode="before")
    @classmethod
    def _per_place(cls, value: Any, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise BadInput(
                f"{info.field_name} must be a whole number from 1 to 100000, not {value!r}",
                str(info.field_name),
            )
        return value

    @field_validator("health_check", mode="before")
    @classmethod
    def _health_check(cls, value: Any) -> str | None:
        return None if value is None else check_template(value)

    @field_validator("health_timeout", "health_settle", mode="before")
    @classmethod
    def _health_times(cls, value: Any, info: ValidationInfo) -> int:
        seconds = parse_duration(value, str(info.field_name))
        low = 10 if info.field_name == "health_timeout" else 0
        if not low <= seconds <= 86400:
            raise BadInput(
                f"{info.field_name} must be from {low}s to 1d, not {value!r}", str(info.field_name)
            )
        return seconds

    @field_validator("approval_timeout", mode="before")
    @classmethod
    def _approval_timeout(cls, value: Any) -> int:
        seconds = parse_duration(value, "approval_timeout")
        if not 60 <= seconds <= MAX_DURATION:
            raise BadInput(f"approval_timeout must be from 1m to 7d, not {value!r}", "approval_timeout")
        return seconds

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        require_unicode(data, f"a {cls.noun}")
        return data

    @model_validator(mode="after")
    def _whole(self) -> FleetSpec:
        if (self.selector is None) == (self.servers is None):
            raise BadInput("give exactly one of selector or servers", "selector")
        # A setting of a feature not asked for is a mistake to say, not to drop (a stored window holds every
        # field with its default, so only a value other than the default counts as given).
        defaults = {k: f.default for k, f in type(self).model_fields.items()}
        given = {
            k
            for k in ("health_timeout", "health_settle", "approval_timeout")
            if getattr(self, k) != defaults[k]
        }
        if self.health_check is None and given & {"health_timeout", "health_settle"}:
            raise BadInput(
                "health_timeout and health_settle go with health_check (--health-check URL)", "health_check"
            )
        if self.health_check is not None and self.health_settle >= self.health_timeout:
            raise BadInput(
                f"health_settle ({self.health_settle} s) must be shorter than health_timeout "
                f"({self.health_timeout} s)",
                "health_settle",
            )
        if "approval_timeout" in given and not (self.approve_before_start or self.approve_after_canary):
            raise BadInput(
                "approval_timeout goes with an approval gate "
                "(--approve-before-start or --approve-after-canary)",
                "approval_timeout",
            )
        if self.approve_after_canary and not self.canary:
            raise BadInput("approve_after_canary needs a canary wave: give canary N (1 or more)", "canary")
        # The workflow's own parameter model (from its table); defaults filled in, unset ones dropped.
        clean = check_params(workflow_named(self.workflow), self.params)
        self.params = {k: v for k, v in clean.items() if v is not None}
        return self


class WindowSpec(FleetSpec):
    """A maintenance window: a fleet job started by a cron schedule, open for a while."""

    noun: ClassVar[str] = "window field"

    name: str = Field(
        description="1-63 lowercase letters, digits, '-', '_' or '.'", pattern=WINDOW_NAME.pattern
    )
    cron: str = Field(description="a five-field cron in the window's time zone, e.g. '0 3 * * SUN'")
    tz: str = Field("UTC", description="IANA time zone of the cron")
    duration: int = Field(description="how long the window stays open, e.g. 2h, 30m, 1h30m or 90s", gt=0)
    cutoff: int = Field(0, ge=0, description="no new server starts this long before the end (seconds)")
    paused: bool = False

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or not WINDOW_NAME.match(value):
            raise BadInput("window names are 1-63 lowercase letters, digits, '-', '_' or '.'", "name")
        return value

    @field_validator("cron", mode="before")
    @classmethod
    def _cron(cls, value: Any) -> str:
        if value is None:
            raise BadInput("cron is missing; give it like --cron '0 3 * * SUN'", "cron")
        if not cron_can_fire(parse_cron(value)):
            raise BadInput(f"cron {value[:80]!r} never fires: no month has that day", "cron")
        return " ".join(str(value).split())

    @field_validator("tz", mode="before")
    @classmethod
    def _tz(cls, value: Any) -> str:
        return "UTC" if value is None else str(zone(value))  # null is the default, as in an edit

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> int:
        seconds = parse_duration(value, "duration")
        if seconds > MAX_DURATION:
            raise BadInput(f"duration is at most 7d, not {value!r}", "duration")
        if seconds <= 0:
            raise BadInput("duration must be longer than 0", "duration")
        return seconds

    @field_validator("cutoff", mode="before")
    @classmethod
    def _cutoff(cls, value: Any) -> int:
        return parse_duration(value, "cutoff")

    @field_validator("paused", mode="before")
    @classmethod
    def _paused(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise BadInput(f"paused must be true or false, not {value!r}", "paused")
        return value

    @model_validator(mode="after")
    def _open_long_enough(self) -> WindowSpec:
        if self.cutoff >= self.duration:
            raise BadInput(
                f"cutoff ({self.cutoff} s) must be shorter than the duration ({self.duration} s)", "cutoff"
            )
        return self
