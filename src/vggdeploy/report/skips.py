"""Unreadable images left out of a run: the line for each, and the closing sentence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vggdeploy.report.escape import shown


def skip_line(skip: Any) -> str:
    """One line for one skipped image (`preprocess.SkippedImage`): its name and why, escaped."""
    return f"skipped {shown(skip.path)}: {shown(skip.reason)}"


def skipped_sentence(skipped: Sequence[Any], what: str) -> str:
    """What a run that skipped images ends with: how many, where they were listed, and how to
    stop at the first one instead. `what`: what was done without them ("calibrated")."""
    n = len(skipped)
    images = f"{n} unreadable image{'' if n == 1 else 's'}"
    return (
        f"{what} without {images} (each listed above with the reason): fix or remove "
        f"{'it' if n == 1 else 'them'}, or pass --strict to stop at the first"
    )
