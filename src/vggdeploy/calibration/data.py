"""Calibration images: a reproducible draw, a disjoint held-out split, and a streaming reader.

`split_images` draws `samples` calibration images and up to `holdout` further images for the
after-quantization comparison from one seeded permutation of the folder, so the two sets never
overlap and the same folder, seed and counts always give the same files. `ImageBatchReader`
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
from vggdeploy.preprocess import Preprocessing, find_images, load_batch

DEFAULT_HOLDOUT = 64


@dataclass(frozen=True)
class ImageSplit:
    """Calibration and held-out images drawn from one folder (disjoint, each sorted)."""

    root: Path
    calibration: list[Path]
    holdout: list[Path]
    available: int


def split_images(
    images: str | os.PathLike[str],
    samples: int,
    seed: int = 0,
    holdout: int | None = None,
) -> ImageSplit:
    """Draw `samples` calibration images and a disjoint held-out set from `images` (recursive).

    `holdout=None` takes up to `DEFAULT_HOLDOUT` of the images left over (possibly none); an
    explicit count must be available, as must `samples`: nothing is silently reduced.
    """
    if samples < 1:
        raise InputError(f"--samples {samples} must be at least 1")
    if holdout is not None and holdout < 0:
        raise InputError(f"--holdout {holdout} must be 0 or more")
    root = Path(images)
    paths = find_images(root)
    if samples > len(paths):
        raise InputError(
            f"--samples {samples} asks for more images than the {len(paths)} found under {root}: "
            f"add images or pass --samples {len(paths)} or fewer"
        )
    left = len(paths) - samples
    wanted = min(DEFAULT_HOLDOUT, left) if holdout is None else holdout
    if wanted > left:
        raise InputError(
            f"--holdout {holdout} needs {holdout} images besides the {samples} calibration "
            f"images, but {root} has only {left} more: lower --samples or --holdout"
        )
    order = np.random.default_rng(seed).permutation(len(paths))
    calibration = sorted(paths[i] for i in order[:samples])
    held = sorted(paths[i] for i in order[samples : samples + wanted])
    return ImageSplit(root=root, calibration=calibration, holdout=held, available=len(paths))


def fingerprint_images(paths: Sequence[Path], root: Path) -> str:
    """sha256 over each file's path relative to `root` and its content hash.

    Content, not mtimes, so copying a folder keeps the fingerprint and editing an image
    changes it.
    """
    digest = hashlib.sha256()
    for path in paths:
        file_digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                file_digest.update(block)
        rel = Path(os.path.relpath(path, root)).as_posix()
        digest.update(f"{rel}\0{file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()


class ImageBatchReader:
    """Preprocessed batches of `paths` as `{input_name: array}`, one per `get_next()` call.

    Iterating restarts from the first batch; `get_next()` continues where it stopped and
    returns `None` once the images are exhausted (call `rewind()` to start over).
    """

    def __init__(
        self, paths: Sequence[Path], pre: Preprocessing, input_name: str, batch_size: int = 16
    ) -> None:
        if batch_size < 1:
            raise InputError(f"--batch-size {batch_size} must be at least 1")
        self.paths = list(paths)
        self.pre = pre
        self.input_name = input_name
        self.batch_size = batch_size
        self._next = 0

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def rewind(self) -> None:
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.paths):
            return None
        chunk = self.paths[self._next : self._next + self.batch_size]
        self._next += len(chunk)
        return {self.input_name: load_batch(chunk, self.pre)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (feed := self.get_next()) is not None:
            yield feed
