"""Waiting in tests for work the code under test does on another thread."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for_size(path: Path, size: int, timeout: float = 30.0) -> int:
    """`path`'s size once it is over `size` bytes, or its size (0: absent) at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > size:
            return path.stat().st_size
        time.sleep(0.01)
    return path.stat().st_size if path.exists() else 0
