"""Snapshot retention: which of a server's snapshots hcloud-flow made may go, under "keep N" / "keep within".

Only images this tool made are ever candidates: a snapshot whose ``hcloud-flow/step`` label our create_image
step set (workers/engine.py), of type ``snapshot`` (backups are the API's own rotation), taken of this server
(``created_from``). Of those, never the one just made, never one with delete protection, never one still
being created. The rules keep an image when either keeps it (as restic's ``--keep-last`` and
``--keep-within`` do): the newest ``keep`` of them, and every one created within ``keep_within`` seconds.

``decide`` is pure (images, policy, now in, a decision out); ``prune`` reads the images and deletes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from workers.errors import APIError, BadInput, HcloudFlowError
from workers.labels import STEP_LABEL

from .cron import parse_duration
from .definitions import SAFETY_DESCRIPTION

if TYPE_CHECKING:
    from workers.client import HcloudClient

__all__ = ["MAX_KEEP", "PRUNE_TASK", "Decision", "Policy", "check_policy", "decide", "ours", "prune"]

# The step that applies a snapshot run's retention: a task of ours, not a server action (no Action object).
PRUNE_TASK = "hcloud_flow.prune_snapshots"
PRUNE_DEADLINE = 600.0

MAX_KEEP = 1000
# Ten years: longer keeps every snapshot anyway, and a bigger number is a typo, not a policy.
MAX_KEEP_WITHIN = 3650 * 86400


@dataclass(frozen=True)
class Policy:
    """How many of a server's snapshots to keep (newest first), and/or for how long (seconds)."""

    keep: int | None = None
    keep_within: int | None = None

    def __bool__(self) -> bool:
        return self.keep is not None or self.keep_within is not None


def check_policy(keep: Any, keep_within: Any, *, required: bool = False) -> Policy:
    """Return the policy from ``keep`` (a count) and ``keep_within`` (seconds or "30d"), or refuse it."""
    if keep is not None and (
        isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP
    ):
        raise BadInput(f"keep must be a whole number from 1 to {MAX_KEEP}, not {keep!r}", "keep")
    within = None
    if keep_within is not None:
        if isinstance(keep_within, bool) or not isinstance(keep_within, int | str):
            raise BadInput("keep_within must be a duration such as 30d, 12h or seconds", "keep_within")
        within = parse_duration(keep_within, "keep_within")
        if not 0 < within <= MAX_KEEP_WITHIN:
            days = MAX_KEEP_WITHIN // 86400
            raise BadInput(f"keep_within must be longer than 0 seconds and at most {days}d", "keep_within")
    if required and keep is None and within is None:
        raise BadInput(
            "give --keep N and/or --keep-within DURATION: with neither, every snapshot goes", "keep"
        )
    return Policy(keep, within)


@dataclass
class Decision:
    """What a policy does to one server's images: each id with the reason it stays or goes."""

    delete: list[dict[str, Any]] = field(default_factory=list)
    keep: list[dict[str, Any]] = field(default_factory=list)


def _created(image: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(image.get("created"))).timestamp()
    except ValueError:
        return float("inf")  # an unreadable date never makes an image look old enough to go


def ours(image: dict[str, Any], server_id: int) -> bool:
    """Whether hcloud-flow made this snapshot, of this server, as a snapshot run's image (not a rebuild's
    safety snapshot: that is an undo point, kept until someone deletes it)."""
    labels = image.get("labels") or {}
    safety = str(image.get("description") or "").startswith(SAFETY_DESCRIPTION)
    return (
        image.get("type") == "snapshot"
        and STEP_LABEL in labels
        and not safety
        and int((image.get("created_from") or {}).get("id") or 0) == int(server_id)
    )


def decide(
    images: list[dict[str, Any]],
    server_id: int,
    policy: Policy,
    now: float,
    just_made: int | None = None,
    needed: frozenset[int] = frozenset(),
) -> Decision:
    """Return which of ``server_id``'s snapshots made by hcloud-flow go under ``policy`` and which stay;
    ``needed`` are images a run queued on the server will use (a restore's snapshot)."""
    out = Decision()
    mine = sorted((i for i in images if ours(i, server_id)), key=lambda i: (-_created(i), -int(i["id"])))
    # Only what exists counts towards "the newest N": one still being made may yet fail, and must not
    # push an available one out.
    rank = 0
    for image in mine:
        counts = image.get("status") == "available" or image["id"] == just_made
        row = {
            "id": int(image["id"]),
            "created": image.get("created"),
            "description": image.get("description"),
        }
        if image["id"] == just_made:
            out.keep.append({**row, "why": "just made"})
        elif int(image["id"]) in needed:
            out.keep.append({**row, "why": "a run queued on the server will use it"})
        elif (image.get("protection") or {}).get("delete"):
            out.keep.append({**row, "why": "delete protection is on"})
        elif image.get("status") != "available":
            out.keep.append({**row, "why": f"{image.get('status')}, not available"})
        elif policy.keep is not None and rank < policy.keep:
            out.keep.append({**row, "why": f"one of the newest {policy.keep}"})
        elif policy.keep_within is not None and now - _created(image) <= policy.keep_within:
            out.keep.append({**row, "why": f"made within {policy.keep_within} s"})
        elif not policy:
            out.keep.append({**row, "why": "no policy"})
        else:
            out.delete.append(row)
        rank += counts
    return out


def prune(
    client: HcloudClient,
    server_id: int,
    policy: Policy,
    now: float,
    *,
    just_made: int | None = None,
    dry_run: bool = False,
    images: list[dict[str, Any]] | None = None,
    on_deleted: Callable[[dict[str, Any]], None] | None = None,
    needed: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Apply ``policy`` to the server's snapshots hcloud-flow made; return what went, stayed and failed.

    ``images`` is the project's snapshot list when the caller already read it (one listing for many
    servers). An image already gone counts as deleted; any other refusal is reported, never raised.
    "Within" is judged on the API's clock (its last answer's Date), the one its ``created`` times are on;
    ``now`` (ours) only stands in before any answer. ``on_deleted`` is told of each deletion as it happens.
    """
    result: dict[str, Any] = {
        "server_id": int(server_id),
        "policy": {"keep": policy.keep, "keep_within": policy.keep_within},
        "dry_run": dry_run,
    }
    if images is None:
        try:
            images = client.list_images(type="snapshot", label_selector=STEP_LABEL)
        except HcloudFlowError as exc:
            # The snapshot itself is made: a listing that failed through its retries (budget spent, API
            # away) leaves every older one in place, and says so, instead of failing the run.
            gone = "would_delete" if dry_run else "deleted"
            return {**result, gone: [], "failed": [], "kept": [], "error": f"could not list snapshots: {exc}"}
    decision = decide(images, server_id, policy, client.api_now() or now, just_made, needed)
    deleted: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for row in decision.delete:
        if dry_run:
            continue
        try:
            client.delete_image(row["id"])
        except APIError as exc:
            if exc.code != "not_found":
                failed.append({**row, "error": f"{exc.code}: {exc}"[:300]})
                continue
        except HcloudFlowError as exc:  # the API unreachable through all retries: say so, go on
            failed.append({**row, "error": str(exc)[:300]})
            continue
        deleted.append(row)
        if on_deleted is not None:
            on_deleted(row)
    return {
        **result,
        "would_delete" if dry_run else "deleted": decision.delete if dry_run else deleted,
        "failed": failed,
        "kept": decision.keep,
    }
