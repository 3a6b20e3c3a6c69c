"""The built-in workflows, declared as data: steps, their parameters, and when each step runs.

A step's ``when`` looks at the facts gathered at submit time (the server as it was, the parameters), so
"power on again only if the server was running before" is decided once, up front, and shows in the plan.
Building the Celery chain from a declaration is a pure function in ``workflows/build.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workers.errors import Unsettled

__all__ = ["WORKFLOWS", "Param", "Step", "Workflow"]

Facts = dict[str, Any]  # {"server": the server object at submit, "params": the validated parameters}


@dataclass(frozen=True)
class Param:
    """One workflow parameter: its type, default and help text for the CLI and docs."""

    name: str
    kind: type | tuple[type, ...]
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None  # numbers: the least value taken
    maximum: float | None = None  # numbers: the largest value taken


@dataclass(frozen=True)
class Step:
    """One step: an action task, its arguments from the facts, and whether it runs at all."""

    name: str
    action: str
    args: Callable[[Facts], dict[str, Any]] = lambda f: {}
    when: Callable[[Facts], bool] = lambda f: True
    # The step outcomes ("failed", "cancelled") at which the run powers the server on again if it was
    # running before (unless --leave-off): up to where the workflow itself would have started it. The step
    # that starts it restores only when cancelled before it ran; when it fails, the run says so instead.
    restore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workflow:
    """A named sequence of steps over one server."""

    name: str
    summary: str
    steps: tuple[Step, ...]
    params: tuple[Param, ...] = ()
    needs_running: bool = False
    # The parameter naming an earlier run whose server and snapshot this run takes (workflows/undo.py):
    # then --server may be left out, and the image comes from that run.
    from_run: str | None = None
    # It interrupts what the server serves (a reboot, a shutdown, a rebuild): a fleet job's --drain takes
    # the server out of its load balancers first. Powering on or resetting a password does not.
    disruptive: bool = True


# The statuses a plan can be made for. Any other is on its way to one of them (starting, stopping, rebuilding,
# migrating...), and which one decides the steps: a server booting by someone else's hand was planned as
# off, so a snapshot skipped the shutdown and imaged a running disk, and a rescue booted the installed
# system and reported success (an outside test).
SETTLED = ("running", "off")
# Where a server on its way is heading, for a run queued behind the run that moves it: planned for that, and
# checked again as it starts (workflows.build.plan_fits), so a wrong guess starts nothing.
HEADING = {"starting": "running", "stopping": "off", "rebuilding": "running", "migrating": "running"}


def _was_running(f: Facts) -> bool:
    status = f["server"]["status"]
    if status not in SETTLED:
        name = f["server"].get("name") or f["server"].get("id") or "the server"
        raise Unsettled(
            f"server {name} is {status}: this run's steps depend on whether it is running or off; submit "
            "again once it has settled",
            status,
        )
    return bool(status == "running")


def _shutdown(f: Facts) -> dict[str, Any]:
    p = f["params"]
    return {
        "force": not p.get("no_force", False),
        **({"grace": p["grace"]} if p.get("grace") is not None else {}),
    }


def _image(f: Facts) -> dict[str, Any]:
    p = f["params"]
    labels = dict(p.get("labels") or {})
    return {
        "description": p.get("description"),
        "type": p.get("image_type") or "snapshot",
        "labels": labels or None,
    }


def _retention(f: Facts) -> dict[str, Any]:
    return {"keep": f["params"].get("keep"), "keep_within": f["params"].get("keep_within")}


def _retains(f: Facts) -> bool:
    return f["params"].get("keep") is not None or f["params"].get("keep_within") is not None


# A rebuild's safety snapshot is the undo point of `run restore --from-run`: snapshot retention never counts
# or deletes it. Known by its description (a label would need the prefix hcloud-flow/, which labels a
# request may not carry: check_labels keeps it for the step label the engine adds).
SAFETY_DESCRIPTION = "hcloud-flow safety snapshot before rebuild of "


def _safety_image(f: Facts) -> dict[str, Any]:
    return {
        "description": f"{SAFETY_DESCRIPTION}{f['server']['name']}",
        "type": "snapshot",
    }


def _rebuild(f: Facts) -> dict[str, Any]:
    p = f["params"]
    return {"image": p["image"], **({"user_data": p["user_data"]} if p.get("user_data") else {})}


def _rescue(f: Facts) -> dict[str, Any]:
    return {
        "type": f["params"].get("rescue_type") or "linux64",
        "ssh_keys": f["params"].get("ssh_key_ids") or None,
    }


SHUTDOWN_PARAMS = (
    Param(
        "no_force", bool, False, "never fall back to a hard power off if the guest ignores the ACPI shutdown"
    ),
    Param(
        "grace",
        (int, float),
        None,
        "seconds to wait for the guest to shut down before forcing (default 60)",
        minimum=0,
        maximum=3600,
    ),
)
STOPPED = ("failed", "cancelled")  # restore after either
BEFORE_START = ("cancelled",)  # the step that would start the server: restore only if it never ran
LEAVE_OFF = Param(
    "leave_off",
    bool,
    False,
    "on failure or cancel, leave a server this run stopped off (default: power it on)",
)
IMAGE_PARAMS = (
    Param("description", str, None, "description of the new image"),
    Param("labels", dict, None, "labels of the new image"),
    Param("image_type", str, "snapshot", "snapshot or backup", choices=("snapshot", "backup")),
)

RETENTION_PARAMS = (
    Param(
        "keep",
        int,
        None,
        "after the snapshot, delete older snapshots hcloud-flow made of this server beyond the newest N",
        minimum=1,
        maximum=1000,
    ),
    Param(
        "keep_within",
        (int, str),
        None,
        "keep every snapshot hcloud-flow made of this server within this long, e.g. 30d (with --keep: "
        "kept if either keeps it)",
    ),
)

WORKFLOWS: dict[str, Workflow] = {
    w.name: w
    for w in (
        Workflow(
            "power-on",
            "Power the server on and wait until it is running.",
            (Step("power_on", "power_on"),),
            disruptive=False,
        ),
        Workflow(
            "power-off",
            "Cut the server's power (hard) and wait until it is off.",
            (Step("power_off", "power_off"),),
        ),
        Workflow(
            "shutdown",
            "Shut the server down gracefully (ACPI) and confirm it is off; power it off "
            "after the grace period unless --no-force.",
            (Step("shutdown", "shutdown", _shutdown),),
            SHUTDOWN_PARAMS,
        ),
        Workflow("reboot", "Reboot the server gracefully (ACPI).", (Step("reboot", "reboot"),)),
        Workflow(
            "reset",
            "Reset the server (power cycle) and wait until it is running.",
            (Step("reset", "reset"),),
        ),
        Workflow(
            "snapshot",
            "Shut down gracefully, snapshot the disk, wait until the image is available, and power on again "
            "only if the server was running before.",
            (
                Step("shutdown", "shutdown", _shutdown, when=_was_running, restore=STOPPED),
                Step("create_image", "create_image", _image, restore=STOPPED),
                Step("power_on", "power_on", when=_was_running, restore=BEFORE_START),
                # Last: the server is back as it was before older snapshots go.
                Step("prune", "prune_snapshots", _retention, when=_retains),
            ),
            SHUTDOWN_PARAMS + IMAGE_PARAMS + RETENTION_PARAMS + (LEAVE_OFF,),
        ),
        Workflow(
            "rebuild",
            "Shut down gracefully, take a safety snapshot (unless --no-snapshot), rebuild from an image, and "
            "wait until the server is running.",
            (
                Step("shutdown", "shutdown", _shutdown, when=_was_running, restore=STOPPED),
                Step(
                    "safety_snapshot",
                    "create_image",
                    _safety_image,
                    when=lambda f: not f["params"]["no_snapshot"],
                    restore=STOPPED,
                ),
                Step("rebuild", "rebuild", _rebuild),
                Step("power_on", "power_on", lambda f: {"skip_if_status": "running"}, restore=BEFORE_START),
            ),
            (
                Param(
                    "image",
                    (int, str),
                    None,
                    "image to rebuild from: an id, or a system image name",
                    required=True,
                ),
                Param("no_snapshot", bool, False, "skip the safety snapshot"),
                Param(
                    "user_data",
                    str,
                    None,
                    "cloud-init user data (at most 32 KiB); on the command line @FILE reads a file",
                ),
                *SHUTDOWN_PARAMS,
                LEAVE_OFF,
            ),
        ),
        Workflow(
            "restore",
            "Undo: rebuild a server from the snapshot an earlier run made (a rebuild's safety snapshot, or a "
            "snapshot run's image), refused if that snapshot is gone; power it on as it was.",
            (
                Step("shutdown", "shutdown", _shutdown, when=_was_running, restore=STOPPED),
                Step("rebuild", "rebuild", _rebuild),
                Step("power_on", "power_on", lambda f: {"skip_if_status": "running"}, restore=BEFORE_START),
            ),
            (
                Param(
                    "from_run",
                    str,
                    None,
                    "the run whose snapshot to restore (its server is the target)",
                    required=True,
                ),
                *SHUTDOWN_PARAMS,
                LEAVE_OFF,
            ),
            from_run="from_run",
        ),
        Workflow(
            "rescue",
            "Enable the rescue system, then reset (or power on, if off) to boot into it; wait until running.",
            (
                Step("enable_rescue", "enable_rescue", _rescue),
                Step("reset", "reset", when=_was_running),
                Step("power_on", "power_on", when=lambda f: not _was_running(f)),
            ),
            (
                Param("ssh_keys", list, None, "ssh keys for the rescue system, by id or name"),
                Param("rescue_type", str, "linux64", "rescue system type", choices=("linux64",)),
            ),
        ),
        Workflow(
            "rescue-off",
            "Disable the rescue system and reboot into the installed system.",
            (Step("disable_rescue", "disable_rescue"), Step("reboot", "reboot")),
        ),
        Workflow(
            "reset-password",
            "Reset the root password of a running server; the password is sealed in the run record.",
            (Step("reset_password", "reset_password"),),
            needs_running=True,
            disruptive=False,
        ),
    )
}
