"""How `vggdeploy bench` measures: `BenchOptions` and the parsers of its option values."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from vggdeploy.errors import InputError

DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_CV_THRESHOLD = 0.10  # trtexec warns above 10% coefficient of variation
#: The largest batch timed, as every other command's --batch: 4096 224x224 inputs are already a
#: 2.4 GB float32 array; a larger number is a typo, refused before anything is allocated.
MAX_BATCH = 4096
#: Timed or warm-up calls per case, and seconds per case: beyond these a run is a typo.
MAX_ITERATIONS = 10_000_000
MAX_SECONDS = 24 * 3600.0
MAX_SEED = 2**32 - 1
#: Concurrent request streams of `--streams`: beyond this a run is a typo.
MAX_STREAMS = 256


def parse_counts(text: str, option: str, limit: int, example: str, what: str) -> tuple[int, ...]:
    """`"1,8,32"` -> (1, 8, 32): comma-separated positive integers up to `limit`, no repeats."""
    message = f"{option} {text!r} must be comma-separated positive integers, e.g. {example}"
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(message) from None
    if not values or any(v < 1 for v in values):
        raise InputError(message)
    if max(values) > limit:
        raise InputError(f"{option} {max(values)} is too large: at most {limit}")
    if len(set(values)) != len(values):
        raise InputError(f"{option} {text!r} lists a {what} twice")
    return values


def parse_batches(text: str) -> tuple[int, ...]:
    """`"1,8,32"` -> (1, 8, 32); each a positive integer up to MAX_BATCH, no repeats."""
    return parse_counts(text, "--batch", MAX_BATCH, "1,8,32", "batch size")


def parse_streams(text: str) -> tuple[int, ...]:
    """`"1,2,4"` -> (1, 2, 4): concurrent request streams, no repeats."""
    return parse_counts(text, "--streams", MAX_STREAMS, "1,2,4", "stream count")


def parse_amount(text: str, option: str) -> tuple[str, float]:
    """`"20"` -> ("iterations", 20); `"2s"` / `"500ms"` -> ("seconds", 2.0 / 0.5)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|s)?\s*", text or "")
    if not m:
        raise InputError(
            f"{option} {text!r} must be a number of iterations (20) or a time (2s, 500ms)"
        )
    value, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(value):  # more digits than a float holds: "inf", not a number of calls
        raise InputError(f"{option} {text!r} is too large")
    if unit is None:
        if value != int(value):
            raise InputError(f"{option} {text!r}: iterations must be a whole number (or add 's')")
        if value > MAX_ITERATIONS:
            raise InputError(f"{option} {text!r} is too many: at most {MAX_ITERATIONS:,}")
        return "iterations", value
    seconds = value / 1000 if unit == "ms" else value
    if seconds > MAX_SECONDS:
        raise InputError(f"{option} {text!r} is too long: at most {MAX_SECONDS:.0f}s")
    return "seconds", seconds


