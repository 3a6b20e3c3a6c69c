"""``python -m fakecloud``: prints its URL first, serves, exits 0 on SIGTERM/SIGINT; bad arguments exit 2."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fakecloud", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_base_url_serves_and_exits_cleanly(sig: signal.Signals) -> None:
    proc = _start("--servers", "3", "--token", "cli-token", "--rate-limit", "7200", "--speed", "50")
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        response = requests.get(url + "/servers", headers={"Authorization": "Bearer cli-token"}, timeout=10)
        assert response.status_code == 200
        assert len(response.json()["servers"]) == 3
        assert response.headers["RateLimit-Limit"] == "7200"
    finally:
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--speed", "0"], "invalid speed"),
        (["--speed", "-2"], "invalid speed"),
        (["--servers", "-1"], "invalid server count"),
        (["--port", "99999"], "invalid port"),
        (["--port", "http"], "invalid port"),
        (["--faults", "meteor=0.1"], "unknown fault 'meteor'"),
        (["--faults", "503=7"], "within [0, 1]"),
        (["--rate-limit", "0"], "invalid rate limit"),
        (["--durations", "fly=2"], "invalid --durations"),
        (["--faults", "drop_answer=1.5"], "within [0, 1]"),
        (["--skew", "soon"], "invalid --skew"),
        (["--skew", "1e9"], "invalid --skew"),
        # An outside test: `--port 1 --port 2` listened on 2, where hcloud-flow's CLI refuses a repeat.
        (["--port", "0", "--port", "0"], "--port is given more than once"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakecloud", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert fragment in result.stderr
    assert result.stdout == ""


def test_help_documents_the_fault_spec() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fakecloud", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "acpi_ignore" in result.stdout and "slow=P@S" in result.stdout
    assert "drop_answer=P" in result.stdout and "--skew" in result.stdout


def test_add_arguments_and_run_are_importable() -> None:
    import argparse

    from fakecloud import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--port", "0", "--faults", "502=0.5"])
    assert args.faults.bad_gateway == 0.5 and callable(cli.run)
    assert args.skew == 0.0
    args = parser.parse_args(["--faults", "drop_answer=0.1", "--skew", "-30"])
    assert (args.faults.drop_answer, args.skew) == (0.1, -30.0)
