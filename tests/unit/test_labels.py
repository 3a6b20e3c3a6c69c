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


@pytest.mark.parametrize("selector", [{"env": "prod"}, ["env=prod"], 7, True])
def test_a_selector_that_is_not_text_is_named_for_its_type(selector: object) -> None:
    """A dict from send_task or JSON was called "empty", which sent its sender looking for the wrong fault."""
    from workers.labels import check_selector

    with pytest.raises(BadInput, match=f"must be a string, not {type(selector).__name__}"):
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


# Keys and values on both sides of the rule's edges: fakecloud (the API as we model it) and the check we run
# before sending must agree on each, or a label we pass would be refused after the action started.
_EDGE_KEYS = [
    "a", "A1", "a" * 63, "a" * 64, "-a", "a-", "a_b.c-d", "a b", "ä", "x/y", "x.y/z", "X/y", "-x/y", "/y",
    "x/", ("d" * 63 + ".") * 3 + "d" * 61 + "/k", ("d" * 63 + ".") * 4 + "/k", "hetzner.cloud/k",
    "a.hetzner.cloud/k",
]  # fmt: skip
_EDGE_VALUES = ["", "v", "v" * 63, "v" * 64, "-v", "v-", "v v", "v/w", "ü", "1.2_3-4"]


@pytest.mark.parametrize("key", _EDGE_KEYS)
def test_our_rule_and_the_simulated_api_agree_on_keys(key: str) -> None:
    from fakecloud.labels import label_key_problem

    try:
        check_labels({key: "v"})
        ours = True
    except BadInput:
        ours = False
    assert ours == (label_key_problem(key) is None), key


@pytest.mark.parametrize("value", _EDGE_VALUES)
def test_our_rule_and_the_simulated_api_agree_on_values(value: str) -> None:
    from fakecloud.labels import label_value_problem

    try:
        check_labels({"k": value})
        ours = True
    except BadInput:
        ours = False
    assert ours == (label_value_problem(value) is None), value


@pytest.mark.parametrize(
    "selector",
    ["env=prod", "env==prod", "env!=prod", "!env", "env", "env in (a,b)", "env notin (a, b)", "a=b,c in (d)",
     "env in (", "=x", "env=a b", "env in (a),", "x y", "env=-bad"],
)  # fmt: skip
def test_our_selector_check_and_the_simulated_api_agree(selector: str) -> None:
    from fakecloud.exceptions import InvalidInput
    from fakecloud.labels import compile_selector

    try:
        check_selector(selector)
        ours = True
    except BadInput:
        ours = False
    try:
        compile_selector(selector)
        theirs = True
    except InvalidInput:
        theirs = False
    assert ours == theirs, selector
