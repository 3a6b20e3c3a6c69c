"""Named projects: how workers read them, and the one rule for a project's name on every entry point."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from workers.errors import BadInput, ConfigError
from workers.projects import DEFAULT_PROJECT, check_project_name, projects_from, read_secret
from workers.runtime import wait_prefix
from workflows.build import plan_steps
from workflows.cli.common import project_option
from workflows.definitions import WORKFLOWS
from workflows.specs import FleetSpec, checked

API = "https://api.example/v1"


def test_without_projects_there_is_one_named_default_with_hcloud_token() -> None:
    projects = projects_from({"HCLOUD_TOKEN": "t0"}, default_endpoint=API)
    assert projects.default == DEFAULT_PROJECT and projects.names() == [DEFAULT_PROJECT]
    only = projects.get(None)
    assert (only.name, only.token, only.endpoint) == ("default", "t0", API)
    assert "t0" not in repr(only)  # a project printed in a log never shows its token


def test_named_projects_each_have_their_token_endpoint_and_a_default(tmp_path: Path) -> None:
    token_file = tmp_path / "staging"
    token_file.write_text("from-a-file\n")  # the newline `echo` adds is not part of the token
    env = {
        "HCLOUD_FLOW_PROJECTS": "prod, eu-staging",
        "HCLOUD_TOKEN_PROD": "p-token",
        "HCLOUD_TOKEN_EU_STAGING_FILE": str(token_file),
        "HCLOUD_ENDPOINT_EU_STAGING": "http://127.0.0.1:9/v1",
        "HCLOUD_ENDPOINT": API,
        "HCLOUD_TOKEN": "ignored once projects are named",
    }
    projects = projects_from(env, default_endpoint="unused")
    assert projects.names() == ["prod", "eu-staging"] and projects.default == "prod"
    assert projects.get("prod").token == "p-token" and projects.get("prod").endpoint == API
    staging = projects.get("eu-staging")
    assert staging.token == "from-a-file" and staging.endpoint == "http://127.0.0.1:9/v1"
    assert projects_from(
        {**env, "HCLOUD_FLOW_DEFAULT_PROJECT": "eu-staging"}, default_endpoint=API
    ).default == ("eu-staging")


def test_the_project_named_default_keeps_the_single_project_token_when_others_are_added() -> None:
    env = {"HCLOUD_FLOW_PROJECTS": "default,staging", "HCLOUD_TOKEN": "old", "HCLOUD_TOKEN_STAGING": "new"}
    projects = projects_from(env, default_endpoint=API)
    assert projects.get("default").token == "old" and projects.get("staging").token == "new"
    assert (
        projects_from({**env, "HCLOUD_TOKEN_DEFAULT": "own"}, default_endpoint=API).get(None).token == "own"
    )
    # Another project never takes HCLOUD_TOKEN: a token must not land in the wrong project by default.
    assert projects_from({**env, "HCLOUD_TOKEN_STAGING": ""}, default_endpoint=API).get("staging").token == ""


def test_a_project_the_workers_do_not_serve_is_refused_with_the_ones_they_do() -> None:
    projects = projects_from({"HCLOUD_FLOW_PROJECTS": "prod,dev"}, default_endpoint=API)
    with pytest.raises(
        BadInput, match=r"no project 'qa' is configured on the workers \(they serve: dev, prod\)"
    ):
        projects.get("qa")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HCLOUD_FLOW_PROJECTS": "Prod"}, "a project name is"),
        ({"HCLOUD_FLOW_PROJECTS": "a,a"}, "names 'a' twice"),
        ({"HCLOUD_FLOW_PROJECTS": "a", "HCLOUD_FLOW_DEFAULT_PROJECT": "b"}, "not in HCLOUD_FLOW_PROJECTS"),
        ({"HCLOUD_TOKEN": "x", "HCLOUD_TOKEN_FILE": "/etc/hostname"}, "not both"),
        ({"HCLOUD_TOKEN_FILE": "/nonexistent/token"}, "cannot read /nonexistent/token"),
    ],
)
def test_a_malformed_configuration_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        projects_from(env, default_endpoint=API)


def test_a_secret_file_too_large_or_not_text_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="larger than"):
        read_secret({"K_FILE": str(big)}, "K")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_secret({"K_FILE": str(binary)}, "K")
    assert read_secret({}, "K") == ""
    # An empty file says "none" (compose mounts one for every secret), unless the secret is required:
    # an empty Redis password file ran every service with no password (an outside test).
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert read_secret({"K_FILE": str(empty)}, "K") == ""
    with pytest.raises(ConfigError, match="is empty"):
        read_secret({"K_FILE": str(empty)}, "K", empty_file=False)


@pytest.mark.parametrize("bad", ["", "Prod", "-x", "9lives", "a" * 33, "a b", "ä", "prod\n", 7, ["prod"]])
def test_one_rule_for_a_name_on_every_entry_point(bad: object) -> None:
    with pytest.raises(BadInput, match="a project name is"):
        check_project_name(bad)
    with pytest.raises(BadInput, match="a project name is"):
        checked(FleetSpec, {"workflow": "reboot", "selector": "env=x", "project": bad})

    @click.command()
    @project_option
    def cmd(project: str | None) -> None:
        click.echo(project)

    if isinstance(bad, str):
        result = CliRunner().invoke(cmd, ["--project", bad])
        assert result.exit_code != 0 and isinstance(result.exception, BadInput)


def test_the_cli_takes_the_project_from_the_environment_when_not_given() -> None:
    @click.command()
    @project_option
    def cmd(project: str | None) -> None:
        click.echo(project)

    runner = CliRunner()
    assert runner.invoke(cmd, [], env={"HCLOUD_FLOW_PROJECT": "staging"}).output == "staging\n"
    assert (
        runner.invoke(cmd, ["--project", "prod"], env={"HCLOUD_FLOW_PROJECT": "staging"}).output == "prod\n"
    )
    assert runner.invoke(cmd, [], env={"HCLOUD_FLOW_PROJECT": None}).output == "\n"  # none: the default


def test_every_step_of_a_run_names_its_project_and_each_project_parks_apart() -> None:
    facts = {"server": {"id": 5, "name": "a", "status": "running"}, "params": {"description": "x"}}
    steps = plan_steps(WORKFLOWS["snapshot"], facts, "r1", project="staging")
    assert steps and all(s["kwargs"]["project"] == "staging" for s in steps)
    assert wait_prefix("default") == "hf" and wait_prefix("staging") == "hf:p:staging"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"HCLOUD_ENDPOINT": "notaurl"}, "HCLOUD_ENDPOINT"),
        ({"HCLOUD_ENDPOINT": "ftp://api.example/v1"}, "HCLOUD_ENDPOINT"),
        ({"HCLOUD_FLOW_PROJECTS": "prod", "HCLOUD_ENDPOINT_PROD": "https://"}, "HCLOUD_ENDPOINT_PROD"),
    ],
)
def test_an_endpoint_that_is_not_an_http_url_is_refused_naming_its_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{variable} must be an http"):
        projects_from(env, default_endpoint=API)
