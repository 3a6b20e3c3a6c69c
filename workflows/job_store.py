"""Fleet job records in Redis: one hash per job (``hf:job:<id>``) with its plan, state and each server's
outcome, plus the fields the gates keep (an approval, a block, what was told), and the per-job lock."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from workers.projects import in_project
from workers.redis_values import text, text_hash, texts
from workers.run_store import FINAL
from workers.user_data import without_user_data

__all__ = ["JOB_FINAL", "JobStore"]

JOB_FINAL = FINAL  # jobs end in the same three states as runs (and completed_with_failures)
# How many of the newest jobs a listing of one project's looks through (CLI and HTTP alike).
PROJECT_SCAN = 2000
# The parts of a job's plan that hold its workflow parameters, and so a rebuild's user data.
_WITH_PARAMS = ("params", "spec")

# KEYS[1] a job's hash: whether it exists, its state, and how many servers have each outcome, as JSON.
# Counted inside Redis: the caller needs three numbers, not the 400 outcomes it would decode to get them.
_TALLY = """
if redis.call('HEXISTS', KEYS[1], 'meta') == 0 then return {0, false, '{}'} end
local counts, fields = {}, redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 4) == 'srv:' then
    local outcome = cjson.decode(fields[i + 1])['outcome']
    if type(outcome) == 'string' then counts[outcome] = (counts[outcome] or 0) + 1 end
  end
