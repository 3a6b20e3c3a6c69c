"""How the monitor reads target states: list pages where they are cheaper, single reads where they are not."""

from __future__ import annotations

from typing import Any

from workers.errors import APIError
from workers.monitor import Monitor, RoundReport
from workers.wait_state import OTHER


class Servers:
    """A project's servers behind the two client calls the monitor uses; counts the requests."""

    def __init__(self, statuses: dict[int, str]) -> None:
        self.statuses = statuses
        self.calls: list[str] = []

    def server_page(
        self, params: list[tuple[str, Any]], page: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self.calls.append(f"page {page}")
        status, order = dict(params)["status"], dict(params).get("sort", "id:asc")
        ordered = sorted(self.statuses.items(), reverse=order == "id:desc")
        there = [{"id": i, "status": s} for i, s in ordered if s == status]
        last = max(1, -(-len(there) // 50))
        nxt = page + 1 if page < last else None
        return there[(page - 1) * 50 : page * 50], {"page": page, "next_page": nxt, "last_page": last}

    def get_server(self, server_id: int) -> dict[str, Any]:
        self.calls.append(f"get {server_id}")
        if server_id not in self.statuses:
            raise APIError("not_found", "no server", 404)
        return {"id": server_id, "status": self.statuses[server_id]}


def statuses(project: Servers, targets: dict[int, str]) -> dict[int, str]:
    monitor = Monitor.__new__(Monitor)
    monitor.engine = type("E", (), {"client": project})()  # type: ignore[assignment]
    return monitor._server_statuses(targets, RoundReport())


def test_a_fleet_reads_the_pages_of_servers_already_there() -> None:
    project = Servers({i: ("off" if i <= 80 else "stopping") for i in range(1, 101)})
    got = statuses(project, {i: "off" for i in range(1, 101)})
    assert project.calls == ["page 1", "page 2"]
    assert all(got[i] == "off" for i in range(1, 81)) and all(got[i] == OTHER for i in range(81, 101))


def test_the_servers_that_got_there_last_are_found_on_the_first_page() -> None:
    # A fleet started in id order: this round's servers are the newest of 400 already off. Oldest first,
    # the walk read all eight pages to find them.
    project = Servers({i: "off" for i in range(1, 401)})
    got = statuses(project, {i: "off" for i in range(361, 401)})
    assert project.calls == ["page 1"]
    assert got == {i: "off" for i in range(361, 401)}


def test_few_servers_among_many_running_are_read_alone() -> None:
    project = Servers({i: "running" for i in range(1, 1001)} | {2001: "starting", 2002: "running"})
    got = statuses(project, {2001: "running", 2002: "running", 5: "running"})
    assert project.calls[0] == "page 1", "the first page says how many there are"
    assert len(project.calls) == 3, "then those not on it are read alone, not 19 more pages"
    assert got == {5: "running", 2001: "starting", 2002: "running"}


def test_one_or_two_servers_are_read_alone_and_a_deleted_one_is_missing() -> None:
    project = Servers({7: "off"})
    got = statuses(project, {7: "off", 8: "off"})
    assert sorted(project.calls) == ["get 7", "get 8"]
    assert got == {7: "off"}, "a 404 is left out: the caller reads it as gone"


class Images:
    """A project's images behind the client calls the monitor uses; counts the requests."""

    def __init__(self, statuses: dict[int, str]) -> None:
        self.statuses = statuses
        self.calls: list[str] = []

    def iter_image_pages(self, *, sort: str | None = None, type: str | None = None) -> Any:
        assert sort == "id:desc"
        newest = sorted(self.statuses, reverse=True)
        for start in range(0, max(1, len(newest)), 50):
            self.calls.append(f"page {start // 50 + 1}")
            yield [{"id": i, "status": self.statuses[i]} for i in newest[start : start + 50]]


def image_statuses(project: Images, ids: set[int]) -> dict[int, str]:
    monitor = Monitor.__new__(Monitor)
    monitor.engine = type("E", (), {"client": project})()  # type: ignore[assignment]
    return monitor._image_statuses(ids, RoundReport())


def test_images_are_read_from_one_page_and_older_ones_go_by_their_action() -> None:
    """400 snapshots made at once: their create_image actions succeeded, so only the newest page is read
    (it used to walk all eight, every round); one still creating there is seen as such."""
    statuses = {i: "available" for i in range(1000, 1400)} | {1399: "creating"}
    project = Images(statuses)
    got = image_statuses(project, set(range(1000, 1400)))
    assert project.calls == ["page 1"]
    assert got[1399] == "creating" and got[1398] == "available" and got[1000] == "available"


def test_an_image_missing_from_a_short_list_is_gone_not_assumed() -> None:
    project = Images({1: "available", 5: "available", 6: "creating"})
    got = image_statuses(project, {5, 6, 7, 4})
    assert project.calls == ["page 1"]
    assert got == {5: "available", 6: "creating"}, (
        "4 and 7 are not listed at all: the caller reads them as gone"
    )
