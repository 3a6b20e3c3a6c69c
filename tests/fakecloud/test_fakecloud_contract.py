"""Contract: the official ``hcloud`` client works against fakecloud unchanged but for URL and token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hcloud import APIException, Client
from hcloud.actions.domain import ActionFailedException
from hcloud.images import Image
from hcloud.servers.domain import Server

import fakecloud

TOKEN = "contract-token"


@pytest.fixture(scope="module")
def cloud() -> Iterator[fakecloud.FakeCloud]:
    # A fast real clock: the client's own waiting loop runs as written, just quicker.
    fc = fakecloud.start(servers=8, token=TOKEN, speed=200.0)
    yield fc
    fc.stop()


@pytest.fixture
def client(cloud: fakecloud.FakeCloud) -> Client:
    return Client(token=TOKEN, api_endpoint=cloud.base_url, poll_interval=0.02, poll_max_retries=200)


def test_list_power_off_image_rebuild_rescue(client: Client) -> None:
    servers = client.servers.get_all()
    assert len(servers) == 8 and all(isinstance(s.id, int) for s in servers)
    production = client.servers.get_all(label_selector="env=production")
    assert production and all(s.labels["env"] == "production" for s in production)
    server = next(s for s in servers if s.status == Server.STATUS_RUNNING)

    action = server.power_off()
    assert action.command == "stop_server"
    action.wait_until_finished()
    server.reload()
    assert (action.status, server.status) == ("success", "off")

    created = server.create_image(description="contract", labels={"suite": "contract"})
    assert created.image.status == "creating"
    created.action.wait_until_finished()
    image = client.images.get_by_id(created.image.id)
    assert image.status == "available" and image.created_from.id == server.id

    arch = server.server_type.architecture
    rebuilt = server.rebuild(client.images.get_by_name_and_architecture("ubuntu-24.04", arch))
    assert rebuilt.root_password
    rebuilt.action.wait_until_finished()
    server.reload()
    assert (server.status, server.image.name) == ("running", "ubuntu-24.04")
    rebuilt = server.rebuild(Image(name="debian-12"))
    rebuilt.action.wait_until_finished()

    key = client.ssh_keys.get_by_name("ops")
    rescue = server.enable_rescue(type="linux64", ssh_keys=[key.id])
    assert rescue.root_password
    rescue.action.wait_until_finished()
    server.reload()
    assert server.rescue_enabled is True
    history = client.servers.get_actions_list(server, sort=["id:desc"]).actions
    assert history[0].command == "enable_rescue"


def test_failed_action_raises_the_clients_exception(client: Client, cloud: fakecloud.FakeCloud) -> None:
    server = client.servers.get_by_name("srv-2")
    with cloud.backend.lock:
        cloud.backend.servers[server.id].fail_next["reset"] = ("action_failed", "Action failed")
    with pytest.raises(ActionFailedException) as info:
        server.reset().wait_until_finished()
    assert info.value.action.error["code"] == "action_failed"


def test_conflict_reaches_the_client_as_its_retryable_code(
    client: Client, cloud: fakecloud.FakeCloud
) -> None:
    server = client.servers.get_by_name("srv-3")
    cloud.backend.set_faults({"conflict": 1.0})
    try:
        # The client would back off for seconds between its retries; one attempt shows the code it keys on.
        client._client._retry_max_retries = 0
        with pytest.raises(APIException) as info:
            server.reset()
        assert info.value.code == "conflict"
    finally:
        cloud.backend.set_faults("none")


def test_shutdown_reset_password_and_action_lookups(client: Client) -> None:
    server = [s for s in client.servers.get_all(status=["running"]) if s.name not in ("srv-2", "srv-3")][-1]
    assert client.servers.get_by_name(server.name).id == server.id

    shutdown = server.shutdown()
    assert shutdown.command == "shutdown_server"
    shutdown.wait_until_finished()
    server.reload()
    assert server.status == "off"
    server.power_on().wait_until_finished()

    reset = server.reset_password()
    assert reset.root_password and reset.action.command == "reset_password"
    reset.action.wait_until_finished()
    fetched = client.actions.get_by_id(reset.action.id)
    assert (fetched.status, fetched.progress, fetched.error) == ("success", 100, None)
    assert fetched.finished is not None and fetched.finished >= fetched.started

    # client.servers.actions reads GET /servers/actions and GET /servers/actions/{id} (SPEC).
    everything = client.servers.actions.get_all(status=["success"], sort=["id:desc"])
    assert everything[0].id >= reset.action.id and {a.status for a in everything} == {"success"}
    assert client.servers.actions.get_by_id(shutdown.id).command == "shutdown_server"


def test_image_deprecation_reaches_the_client(client: Client) -> None:
    old = client.images.get_by_name_and_architecture("ubuntu-20.04", "x86", include_deprecated=True)
    assert old is not None and old.deprecation is not None
    assert old.deprecation.unavailable_after > old.deprecation.announced
    assert client.images.get_by_name_and_architecture("ubuntu-24.04", "x86").deprecation is None


def test_image_update_protection_and_delete(client: Client) -> None:
    server = client.servers.get_by_name("srv-5")
    created = server.create_image(description="to-delete", labels={"suite": "contract"})
    created.action.wait_until_finished()
    image = client.images.get_by_id(created.image.id)

    updated = client.images.update(image, description="kept", labels={"suite": "contract", "round": "2"})
    assert (updated.description, updated.labels) == ("kept", {"suite": "contract", "round": "2"})
    assert [i.id for i in client.images.get_all(label_selector="round=2")] == [image.id]

    protect = client.images.change_protection(image, delete=True)
    assert protect.command == "change_protection" and protect.resources == [{"id": image.id, "type": "image"}]
    protect.wait_until_finished()
    assert client.images.get_by_id(image.id).protection == {"delete": True}
    with pytest.raises(APIException) as info:
        client.images.delete(image)
    assert info.value.code == "protected"
    # hcloud-python's image actions clients read GET /images/{id}/actions and GET /images/actions/{id}.
    assert [a.id for a in client.images.get_actions(image)] == [protect.id]
    assert client.images.actions.get_by_id(protect.id).command == "change_protection"

    client.images.change_protection(image, delete=False).wait_until_finished()
    assert client.images.delete(image) is True
    with pytest.raises(APIException) as info:
        client.images.get_by_id(image.id)
    assert info.value.code == "not_found"
