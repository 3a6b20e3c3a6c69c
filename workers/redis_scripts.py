"""Lua for owner-checked Redis keys (claims, locks): act on the key only while it is still ours."""

from __future__ import annotations

__all__ = ["DELETE_IF_OWNER", "EXPIRE_IF_OWNER"]

# KEYS[1] the key, ARGV[1] the owner's token: delete it only if we still hold it.
DELETE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the key, ARGV[1] the owner's token, ARGV[2] milliseconds: renew it only if we still hold it.
EXPIRE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
