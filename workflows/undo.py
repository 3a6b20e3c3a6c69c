"""Undo: the server and image of a run that rebuilds from the snapshot an earlier run made.

``hcloud-flow run restore --from-run RUN_ID`` rebuilds RUN_ID's server from the snapshot RUN_ID took: the
safety snapshot of a ``rebuild``, or the image of a ``snapshot``. Everything is checked at submit, before
the server is touched: the run is known, it made a snapshot, the snapshot is still there and available,
and the server given (if any) is that run's.
"""

from __future__ import annotations

from typing import Any

from workers.client import HcloudClient
from workers.errors import APIError, BadInput, NotFound
from workers.run_store import RunStore

__all__ = ["from_earlier_run", "project_of_run"]


def made_images(run: dict[str, Any]) -> list[int]:
    """Return the ids of the images a run's steps made, in step order."""
    ids = []
    for step in run.get("steps") or []:
        image = (step.get("outputs") or {}).get("image") or {}
        if image.get("id") is not None:
            ids.append(int(image["id"]))
    return ids


def project_of_run(store: RunStore, run_id: Any) -> str | None:
    """Return the project an earlier run ran in (None: unknown run, or one from before projects)."""
    run = store.get(run_id, live=False) if isinstance(run_id, str) and run_id else None
    return (run or {}).get("project")


def from_earlier_run(
    store: RunStore,
    client: HcloudClient,
    param: str,
    server: Any,
    params: dict[str, Any],
    project: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Return the server and parameters of a run restoring from ``params[param]``'s snapshot, or refuse.

    ``project`` is the project the restore would run in: it must be the earlier run's.
    """
    run_id = params.get(param)
    run = store.get(run_id, live=False) if isinstance(run_id, str) and run_id else None
    if run is None:
        absent = NotFound.record("run", run_id, param).message
        raise BadInput(
            f"{absent}; `hcloud-flow images` lists snapshots with the run that made each, for "
            "`run rebuild --image ID`",
            param,
        )
    if project is not None and run.get("project", project) != project:
        raise BadInput(
            f"run {run_id} ran in project {run.get('project')!r}, not {project!r}; a snapshot restores "
            "in the project it was taken in",
            "project",
        )
    images = made_images(run)
    if not images:
        raise BadInput(f"run {run_id} ({run['workflow']}) made no snapshot to restore from", param)
    if server is not None and str(server) not in (str(run["server_id"]), str(run.get("server_name"))):
        raise BadInput(
            f"run {run_id} was of server {run.get('server_name')} ({run['server_id']}), not {server}; a "
            f"snapshot restores the server it was taken of (`run rebuild --image {images[0]}` for another)",
            "server",
        )
    image_id = images[0]
    try:
        image = client.get_image(image_id)
    except APIError as exc:
        if exc.code == "not_found":
            raise BadInput(
                f"the snapshot {image_id} that run {run_id} made is gone (deleted); nothing to restore from",
                param,
            ) from exc
        raise
    if image.get("status") != "available":
        raise BadInput(
            f"the snapshot {image_id} of run {run_id} is {image.get('status')}, not available", param
        )
    return run["server_id"], {**params, "image": image_id}
