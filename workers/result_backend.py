"""Celery's Redis result backend, keeping a rebuild's user data only as a fingerprint.

Extended results (``result_extended``, which Flower and ``AsyncResult.kwargs`` read) keep each task's keyword
arguments for the result expiry, a day by default. ``user_data`` is cloud-init text, which often holds a
password or a key: the run record keeps only its fingerprint, and a result that held the text beside it
undid that (an outside test found it in the submit task's and the rebuild step's results). The message that
carries it to the worker keeps it in its body (the step needs the text for its POST), but not in the
``argsrepr``/``kwargsrepr`` headers that task events, and so Flower's task pages, show (``redact_reprs``).
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend as _CeleryRedisBackend
from celery.utils.saferepr import saferepr

from .user_data import without_user_data

__all__ = ["RedisBackend", "redact_reprs"]

# What a stored result keeps of its task: submit(workflow, server, params) takes its params by position too.
_STORED = ("args", "kwargs", "result")


def redact_reprs(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    """Rewrite a task message's ``argsrepr``/``kwargsrepr`` headers without its user data (Celery's
    ``before_task_publish`` signal, in every process that loads the app: workers, Flower, Python callers).

    Task events carry these reprs, and Flower shows them: a rebuild's cloud-init text, password and all,
    stood on Flower's task pages (an outside test). Only messages that hold user data are touched.
    """
    if headers is None or not isinstance(body, list | tuple) or len(body) < 2:
        return
    for value, field in ((body[0], "argsrepr"), (body[1], "kwargsrepr")):
        if isinstance(value, dict | list | tuple):
            kept = without_user_data(value)
            if kept != (list(value) if isinstance(value, tuple) else value):
                headers[field] = saferepr(kept, 1024)


class RedisBackend(_CeleryRedisBackend):
    """The Redis result backend; what it stores of a task's arguments and result holds no user data."""

    def _get_result_meta(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        meta: dict[str, Any] = super()._get_result_meta(*args, **kwargs)
        for field in _STORED:
            if isinstance(meta.get(field), dict | list | tuple):
                meta[field] = without_user_data(meta[field])
        return meta
