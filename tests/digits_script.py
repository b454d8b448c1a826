"""`scripts/train_digits.py` as a module: the digits data, its fixed split and image folders,
for the tests that run the trained digits VGG-11 (tests/data/digits_vgg11.*)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_digits.py"


def train_digits() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