def parse_threshold(text: str, option: str = "--threshold") -> float:
    """`"5%"` or `"0.05"` -> 0.05."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(%)?\s*", text or "")
    if not m:
        raise InputError(f"{option} {text!r} must be a percentage such as 5% (or 0.05)")
    value = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 <= value < 10:
        raise InputError(f"{option} {text!r} is out of range")
    return value


@dataclass
class BenchOptions:
    """How each case is measured. `iterations`/`seconds` follow trtexec (see `time_calls`)."""

    iterations: int | None = None
    seconds: float | None = 3.0
    min_iterations: int = 10
    warmup_iterations: int | None = None
    warmup_seconds: float | None = 0.5
    cv_threshold: float = DEFAULT_CV_THRESHOLD
    seed: int = 0
    image_size: int | None = None
    threads: int | None = None
    reference_bare_ort: bool = False
    reference_rounds: int = 4
    keep_samples: bool = False
    #: `--end-to-end DIR`: also time decode, preprocess, copy, infer and top-k per case
    end_to_end: str | None = None
    #: `--streams N,...`: concurrent request streams over one loaded model, per case
    streams: tuple[int, ...] = ()
    #: intra-op threads per stream count: None = usable cores // N (`--stream-threads auto`)
    stream_threads: int | None = None
    top_k: int = 5

    def timed_calls(self) -> dict[str, Any]:
        """`time_calls`'s stopping arguments for the timed calls: `iterations`, or `seconds`
        with at least `min_iterations` calls (trtexec's `--duration` with `--iterations`)."""
        return {
            "iterations": self.iterations,
            "seconds": self.seconds,
            "min_iterations": self.min_iterations if self.seconds is not None else 1,
        }

    def warmup_calls(self) -> dict[str, Any]:
        """`time_calls`'s stopping arguments for the untimed calls before: `warmup_iterations`
        calls if given, else `warmup_seconds` (0: none)."""
        if self.warmup_iterations is not None:
            return {"iterations": self.warmup_iterations}
        return {"seconds": self.warmup_seconds or 0.0}

    def __post_init__(self) -> None:
        if self.iterations is None and self.seconds is None:
            raise InputError("give --iterations or --duration (or both)")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise InputError(
                f"--iterations {self.iterations} must be between 1 and {MAX_ITERATIONS:,}"
            )
        if self.seconds is not None and not 0 < self.seconds <= MAX_SECONDS:
            # `not 0 < x` also refuses NaN; infinity is above MAX_SECONDS.
            raise InputError(
                f"--duration {self.seconds} must be a positive number of seconds, at most "
                f"{MAX_SECONDS:.0f}"
            )
        for name, value in (("--warmup", self.warmup_seconds),):
            if value is not None and not 0 <= value <= MAX_SECONDS:
                raise InputError(f"{name} {value} must be 0 to {MAX_SECONDS:.0f} seconds")
        if self.warmup_iterations is not None and not 0 <= self.warmup_iterations <= MAX_ITERATIONS:
            raise InputError(f"--warmup {self.warmup_iterations} must be 0 to {MAX_ITERATIONS:,}")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise InputError(f"--threads {self.threads} must be between 1 and 1024")
        if not 0 < self.cv_threshold < 10:
            raise InputError(f"--cv-threshold {self.cv_threshold} is out of range")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed {self.seed} must be between 0 and {MAX_SEED}")
        if any(not 1 <= n <= MAX_STREAMS for n in self.streams):
            raise InputError(f"--streams must be 1 to {MAX_STREAMS} concurrent streams")
        if self.top_k < 1:
            raise InputError(f"--top {self.top_k} must be at least 1")
        if self.image_size is not None:
            from vggdeploy.models import check_image_size

            check_image_size(self.image_size)

    @classmethod
    def from_cli(
        cls,
        *,
        warmup: str = "0.5s",
        iterations: int | None = None,
        duration: float | None = None,
        cv_threshold: str = "10%",
        **rest: Any,
    ) -> BenchOptions:
        """The options as `vggdeploy bench` spells them: `--warmup 2s|10`, `--cv-threshold 10%`;
        with neither `--iterations` nor `--duration`, 3 s and at least 10 calls (as trtexec)."""
        kind, amount = parse_amount(warmup, "--warmup")
        default = duration is None and iterations is None
        return cls(
            iterations=iterations,
            seconds=3.0 if default else duration,
            min_iterations=10 if default else 1,
            warmup_iterations=int(amount) if kind == "iterations" else None,
            warmup_seconds=amount if kind == "seconds" else None,
            cv_threshold=parse_threshold(cv_threshold, "--cv-threshold"),
            **rest,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "duration_s": self.seconds,
            "min_iterations": self.min_iterations if self.seconds is not None else None,
            "warmup_iterations": self.warmup_iterations,
            "warmup_s": self.warmup_seconds,
            "cv_threshold": self.cv_threshold,
            "seed": self.seed,
            "image_size": self.image_size,
            "threads": self.threads,
            "reference_bare_ort": self.reference_bare_ort,
            "end_to_end": self.end_to_end,
            "streams": list(self.streams),
            "stream_threads": (self.stream_threads or "auto") if self.streams else None,
            "top_k": self.top_k if self.end_to_end else None,
        }
