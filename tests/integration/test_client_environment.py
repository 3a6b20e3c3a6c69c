"""The API client reads its environment once, when it is built, and a .netrc never replaces the token.

requests consults proxies, the CA bundle and ``~/.netrc`` before every request of a session that trusts the
environment; the client reads them once instead (workers/client.py ``session_for``). Real HTTP to an
in-process fakecloud.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from workers.client import HcloudClient
from workers.errors import TransportError

from ..conftest import start_cloud
from ..support.cloud import TOKEN


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=2, speed=20.0, seed=5)
    yield c
    c.stop()


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_netrc_entry_for_the_api_host_does_not_replace_the_token(
    cloud: Any, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-token\n")
    netrc.chmod(0o600)
    clean_env.setenv("NETRC", str(netrc))
    # What the entry does to a session that trusts the environment: its login replaces the bearer token.
    plain = requests.Session()
    r = plain.get(cloud.base_url + "/servers", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 401
    client = HcloudClient(TOKEN, base_url=cloud.base_url)
    assert len(client.list_servers()) == 2


def test_a_proxy_is_read_when_the_client_is_built_and_used_for_every_request(
    cloud: Any, clean_env: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{_dead_port()}"
    clean_env.setenv("HTTP_PROXY", proxy)
    client = HcloudClient(TOKEN, base_url=cloud.base_url, sleep=lambda s: None)
    assert client.session.proxies.get("http") == proxy
    clean_env.delenv("HTTP_PROXY")  # read once: a later change does not reach a built client
    with pytest.raises(TransportError):
        client.list_servers()


def test_no_proxy_for_the_api_host_is_honoured(cloud: Any, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    client = HcloudClient(TOKEN, base_url=cloud.base_url)
    assert len(client.list_servers()) == 2


def test_a_ca_bundle_from_the_environment_is_kept(cloud: Any, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    client = HcloudClient(TOKEN, base_url=cloud.base_url)
    assert client.session.verify == "/etc/ssl/certs/ca-certificates.crt"
    assert client.session.trust_env is False


def test_retry_within_stops_a_request_retrying_early(clean_env: pytest.MonkeyPatch) -> None:
    # The monitor's reads run under retry_within: a round holds the cluster's lock, and the next asks again.
    from workers.retry_policy import RetryPolicy

    attempts: list[str] = []
    client = HcloudClient(
        TOKEN,
        base_url=f"http://127.0.0.1:{_dead_port()}/v1",
        policy=RetryPolicy(base=0.2, multiplier=1.0, cap=0.2),  # 0.2 s between tries, 6 tries
        on_retry=lambda method, path: attempts.append(path),
    )
    with pytest.raises(TransportError):
        client.list_servers()
    assert len(attempts) == 5, "without a bound: every try of the policy"
    attempts.clear()
    with client.retry_within(0.3), pytest.raises(TransportError):
        client.list_servers()
    assert 1 <= len(attempts) <= 2, "stopped once 0.3 s had passed since the first try"
