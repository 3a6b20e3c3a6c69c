"""Settings read from the environment at the edge (celeryconfig): a bad value stops the process with a clear
message instead of running with a silent default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(setting: str = "monitor_gap", **env: str) -> subprocess.CompletedProcess[str]:
    code = f"import celeryconfig; print(celeryconfig.hcloud_flow[{setting!r}])"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_monitor_gap_defaults_and_can_be_set() -> None:
    assert _load(HCLOUD_FLOW_MONITOR_GAP="").stdout.strip() == "0.25"
    assert _load(HCLOUD_FLOW_MONITOR_GAP="1.5").stdout.strip() == "1.5"


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "nan", "inf", "600"])
def test_a_monitor_gap_out_of_range_is_refused_by_name(raw: str) -> None:
    done = _load(HCLOUD_FLOW_MONITOR_GAP=raw)
    assert done.returncode != 0
    assert "HCLOUD_FLOW_MONITOR_GAP" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        # An outside test: a negative retention made a read-only `list` drop every run from the listings.
        ("HCLOUD_FLOW_RETENTION", "-1"),
        ("HCLOUD_FLOW_VISIBILITY_TIMEOUT", "0"),
        ("HCLOUD_FLOW_POLL_CAP", "-3"),
        ("HCLOUD_FLOW_BEAT_INTERVAL", "0"),
        ("HCLOUD_FLOW_RESULT_EXPIRES", "nan"),
        ("HCLOUD_FLOW_REQUEST_TIMEOUT", "inf"),
        ("HCLOUD_FLOW_DEADLINES", "bogus=5"),
        ("HCLOUD_FLOW_DEADLINES", "shutdown=-1"),
    ],
)
def test_every_numeric_setting_out_of_its_range_is_refused_by_name(name: str, raw: str) -> None:
    done = _load(**{name: raw})
    assert done.returncode != 0 and name in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_settings_in_range_load() -> None:
    done = _load(HCLOUD_FLOW_RETENTION="3600", HCLOUD_FLOW_DEADLINES="shutdown=8,create_image=7200")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("raw", "on"), [("", True), ("1", True), ("on", True), ("0", False), ("off", False), (" False ", False)]
)
def test_the_monitor_switch_reads_the_usual_words(raw: str, on: bool) -> None:
    done = _load("monitor", HCLOUD_FLOW_MONITOR=raw)
    assert done.stdout.strip() == str(on), done.stderr


def test_a_monitor_switch_that_is_not_a_word_for_on_or_off_is_refused_by_name() -> None:
    # "off" and "disabled" left the monitor running (an outside test).
    done = _load(HCLOUD_FLOW_MONITOR="disabled")
    assert done.returncode != 0
    assert "HCLOUD_FLOW_MONITOR must be" in done.stderr and "Traceback" not in done.stderr


def test_an_empty_redis_password_file_is_refused_by_name(tmp_path: Path) -> None:
    # It ran every service with no password, each retrying "Authentication required" for ever (an outside
    # test); compose's own redis refuses such a file.
    empty = tmp_path / "redis_password"
    empty.write_text("\n")
    done = _load(HCLOUD_FLOW_REDIS_PASSWORD_FILE=str(empty))
    assert done.returncode != 0
    assert (
        f"HCLOUD_FLOW_REDIS_PASSWORD_FILE: {empty} is empty" in done.stderr and "Traceback" not in done.stderr
    )


def test_our_redis_clients_wait_a_bounded_time_whatever_redis_py_defaults_to() -> None:
    """A reviewer: the 503 of a hung Redis rested on redis-py 8's default timeout (older: none)."""
    from workers.redis_client import REDIS_CONNECT_TIMEOUT, REDIS_TIMEOUT, redis_for

    kwargs = redis_for("redis://127.0.0.1:1/0").connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (
        REDIS_TIMEOUT,
        REDIS_CONNECT_TIMEOUT,
    )


@pytest.mark.parametrize(
    ("name", "same"),
    [
        ("CELERY_BROKER_URL", "redis://127.0.0.1:2/0"),  # as `celery --broker URL` sets it
        ("CELERY_RESULT_BACKEND", "workers.result_backend:RedisBackend+redis://127.0.0.1:2/0"),
    ],
)
def test_celerys_own_broker_variables_are_refused_unless_they_say_the_same(name: str, same: str) -> None:
    """A reviewer: Celery takes these over any setting, so the broker and results would sit in another Redis
    than the records the CLI reads (from HCLOUD_FLOW_REDIS_URL), or results would keep user data."""
    ours = {"HCLOUD_FLOW_REDIS_URL": "redis://127.0.0.1:2/0"}
    for other in (
        "redis://127.0.0.1:1/0",
        "redis://127.0.0.1:2/0" if name == "CELERY_RESULT_BACKEND" else "",
    ):
        if other:
            done = _load(**{name: other}, **ours)
            assert done.returncode != 0 and name in done.stderr and "HCLOUD_FLOW_REDIS_URL" in done.stderr
            assert "Traceback" not in done.stderr
    assert _load(**{name: same}, **ours).returncode == 0
