"""What a project may do to its images besides reading them: update, delete, change_protection.

What is simulated (SPEC ``update_image``, ``delete_image``, ``change_image_protection``,
``list_image_actions``, ``list_images_actions``):

- Only ``snapshot`` and ``backup`` images can be updated or deleted, and change_protection "can only be
  used on snapshots" (SPEC). Asking it of another image (a ``system`` one) is 422 ``unsupported_error``.
  Inference: the SPEC names no code for it; its error table defines ``unsupported_error`` as "the
  corresponding resource does not support the Action", and ``forbidden`` (403) as a token's missing
  permission, which this is not.
- DELETE of an image with ``protection.delete`` is 423 ``protected`` (SPEC error table: "the Action you
  are trying to start is protected for this resource"; reference §5.2). A deleted image answers 204, then
  404 everywhere, like an id that never existed.
- Checks run as for servers: the image exists (404), then its type (422), then its protection (423). A
  request that fails a check changes nothing.
- The update's ``type`` may only be ``snapshot``: it converts a backup, which is then bound to no server
  (the SPEC sets ``bound_to`` "only for Images of type ``backup``"). ``labels`` replace the whole set.
- change_protection's action succeeds at once, as the SPEC example's 201 already says ``success``, and its
  ``resources`` are the image. It is listed by ``GET /images/{id}/actions`` and ``GET /images/actions``,
  not by the server lists.
- A server built from an image that is then deleted still shows it, with ``deleted`` set (inference: what
  the image object's ``deleted`` field is for); the image itself is gone from ``/images``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import Protected, UnsupportedError

if TYPE_CHECKING:
    from .backend import Backend
    from .models import Action, Image

__all__ = ["change_protection", "delete_image", "image_actions", "update_image"]

OWNED_TYPES = frozenset({"snapshot", "backup"})  # SPEC: the images a project may update or delete
PROTECTABLE_TYPES = frozenset({"snapshot"})  # SPEC change_image_protection: "only ... on snapshots"


def _image_of_type(backend: Backend, image_id: int, types: frozenset[str], verb: str) -> Image:
    image = backend.image(image_id)
    if image.type not in types:
        allowed = " and ".join(sorted(types))
        raise UnsupportedError(
            f"image {image.id} is a {image.type} image: only {allowed} images can be {verb}"
        )
    return image


def update_image(
    backend: Backend,
    image_id: int,
    *,
    description: str | None,
    image_type: str | None,
    labels: dict[str, str] | None,
) -> Image:
    """Change what was given (None: keep it); the input's shape is already checked."""
    with backend.lock:
        image = _image_of_type(backend, image_id, OWNED_TYPES, "updated")
        if description is not None:
            image.description = description
        if image_type is not None and image_type != image.type:
            image.type = image_type
            image.bound_to = None  # a snapshot outlives its server
        if labels is not None:
            image.labels = dict(labels)
        return image


def delete_image(backend: Backend, image_id: int) -> None:
    """Delete a snapshot or backup that is not delete-protected."""
    with backend.lock:
        image = _image_of_type(backend, image_id, OWNED_TYPES, "deleted")
        if image.protection_delete:
            raise Protected(f"image {image.id} is protected against deletion (protection.delete)")
        del backend.images[image.id]
        image.deleted = backend.clock.now()
        backend.deleted_images[image.id] = image


def change_protection(backend: Backend, image_id: int, delete: bool | None) -> Action:
    """Set ``protection.delete`` (None: leave it, as a body without ``delete`` does) by an instant action."""
    with backend.lock:
        image = _image_of_type(backend, image_id, PROTECTABLE_TYPES, "protected")
        if delete is not None:
            image.protection_delete = delete
        return backend.instant_action("change_protection", {"id": image.id, "type": "image"})


def image_actions(backend: Backend, image_id: int | None = None) -> list[Action]:
    """Return the actions of one image (404 if it does not exist), or of every image, by id."""
    with backend.lock:
        if image_id is not None:
            backend.image(image_id)
        return [
            a
            for _, a in sorted(backend.actions.items())
            if a.resource is not None
            and a.resource["type"] == "image"
            and (image_id is None or a.resource["id"] == image_id)
        ]