end
return {1, redis.call('HGET', KEYS[1], 'state'), cjson.encode(counts)}
"""


class JobStore:
    """Fleet job records in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "hf",
        retention: float = 7 * 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention = int(retention)
        self.clock = clock
        self._tally = client.register_script(_TALLY)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def create(self, meta: dict[str, Any]) -> None:
        self.redis.hset(self.key(meta["id"]), mapping={"meta": json.dumps(meta), "state": "running"})
        self.redis.zadd(f"{self.prefix}:jobs", {meta["id"]: meta["created"]})

    @staticmethod
    def holds_user_data(job: dict[str, Any]) -> bool:
        """Tell whether a job record (as ``get`` returns it) still keeps user data as given: read from the
        record in hand, so that the advances of the many jobs without any read and parse no plan again."""
        return not job.get("user_data_forgotten") and any(
            without_user_data(job.get(part)) != job.get(part) for part in _WITH_PARAMS
        )

    def forget_user_data(self, job_id: str) -> None:
        """Keep only the fingerprint of the job's user data from now on (its params and its spec, which `job
        retry` reads): once the job has started its last server with it, nothing needs the text. Marked as
        forgotten, so that a retry asks for the text again rather than rebuilding with the fingerprint.

        The plan (``meta``) is written once, by ``create``, and only here after it: no writer to race.
        """
        raw = self.redis.hget(self.key(job_id), "meta")
        if raw is None:
            return
        meta = json.loads(raw)
        if meta.get("user_data_forgotten"):
            return  # a fingerprint of the fingerprint would match no text given again
        kept = {**meta, **{part: without_user_data(meta.get(part)) for part in _WITH_PARAMS}}
        if kept != meta:
            self.redis.hset(self.key(job_id), "meta", json.dumps({**kept, "user_data_forgotten": True}))

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = text_hash(self.redis.hgetall(self.key(job_id)))
        if "meta" not in raw:
            return None
        job = self._head(raw["meta"], raw.get("state"))
        job["reason"] = raw.get("reason")
        job["finished"] = float(raw["finished"]) if raw.get("finished") else None
        outcomes: dict[int, Any] = {}
        by_prefix: dict[str, list[tuple[str, str]]] = {
            "ctl:": [], "retry:": [], "appr:": [], "told:": [], "wait:": []
        }  # fmt: skip
        for k, v in raw.items():  # one pass: a job of 400 servers has 400 outcome fields
            if k.startswith("srv:"):
                outcomes[int(k[4:])] = json.loads(v)
            elif (prefix := k[: k.find(":") + 1]) in by_prefix:
                by_prefix[prefix].append((k, v))
        job["outcomes"] = outcomes
        job["controls"] = [json.loads(v) for _, v in sorted(by_prefix["ctl:"])]
        job["retried_by"] = [v for _, v in sorted(by_prefix["retry:"])]
        job["approved"] = {k[5:]: json.loads(v) for k, v in by_prefix["appr:"]}
        job["approval"] = json.loads(raw["approval"]) if raw.get("approval") else None
        job["blocked"] = json.loads(raw["blocked"]) if raw.get("blocked") else None
        job["told"] = sorted(k[5:] for k, _ in by_prefix["told:"])
        job["retry_at"] = {int(k[5:]): float(v) for k, v in by_prefix["wait:"]}
        counts: dict[str, int] = {}
        for entry in outcomes.values():
            counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
        counts["pending"] = len(job["servers"]) - len(outcomes)
        job["counts"] = counts
        return job

    def state(self, job_id: str) -> str | None:
        """Return the job's state alone (None: no such job)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hexists(self.key(job_id), "meta")
        pipe.hget(self.key(job_id), "state")
        known, state = pipe.execute()
        return self._state(state) if known else None

    def brief(self, job_id: str, server_id: int) -> dict[str, Any] | None:
        """Return the job's plan and state with one server's outcome only (``outcomes`` holds no other).

        What recording a run's end needs, for a fifth of ``get``'s cost on a job of 400 servers: every run
        of a big job ends with this read, and reading 400 outcomes to use one was most of it.
        """
        meta, state, entry = self.redis.hmget(self.key(job_id), ["meta", "state", f"srv:{server_id}"])
        if meta is None:
            return None
        job = self._head(meta, state)
        job["outcomes"] = {int(server_id): json.loads(entry)} if entry else {}
        return job

    def tally(self, job_id: str) -> tuple[str, dict[str, int]] | None:
        """Return the job's state and its count of servers per outcome (None: no such job).

        What a run's end needs to tell whether the job has anything to decide, for a small part of
        ``get``'s cost: 400 runs ending together each read 400 outcomes, and the job's last runs waited
        seconds for those reads to end.
        """
        known, state, counts = self._tally(keys=[self.key(job_id)])
        if not known:
            return None
        return self._state(state), {text(k): int(v) for k, v in json.loads(counts).items()}

    @classmethod
    def _head(cls, meta: str | bytes, state: str | bytes | None) -> dict[str, Any]:
        job: dict[str, Any] = json.loads(meta)
        job["state"] = cls._state(state)
        return job

    @staticmethod
    def _state(raw: str | bytes | None) -> str:
        return text(raw) if raw else "running"

    def set_outcome(self, job_id: str, server_id: int, **entry: Any) -> None:
        field = f"srv:{server_id}"
        old = self.redis.hget(self.key(job_id), field)
        merged = {**(json.loads(old) if old else {}), **entry}
        self.redis.hset(self.key(job_id), field, json.dumps(merged))

    def note_start_try(self, job_id: str, server_id: int, retry_at: float) -> int:
        """Count a start of a server that the API could not answer, and note when to try it again; return
        the count (both kept with the job: ``get`` shows the times as ``retry_at``)."""
        pipe = self.redis.pipeline()
        pipe.hincrby(self.key(job_id), f"try:{server_id}", 1)
        pipe.hset(self.key(job_id), f"wait:{server_id}", repr(retry_at))
        return int(pipe.execute()[0])

    def set_state(self, job_id: str, state: str, reason: str | None = None) -> None:
        mapping: dict[Any, Any] = {"state": state}  # redis-py wants its own key type; ours are str
        if reason:
            mapping["reason"] = reason
        if state in JOB_FINAL:
            mapping["finished"] = repr(self.clock())
            self.redis.expire(self.key(job_id), self.retention)
            self.redis.hdel(self.key(job_id), "blocked")  # an ended job waits for nothing
        self.redis.hset(self.key(job_id), mapping=mapping)

    def note_finished(self, job_id: str) -> None:
        """Move an ended job's ``finished`` to now: its last run in flight has just ended."""
        self.redis.hset(self.key(job_id), "finished", repr(self.clock()))

    def await_approval(self, job_id: str, gate: str, reason: str, deadline: float) -> dict[str, Any]:
        """Put a job in ``awaiting_approval`` at ``gate``; a gate met again (after a pause) keeps its
        deadline."""
        old = self.redis.hget(self.key(job_id), "approval")
        known = json.loads(old) if old else None
        new = known is None or known.get("gate") != gate
        if new:
            known = {"gate": gate, "since": self.clock(), "deadline": deadline}
        self.redis.hset(
            self.key(job_id),
            mapping={"approval": json.dumps(known), "state": "awaiting_approval", "reason": reason},
        )
        return {**known, "new": new}  # type: ignore[dict-item]

    def note_told(self, job_id: str, event: str, reason: str | None) -> None:
        """Record that ``event`` was told of this job (so it is told once); a reason is also the job's
        ``reason`` from now on (why it stopped starting servers, while its last runs finish)."""
        self.redis.hset(self.key(job_id), f"told:{event}", json.dumps({"at": self.clock(), "reason": reason}))
        if reason:
            self.redis.hset(self.key(job_id), "reason", reason)

    def claim_told(self, job_id: str, event: str) -> bool:
        """Record that ``event`` is being told of this job; False if it was before (told once, by one)."""
        told = json.dumps({"at": self.clock(), "reason": None})
        return bool(self.redis.hsetnx(self.key(job_id), f"told:{event}", told))

    def set_blocked(self, job_id: str, blocked: dict[str, Any] | None) -> None:
        """Record why no new server starts now (a block URL's answer), or that nothing blocks any more."""
        if blocked is None:
            self.redis.hdel(self.key(job_id), "blocked")
        else:
            self.redis.hset(self.key(job_id), "blocked", json.dumps(blocked))

    def approve(self, job_id: str, gate: str, by: str | None) -> None:
        """Record that ``by`` opened ``gate`` (field ``appr:<gate>``), and let the job run again."""
        at = self.clock()
        key = self.key(job_id)
        self.redis.hset(key, f"appr:{gate}", json.dumps({"by": by, "at": at}))
        self.redis.hdel(key, "approval", "reason")
        self.redis.hset(key, "state", "running")

    @contextlib.contextmanager
    def retrying(self, job_id: str) -> Iterator[bool]:
        """Hold the right to retry a job while its retry starts; yield False when another holds it. Not the
        job lock: a retry's start (its plan and first wave) may outlast that lock's 30 s."""
        key = f"{self.key(job_id)}:retrying"
        took = bool(self.redis.set(key, "1", nx=True, ex=300))
        try:
            yield took
        finally:
            if took:
                self.redis.delete(key)

    def note_retry(self, job_id: str, new_id: str) -> None:
        """Link an ended job to a job that retries some of its servers (``retried_by``, in order)."""
        self.redis.hset(self.key(job_id), f"retry:{self.clock():017.6f}", new_id)

    def note_control(self, job_id: str, verb: str, by: str | None) -> None:
        """Record who paused, resumed or cancelled a job, and when (fields ``ctl:<time>``, in order)."""
        at = self.clock()
        self.redis.hset(self.key(job_id), f"ctl:{at:017.6f}", json.dumps({"verb": verb, "by": by, "at": at}))

    def list(self, limit: int = 50, project: str | None = None) -> list[dict[str, Any]]:
        """Return the newest jobs, or the newest ``limit`` of ``project`` among the newest PROJECT_SCAN jobs
        (their plans are read 100 a round trip; only the jobs listed are read whole)."""
        if project is None:
            ids = texts(self.redis.zrevrange(f"{self.prefix}:jobs", 0, limit - 1))
        else:
            ids = []
            for start in range(0, PROJECT_SCAN, 100):
                batch = texts(self.redis.zrevrange(f"{self.prefix}:jobs", start, start + 99))
                pipe = self.redis.pipeline(transaction=False)
                for job_id in batch:
                    pipe.hget(self.key(job_id), "meta")
                for job_id, meta in zip(batch, pipe.execute(), strict=True):
                    if meta is not None and in_project(json.loads(meta), project):
                        ids.append(job_id)
                if len(ids) >= limit or len(batch) < 100:
                    break
        return [j for j in (self.get(i) for i in ids[:limit]) if j is not None]

    def lock(self, job_id: str) -> Any:
        # Held while a wave is submitted (seconds); lapses soon if its holder dies mid-wave.
        # redis-py waits for a held lock in steps of ``sleep`` (0.1 s by default): the job's last endings
        # queue here, so a short step is a shorter tail.
        return self.redis.lock(f"{self.key(job_id)}:lock", timeout=30, blocking_timeout=60, sleep=0.01)
