"""Who submitted a run: one rule for every entry point."""

from __future__ import annotations

import pytest

from workers.errors import BadInput
from workflows.api import default_submitter
from workflows.validate import check_submitter


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "ops\nrm -rf", "a\x1b[31mred", 42, ["ops"]])
def test_bad_submitters_are_refused(bad: object) -> None:
    with pytest.raises(BadInput, match="submitted_by"):
        check_submitter(bad)


def test_good_submitters_are_kept() -> None:
    assert check_submitter(None) is None
    assert check_submitter(" billing-service ") == "billing-service"
    assert "@" in default_submitter() and check_submitter(default_submitter())
