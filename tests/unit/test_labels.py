"""The label rule every entry point shares (the API's, plus our reserved prefix)."""

from __future__ import annotations

import pytest

from workers.errors import BadInput
from workers.labels import check_labels, check_selector


@pytest.mark.parametrize(
    "labels",
    [
        {"env": "prod", "team/owner": "ops", "example.com/tier": "", "a.b_c-d": "x.y_z-1"},
        {f"k{i}": "v" for i in range(64)},
    ],
)
def test_labels_the_api_takes_are_kept(labels: dict[str, str]) -> None:
    assert check_labels(labels) == labels


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ({"hcloud-flow/step": "x"}, "reserved"),  # ours: it finds a lost answer's image again
        ({"hetzner.cloud/x": "y"}, "reserved"),
        ({"sub.hetzner.cloud/x": "y"}, "reserved"),
        ({"": "v"}, "name must be"),
        ({"-bad": "v"}, "name must be"),
        ({"k": "v" * 64}, "value must be"),
        ({"k": "bad value"}, "value must be"),
        ({"k": "<script>"}, "value must be"),
        ({"Bad_Prefix/k": "v"}, "prefix"),
        ({"k": 5}, "strings"),
        ({f"k{i}": "v" for i in range(10_000)}, "at most 64"),
        (["k", "v"], "object"),
    ],
)
def test_labels_the_api_would_refuse_are_refused_before_anything_is_sent(labels: object, says: str) -> None:
    with pytest.raises(BadInput, match=says):
        check_labels(labels)


@pytest.mark.parametrize(
    "selector",
    [
        "env=prod",
        "env==prod,role!=db",
        "!deprecated",
        "team",
        "env in (a,b),tier notin (x)",
        "k=",
        " env = a ",
    ],
)
def test_selectors_the_api_takes_pass(selector: str) -> None:
    from workers.labels import check_selector

    assert check_selector(selector) == selector


@pytest.mark.parametrize(
    "selector", ["env in (", "env in (a,b", "a=b)", "a,,b", "", "   ", "env in a", "k=v=w"]
)
def test_broken_selectors_are_refused(selector: str) -> None:
    from workers.labels import check_selector

    with pytest.raises(BadInput, match="selector"):
        check_selector(selector)


@pytest.mark.parametrize(
    "selector",
    ["ünï=✓", "env=production;DROP", "a" * 5000, "env in (prod,st@ge)", "-bad=1"],
    ids=["unicode", "semicolon", "huge", "bad-set-value", "bad-key"],
)
def test_selector_keys_and_values_follow_the_label_rules(selector: str) -> None:
    """The API refuses these only when the selector is used: a window kept one and failed at 3 a.m."""
    with pytest.raises(BadInput, match=r"label selector|characters"):
        check_selector(selector)


def test_a_selector_may_name_a_reserved_prefix_and_empty_values() -> None:
    assert check_selector("hetzner.cloud/x=1,env=,role in (web,api)")
