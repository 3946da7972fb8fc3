"""Where automc keeps everything it generates: pre-trained models, the evaluation store, data.

One root, ``AUTOMC_HOME`` (default ``~/.cache/automc``), so that a user can see, move or delete
all generated state in one place and nothing generated ever lands in the source tree.
"""

from __future__ import annotations

import os
from pathlib import Path


def automc_home() -> Path:
    """The cache root: ``$AUTOMC_HOME`` if set, else ``~/.cache/automc`` (created on demand)."""
    root = Path(os.environ.get("AUTOMC_HOME") or Path.home() / ".cache" / "automc").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_home() -> Path:
    """Where data sets are looked for and downloaded: ``$AUTOMC_DATA`` or ``AUTOMC_HOME/data``."""
    root = Path(os.environ.get("AUTOMC_DATA") or automc_home() / "data").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
