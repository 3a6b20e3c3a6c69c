"""``python -m fakecloud``: the same options as ``hcloud-flow fakecloud``."""

import sys

from .cli import main

sys.exit(main())
