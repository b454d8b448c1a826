"""Calibration images: a reproducible draw, a disjoint held-out split, and a streaming reader.

`split_images` draws up to `samples` calibration images and a held-out set for the
after-quantization comparison (counts by `split_counts`, the rule `pipeline` shares) from one
seeded permutation of the folder, so the two sets never overlap and the same folder, seed and
counts always give the same files. `ImageBatchReader`
follows ONNX Runtime's reader contract (`get_next()` returns one dict of input name to array,
then `None`) and holds one preprocessed batch at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggdeploy.errors import InputError
from vggdeploy.preprocess import ImageSkips, Preprocessing, find_images, load_batch

DEFAULT_HOLDOUT = 64


@dataclass(frozen=True)
class ImageSplit:
    """Calibration and held-out images drawn from one folder (disjoint, each sorted)."""

    root: Path
    calibration: list[Path]
    holdout: list[Path]
    available: int
    #: the --samples asked for (calibration may hold fewer: `split_counts`)
    asked: int = 0

    @property
    def short(self) -> bool:
        """Fewer calibration images than asked for."""
        return len(self.calibration) < self.asked


def split_counts(available: int, samples: int, holdout: int | None = None) -> tuple[int, int]:
    """(calibration images, held-out images) drawn from a folder of `available` images.

    The one rule `calibrate` and `pipeline` share: `holdout=None` first keeps back a quarter of
    the folder (rounded up, at most `DEFAULT_HOLDOUT`; none below 4 images) for the held-out
    check, calibrates on up to `samples` of the rest, and holds out up to `DEFAULT_HOLDOUT` of
    what is left. An explicit `holdout` is kept back as asked (it must leave at least one image
    to calibrate on) and calibration takes up to `samples` of the rest. `samples` is an upper
    bound: a folder with fewer images calibrates on what it has, and the caller says so.
    """
    if samples < 1:
        raise InputError(f"--samples {samples} must be at least 1")
    if available < 1:
        raise InputError("no images to calibrate on")
    if holdout is None:
        reserve = min(DEFAULT_HOLDOUT, available - available * 3 // 4) if available >= 4 else 0
        calibration = min(samples, available - reserve)
        return calibration, min(DEFAULT_HOLDOUT, available - calibration)
    if holdout < 0:
        raise InputError(f"--holdout {holdout} must be 0 or more")
    if holdout >= available:
        raise InputError(
            f"--holdout {holdout} leaves none of the {available} images to calibrate on: "
            f"pass --holdout {available - 1} or fewer, or add images"
        )
    return min(samples, available - holdout), holdout


def split_images(
    images: str | os.PathLike[str],
    samples: int,
    seed: int = 0,
    holdout: int | None = None,
) -> ImageSplit:
    """Draw calibration images and a disjoint held-out set from `images` (recursive), their
    counts by `split_counts` (up to `samples`; `asked` records `samples`)."""
    root = Path(images)
    if samples < 1:
        raise InputError(f"--samples {samples} must be at least 1")
    paths = find_images(root)
    used, wanted = split_counts(len(paths), samples, holdout)
    order = np.random.default_rng(seed).permutation(len(paths))
    calibration = sorted(paths[i] for i in order[:used])
    held = sorted(paths[i] for i in order[used : used + wanted])
    return ImageSplit(
        root=root, calibration=calibration, holdout=held, available=len(paths), asked=samples
    )


def fingerprint_images(paths: Sequence[Path], root: Path) -> str:
    """sha256 over each file's path relative to `root` and its content hash.

    Content, not mtimes, so copying a folder keeps the fingerprint and editing an image
    changes it.
    """
    digest = hashlib.sha256()
    for path in paths:
        file_digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    file_digest.update(block)
            content = file_digest.hexdigest()
        except OSError as exc:
            # an unreadable file is skipped when the images are read (`ImageSkips`); it still
            # counts here, by name and why, so the fingerprint changes when it becomes readable
            content = f"unreadable:{exc.errno}"
        rel = Path(os.path.relpath(path, root)).as_posix()
        digest.update(f"{rel}\0{content}\n".encode())
    return digest.hexdigest()


class ImageBatchReader:
    """Preprocessed batches of `paths` as `{input_name: array}`, one per `get_next()` call.

    Iterating restarts from the first batch; `get_next()` continues where it stopped and
    returns `None` once the images are exhausted (call `rewind()` to start over). With `skips`
    unreadable images follow its rule (left out of their batch, reported once), else they
    raise.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        pre: Preprocessing,
        input_name: str,
        batch_size: int = 16,
        skips: ImageSkips | None = None,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"--batch-size {batch_size} must be at least 1")
        self.paths = list(paths)
        self.pre = pre
        self.input_name = input_name
        self.batch_size = batch_size
        self.skips = skips
        self._next = 0

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def rewind(self) -> None:
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self._next < len(self.paths):
            chunk = self.paths[self._next : self._next + self.batch_size]
            self._next += len(chunk)
            if self.skips is None:
                return {self.input_name: load_batch(chunk, self.pre)}
            _, array = self.skips.batch(chunk, self.pre)
            if array is not None:
                return {self.input_name: array}
        return None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (feed := self.get_next()) is not None:
            yield feed
