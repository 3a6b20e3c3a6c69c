"""The command line in process, through click's test runner: every command's help, usage errors and
refusals (JSON under --json), exit codes, and what a wait says when it ends early. The Python API behind the
commands is replaced by a small fake here; tests/integration/test_cli.py runs the real thing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner

from workflows import cli as cli_package
from workflows.cli import cli
from workflows.cli import fleet as fleet_cli
from workflows.cli import runs as runs_cli


def _all_commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*path, name))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


class Untouchable:
    """Stands in for the Python API where a command must refuse before reaching it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the command reached the API ({name}) with input it should have refused")


class FakeRuns:
    def __init__(self, states: list[str]) -> None:
        self.states = states

    def submit_full(self, workflow: str, **kw: Any) -> dict[str, Any]:
        return {"run_id": "r1", "warnings": []}

    def status(self, run_id: str) -> dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state == "interrupt":
            raise KeyboardInterrupt
        if state == "gone":
            from workers.errors import NotFound

            raise NotFound.record("run", run_id, "run_id")
        return {"id": run_id, "state": state, "workflow": "reboot", "server_id": 1, "steps": []}


_FLEET = ["fleet", "reboot", "--servers", "1,2", "--max-concurrency", "1", "--max-errors", "0"]


@pytest.fixture
def no_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs_cli, "runs", Untouchable)
    monkeypatch.setattr(fleet_cli, "_jobs", Untouchable)


@pytest.mark.parametrize("path", sorted(_all_commands(cli)), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    done = invoke(*path, "--help")
    assert done.exit_code == 0, done.output
    assert "Usage: hcloud-flow" in done.output or "usage: hcloud-flow" in done.output


def test_the_root_help_documents_the_exit_codes() -> None:
    done = invoke("--help")
    for code in ("0 ok", "2 bad input", "3 Redis", "4 a wait timed out", "130"):
        assert code in " ".join(done.output.split()), code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "reboot"], "Missing option '--server'"),
        (["run", "reboot", "--server", "1", "--bogus"], "No such option"),
        (["run", "reboot", "--server", "1", "--timeout", "nan"], "above 0"),
        (["run", "reboot", "--server", "1", "--submit-timeout", "0"], "above 0"),
        (["run", "snapshot", "--server", "1", "--label", "novalue"], "KEY=VALUE"),
        # The last one won, where HTTP refuses a key named twice (an outside test).
        (["run", "snapshot", "--server", "1", "--label", "a=b", "--label", "a=c"], "'a' is given twice"),
        (["run", "shutdown", "--server", "1", "--grace", "lots"], "not a valid float"),
        (["list", "--limit", "0"], "--limit"),
        (["job", "status"], "Missing argument 'JOB_ID'"),
        (["schedule", "history"], "Missing argument 'NAME'"),
        (["schedule", "frobnicate"], "No such command"),
        (["nosuch"], "No such command"),
        (["worker", "--concurrency", "0"], "--concurrency"),
        (["flower", "--port", "70000"], "--port"),
        (["demo", "--servers", "0"], "--servers"),
        (["demo", "--servers", "1"], "6<=x<=50"),  # an outside test: 1 was taken and 6 were used
        # An outside test: click kept the last of a repeated option, and rebooted server 2 alone.
        (["run", "reboot", "--server", "1", "--server", "2"], "--server is given more than once"),
        (["fleet", "reboot", "--servers", "1", "--servers", "2"], "--servers is given more than once"),
        (["schedule", "add", "w", "reboot", "--cron", "0 3 * * *", "--cron", "0 4 * * *"], "--cron is given"),
        (["job", "retry", "j1", "--failed", "--user-data", "a", "--user-data", "b"], "--user-data is given"),
    ],
)
def test_usage_errors_exit_2_and_are_json_under_json(no_api: None, args: list[str], message: str) -> None:
    plain = invoke(*args)
    assert plain.exit_code == 2 and message in plain.output, plain.output
    if args[0] in ("worker", "flower"):
        return  # no --json on services
    answered = invoke(*args, "--json")
    assert answered.exit_code == 2
    error = json.loads(answered.stdout)["error"]
    assert error["exit_code"] == 2 and message in error["message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch", "--server", "1"], "unknown workflow"),
        (["run", "reboot", "--server", "1", "--grace", "5"], "grace"),
        (["run", "shutdown", "--server", "1", "--grace", "-5"], "grace"),
        (["run", "shutdown", "--server", "1", "--grace", "4000"], "grace"),
        (["run", "snapshot", "--server", "1", "--image-type", "nope"], "image_type"),
        (["run", "rebuild", "--server", "1", "--image", ""], "image"),
        (["fleet", "reboot", "--max-concurrency", "1", "--max-errors", "0"], "--selector or --servers"),
        (
            [
                "fleet",
                "reboot",
                "--selector",
                "a=b",
                "--servers",
                "1",
                "--max-concurrency",
                "1",
                "--max-errors",
                "0",
            ],
            "--selector or --servers",
        ),
        (
            [
                "fleet",
                "reboot",
                "--servers",
                "1",
                "--max-concurrency",
                "1",
                "--max-errors",
                "0",
                "--grace",
                "1",
            ],
            "grace",
        ),
        (["list", "--server", " "], "--server is empty"),
        (
            ["run", "rebuild", "--server", "1", "--image", "x", "--user-data", "@/no/such/file"],
            "--user-data @",
        ),
        (["run", "rebuild", "--server", "1", "--image", "x", "--user-data", "@/"], "--user-data @"),
        (["run", "reboot", "--server", "1", "--timeout", "5"], "go with --wait"),
        (["run", "reboot", "--server", "1", "--notify", "ftp://example.org"], "http(s)"),
        (
            [
                "fleet",
                "reboot",
                "--servers",
                "1",
                "--max-concurrency",
                "1",
                "--max-errors",
                "0",
                "--notify",
                "x",
            ],
            "http(s)",
        ),
        (["status", "r1", "--quiet"], "go with --wait"),
        (["job", "retry", "j1"], "say which servers to retry"),
        (
            [*_FLEET, "--approve-after-canary"],
            "needs a canary wave",
        ),
        (
            [*_FLEET, "--approve-before-start", "--approval-timeout", "30s"],
            "from 1m to 7d",
        ),
        (["run", "reboot", "--server", "-1"], "server id must be positive, not -1"),
        (
            [
                "schedule",
                "add",
                "w",
                "reboot",
                "--cron",
                "0 3 * * *",
                "--duration",
                "1h",
                "--servers",
                "1",
                "--max-per-location",
                "0",
            ],
            "max_per_location",
        ),
    ],
)
def test_bad_input_is_refused_before_the_api_is_reached(no_api: None, args: list[str], message: str) -> None:
    done = invoke(*args)
    assert done.exit_code == 2, done.output
    assert message in done.stderr and "Traceback" not in done.output
    error = json.loads(invoke(*args, "--json").stdout)["error"]
    assert error["type"] == "BadInput" and message in error["message"]


