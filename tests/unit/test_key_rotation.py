"""Sealing-key rotation: the first key seals, every key opens, and a key no longer listed opens nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from workers.errors import SecretError
from workers.sealing import generate_key, keyring, open_sealed, seal
from workflows.cli import cli


def test_old_passwords_stay_readable_during_a_rotation() -> None:
    old, new = generate_key(), generate_key()
    before = seal("hunter2", old)
    during = f"{new},{old}"
    assert open_sealed(before, during) == "hunter2", "sealed with the old key, opened during the rotation"
    after = seal("correct horse", during)
    assert open_sealed(after, new) == "correct horse", "sealed with the new key from the start of it"
    with pytest.raises(SecretError, match="keep the old key after the new one"):
        open_sealed(before, new)  # the old key was dropped too early
    with pytest.raises(ValueError):
        keyring(f"{new},not-a-key")
    with pytest.raises(ValueError):
        keyring(" , ")


def test_keygen_prints_a_key_alone() -> None:
    done = CliRunner().invoke(cli, ["keygen"])
    assert done.exit_code == 0
    key = done.output.strip()
    assert done.output == key + "\n" and open_sealed(seal("x", key), key) == "x"
