"""fakecloud: a faithful local simulator of the Hetzner Cloud API (servers, actions, images, SSH keys).

``start()`` serves ``/v1`` on a daemon thread; see ``README.md`` beside this file for endpoints, faults and
the ``/_fakecloud`` controls.
"""

from __future__ import annotations

from .backend import Backend
from .clock import Clock, ManualClock, RealClock
from .faults import FaultSpec, parse_faults
from .server import FakeCloud, start
from .transitions import FINISHED, TRANSITIONS, Transition

__all__ = [
    "FINISHED",
    "TRANSITIONS",
    "Backend",
    "Clock",
    "FakeCloud",
    "FaultSpec",
    "ManualClock",
    "RealClock",
    "Transition",
    "parse_faults",
    "start",
]