def test_a_failed_run_exits_1_and_a_succeeded_one_0(monkeypatch: pytest.MonkeyPatch) -> None:
    for final, code in (("failed", 1), ("cancelled", 1), ("succeeded", 0)):
        monkeypatch.setattr(runs_cli, "runs", lambda final=final: FakeRuns(["running", final]))
        monkeypatch.setattr(runs_cli.time, "sleep", lambda s: None)
        done = invoke("run", "reboot", "--server", "1", "--wait", "--json")
        assert done.exit_code == code, done.output
        assert json.loads(done.stdout)["state"] == final


def test_a_wait_past_its_timeout_exits_4_and_says_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRuns(["running"])
    monkeypatch.setattr(runs_cli, "runs", lambda: fake)
    done = invoke("run", "reboot", "--server", "1", "--wait", "--timeout", "0.001", "--quiet")
    assert done.exit_code == 4
    assert "goes on" in done.stderr and "hcloud-flow status r1 --wait" in done.stderr


def test_ctrl_c_during_a_wait_says_what_goes_on_and_how_to_follow(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRuns(["interrupt"])
    monkeypatch.setattr(runs_cli, "runs", lambda: fake)
    done = invoke("status", "r1", "--wait", "--quiet")
    assert done.exit_code == 130
    assert "run r1 goes on" in done.stderr and "`hcloud-flow status r1 --wait` follows it" in done.stderr
    answered = invoke("status", "r1", "--wait", "--json")
    error = json.loads(answered.stdout)["error"]
    assert answered.exit_code == 130 and error["run_id"] == "r1" and error["exit_code"] == 130


def test_a_job_wait_off_a_terminal_prints_one_line_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo and `fleet --wait` without a terminal wrote hundreds of identical frames."""

    def job(ended: int, age: float) -> dict[str, Any]:
        return {
            "id": "j1", "workflow": "reboot", "state": "running" if ended < 2 else "completed_with_failures",
            "created": 1000.0, "finished": 1000.0 + age, "reason": None,
            "counts": {"succeeded": min(ended, 1), "failed": max(ended - 1, 0), "running": 2 - ended},
            "servers": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "outcomes": {
                "1": {"outcome": "succeeded"},
                "2": {"outcome": "failed", "reason": "boom", "run_id": "r2"},
            },
        }  # fmt: skip

    class Jobs:
        def wait(self, job_id: str, *, timeout: Any, on_update: Any) -> dict[str, Any]:
            for ended, age in ((0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (2, 6)):
                on_update(job(ended, age))
            return job(2, 6)

    monkeypatch.setattr(fleet_cli, "_jobs", Jobs)
    done = invoke("job", "status", "j1", "--wait")
    assert done.exit_code == 1, "a job with a failed server is not a success"
    assert len(done.stderr.splitlines()) == 3, done.stderr  # three distinct states, not six frames
    assert "b (2) failed (run r2): boom" in done.stdout


def test_main_returns_the_exit_code_for_the_console_script() -> None:
    assert cli_package.main(["workflows", "--json"]) == 0
    assert cli_package.main(["run"]) == 2


@pytest.mark.parametrize(
    ("state", "code"),
    [("queued", 0), ("running", 0), ("succeeded", 0), ("failed", 1), ("cancelled", 1)],
)
def test_status_exits_as_waiting_would(monkeypatch: pytest.MonkeyPatch, state: str, code: int) -> None:
    """The README promises one meaning per exit code: reading a failed run is 1, as waiting for it is."""
    run = {"id": "r1", "state": state, "workflow": "reboot", "server_id": 1, "steps": [], "created": 1.0}

    class Runs:
        def status(self, run_id: str) -> dict[str, Any]:
            return run

    monkeypatch.setattr(runs_cli, "runs", Runs)
    assert invoke("status", "r1", "--json").exit_code == code


@pytest.mark.parametrize(
    ("state", "code"), [("running", 0), ("succeeded", 0), ("completed_with_failures", 1)]
)
def test_job_status_exits_as_waiting_would(monkeypatch: pytest.MonkeyPatch, state: str, code: int) -> None:
    job = {"id": "j1", "workflow": "reboot", "state": state, "created": 1.0, "reason": None, "counts": {},
           "servers": [], "outcomes": {}, "controls": []}  # fmt: skip

    class Jobs:
        def status(self, job_id: str) -> dict[str, Any]:
            return job

    monkeypatch.setattr(fleet_cli, "_jobs", Jobs)
    assert invoke("job", "status", "j1").exit_code == code
    assert invoke("job", "status", "j1", "--json").exit_code == code


def test_fleet_gates_reach_the_job_and_approve_is_a_job_verb(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []

    class Jobs:
        def start(self, workflow: str, **spec: Any) -> dict[str, Any]:
            asked.append(spec)
            return {"id": "j1"}

        def control(self, job_id: str, verb: str, **kw: Any) -> dict[str, Any]:
            asked.append((job_id, verb))
            return {"job_id": job_id, "state": "running"}

    monkeypatch.setattr(fleet_cli, "_jobs", Jobs)
    args = [
        "fleet",
        "reboot",
        "--servers",
        "1,2",
        "--max-concurrency",
        "1",
        "--max-errors",
        "0",
        "--canary",
        "1",
    ]
    assert invoke(*args, "--approve-after-canary", "--approval-timeout", "2h").exit_code == 0
    assert asked[0]["approve_after_canary"] is True and asked[0]["approval_timeout"] == "2h"
    assert asked[0]["approve_before_start"] is False
    done = invoke("job", "approve", "j1")
    assert done.exit_code == 0 and asked[1] == ("j1", "approve") and "job j1: running" in done.stdout


def test_text_from_the_api_cannot_drive_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # An image description is anyone's free text: escape sequences, bells and newlines once reached the
    # terminal, retitled it and printed a row that was not there (an outside test).
    from workflows.cli import inventory

    image = {
        "id": 7,
        "type": "snapshot",
        "status": "available",
        "created": "2026-12-01T10:00:00+00:00",
        "from_server": "web-1",
        "run_id": None,
        "description": "ok\x1b]0;pwned\x07\nFAKE ROW",
    }

    class Images:
        def images(self, **_: Any) -> list[dict[str, Any]]:
            return [image]

    monkeypatch.setattr(inventory, "runs", lambda: Images())
    done = invoke("images")
    assert done.exit_code == 0, done.output
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert len(done.stdout.splitlines()) == 2  # the heading and one row
    assert "ok\\x1b]0;pwned\\x07\\nFAKE ROW" in done.stdout


def test_job_retry_gives_the_user_data_again_and_no_output_prints_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """An outside test: `job status --json` and `schedule show` printed a job's or window's cloud-init text,
    password and all. Every JSON answer shows it as its fingerprint; `job retry --user-data @FILE` gives a
    job the text it no longer keeps."""
    from workers.user_data import fingerprint

    secret = "#cloud-config\npassword: hunter2-cli\n"
    asked: list[Any] = []

    class Jobs:
        def retry(self, job_id: str, **kw: Any) -> dict[str, Any]:
            asked.append(kw)
            return {"id": "j2", "params": {"user_data": kw.get("user_data")}, "spec": {"params": kw}}

        def status(self, job_id: str) -> dict[str, Any]:
            return {"id": job_id, "state": "running", "params": {"user_data": secret}, "outcomes": {}}

    monkeypatch.setattr(fleet_cli, "_jobs", Jobs)
    text = tmp_path / "cloud-init.yaml"
    text.write_text(secret)
    done = invoke("job", "retry", "j1", "--failed", "--user-data", f"@{text}", "--json")
    assert done.exit_code == 0, done.output
    assert asked[0]["user_data"] == secret and asked[0]["failed"] is True
    assert "hunter2" not in done.output and fingerprint(secret) in done.output
    assert invoke("job", "retry", "j1", "--failed").exit_code == 0 and asked[1]["user_data"] is None
    shown = invoke("job", "status", "j1", "--json")
    assert "hunter2" not in shown.output and fingerprint(secret) in shown.output


def test_flags_and_options_that_take_many_may_be_given_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an option that takes one value is refused when repeated: a flag said twice means the same."""
    listed = invoke("workflows", "--json", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output)
    asked: list[Any] = []

    class Runs:
        def submit_full(self, workflow: str, **kw: Any) -> dict[str, Any]:
            asked.append(kw)
            return {"run_id": "r1", "state": "queued", "steps": [], "warnings": []}

    monkeypatch.setattr(runs_cli, "runs", Runs)
    done = invoke(
        "run", "snapshot", "--server", "1", "--label", "a=1", "--label", "b=2", "--queue", "--queue"
    )
    assert done.exit_code == 0, done.output
    assert asked[0]["labels"] == {"a": "1", "b": "2"} and asked[0]["queue"] is True


def test_a_redis_that_refuses_our_password_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user: a wrong password read "cannot reach Redis (HELLO must be called ...)", and sent them after
    the network."""
    import redis

    def refused(*_: Any, **__: Any) -> Any:
        raise redis.AuthenticationError("invalid username-password pair or user is disabled.")

    monkeypatch.setattr(runs_cli, "runs", lambda: type("R", (), {"list": refused})())
    said = invoke("list", "--json")
    assert said.exit_code == 3
    assert "Redis refused our credentials" in said.output and "HCLOUD_FLOW_REDIS_PASSWORD" in said.output


def test_a_file_given_as_at_file_is_read_byte_for_byte(tmp_path: Any) -> None:
    """A reviewer: CRLF became LF, so a job made over HTTP with CRLF cloud-init could not be retried from the
    CLI with the same file (the fingerprints differed)."""
    from workflows.cli.common import params_from

    text = tmp_path / "cloud-init.yaml"
    text.write_bytes(b"#cloud-config\r\nruncmd: [true]\r\n")
    assert params_from({"p_user_data": f"@{text}"})["user_data"] == "#cloud-config\r\nruncmd: [true]\r\n"


def test_a_run_whose_record_vanishes_during_a_wait_exits_3_not_as_bad_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outside test restarted Redis without its data under `status --wait` and `run --wait`: "no run",
    exit 2 (bad input). A wrong id is still bad input."""
    for args in (["status", "r1", "--wait"], ["run", "reboot", "--server", "1", "--wait"]):
        monkeypatch.setattr(runs_cli, "runs", lambda: FakeRuns(["running", "running", "gone"]))
        done = invoke(*args)
        assert done.exit_code == 3, (args, done.output)
        assert "the record of run r1 is gone from Redis while we waited" in done.output
    monkeypatch.setattr(runs_cli, "runs", lambda: FakeRuns(["gone"]))
    wrong = invoke("status", "nosuch", "--wait")
    assert wrong.exit_code == 2 and "no run 'nosuch'" in wrong.output
