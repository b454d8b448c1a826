"""How the pipeline tells its caller what it is doing: a callback interface, no printing.

`vggdeploy.report.pipeline.RichPipelineReporter` draws it on the terminal (a spinner line per
stage with the elapsed time, then one line per finished stage); `NullReporter` logs the notes.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("vggdeploy.pipeline")


class PipelineReporter(Protocol):
    """Progress callbacks of `run_pipeline`. Every method is called from the running thread."""

    def stage_started(self, name: str) -> None:
        """Stage `name` (one of `STAGES`) starts its work."""

    def progress(self, text: str) -> None:
        """What the running stage is doing now (e.g. "calibrating 3/8 batches")."""

    def stage_finished(self, name: str, status: str, seconds: float, summary: str) -> None:
        """Stage `name` ended: status "done", "up to date", "skipped" or "failed"; `summary` is
        its one-line outcome (the reason when skipped or failed). An up-to-date or not-asked
        stage is finished without being started."""

    def note(self, text: str) -> None:
        """A line for the user that belongs to no stage (images chosen, --force, ...)."""


class NullReporter:
    """The default: notes go to the log, progress nowhere."""

    def stage_started(self, name: str) -> None:
        pass

    def progress(self, text: str) -> None:
        pass

    def stage_finished(self, name: str, status: str, seconds: float, summary: str) -> None:
        log.info("%s: %s%s", name, status, f" - {summary}" if summary else "")

    def note(self, text: str) -> None:
        log.info("%s", text)
