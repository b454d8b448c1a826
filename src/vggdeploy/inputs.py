"""Input sets: what the toolchain feeds a model to check it.

Seeded random tensors (cheap, deterministic; fine for fp32/fp16 parity, a poor judge of INT8),
a folder of images through the bundle's preprocessing, and the photographs shipped with the
package (`data/calibration_images`, public domain / CC0), which `validate` and `pipeline` both
use to judge INT8 when the user gives no images. Structured synthetic images stand in only if
the package data is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vggdeploy.bundle import atomic_path
from vggdeploy.errors import InputError
from vggdeploy.preprocess import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle
    from vggdeploy.preprocess import ImageSkips

DEFAULT_SAMPLES = 16
DEFAULT_BATCH = 8


class InputSet:
    """A re-iterable stream of input batches: seeded random tensors or preprocessed images.

    Each call of `batches()` yields the same arrays again (regenerated from the seed, or the
    images read again), so runtimes can run one after another without holding every input.
    """

    def __init__(
        self,
        kind: str,
        shape: tuple[int, int, int],
        *,
        samples: int,
        batch: int,
        seed: int = 0,
        paths: Sequence[Path] = (),
        preprocessing: Any = None,
        skips: ImageSkips | None = None,
    ) -> None:
        if batch < 1:
            raise InputError(f"--batch {batch} must be a positive integer")
        if samples < 1:
            raise InputError(f"--samples {samples} must be a positive integer")
        self.kind, self.shape, self.samples, self.batch, self.seed = (
            kind,
            shape,
            samples,
            batch,
            seed,
        )
        self.paths = list(paths)
        self.preprocessing = preprocessing
        #: the skip rule for unreadable images (None: the first one raises)
        self.skips = skips

    @classmethod
    def random(
        cls,
        bundle: Bundle,
        *,
        samples: int = DEFAULT_SAMPLES,
        batch: int = DEFAULT_BATCH,
        seed: int = 0,
    ) -> InputSet:
        """Standard-normal tensors (like normalised images) of the bundle's input shape."""
        return cls("random", bundle_input_shape(bundle), samples=samples, batch=batch, seed=seed)

    @classmethod
    def photographs(
        cls,
        bundle: Bundle,
        *,
        samples: int | None = None,
        batch: int = DEFAULT_BATCH,
        skips: ImageSkips | None = None,
    ) -> InputSet:
        """The photographs shipped with vggdeploy (real images: what INT8 is judged on when the
        user gives none). `kind` is "photographs" so reports can say so."""
        inputs = cls.images(bundle, default_images_dir(), samples=samples, batch=batch, skips=skips)
        inputs.kind = "photographs"
        return inputs

    @classmethod
    def images(
        cls,
        bundle: Bundle,
        folder: str | os.PathLike[str],
        *,
        samples: int | None = None,
        batch: int = DEFAULT_BATCH,
        skips: ImageSkips | None = None,
    ) -> InputSet:
        """Images under `folder` (sorted; the first `samples` if given) via the bundle's
        preprocessing; unreadable ones follow `skips` (None: the first one raises)."""
        from vggdeploy.preprocess import find_images

        paths = find_images(folder)
        if samples is not None:
            paths = paths[:samples]
        pre = bundle.preprocessing
        shape = (3, pre.crop, pre.crop)
        return cls(
            "images",
            shape,
            samples=len(paths),
            batch=batch,
            paths=paths,
            preprocessing=pre,
            skips=skips,
        )

    def batches(self) -> Iterator[np.ndarray]:
        if self.kind == "random":
            rng = np.random.default_rng(self.seed)
            for start in range(0, self.samples, self.batch):
                n = min(self.batch, self.samples - start)
                yield rng.standard_normal((n, *self.shape), dtype=np.float32)
        else:
            from vggdeploy.preprocess import iter_batches

            for _, array in iter_batches(self.paths, self.preprocessing, self.batch, self.skips):
                yield array

    @property
    def skipped(self) -> list[Any]:
        """The images of this set left out as unreadable so far (`preprocess.SkippedImage`)."""
        if self.skips is None:
            return []
        mine = set(self.paths)
        return [s for s in self.skips.skipped if s.path in mine]

    def describe(self) -> str:
        """What the set is, true once its batches were read: the images left out are counted."""
        text = self.key()
        if lost := len(self.skipped):
            text += f"; {lost} unreadable, skipped, so {self.samples - lost} used"
        return text

    def key(self) -> str:
        """What the set was asked to be (the same before and after reading it)."""
        size = "x".join(str(d) for d in self.shape)
        if self.kind == "random":
            return f"{self.samples} random inputs {size} (seed {self.seed}, batch {self.batch})"
        if self.kind == "photographs":
            return f"the {self.samples} photographs shipped with vggdeploy ({size}, batch {self.batch})"
        folder = os.path.commonpath([str(p.parent) for p in self.paths]) if self.paths else ""
        return f"{self.samples} images from {folder} ({size}, batch {self.batch})"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "samples": self.samples,
            "batch": self.batch,
            "shape": list(self.shape),
        }
        if self.kind == "random":
            data["seed"] = self.seed
        else:
            data["files"] = [str(p) for p in self.paths]
            data["skipped"] = [s.to_dict() for s in self.skipped]
        return data


def bundle_input_shape(bundle: Bundle) -> tuple[int, int, int]:
    """(C, H, W) of the bundle's input; dynamic H/W (dense models) take the export image size."""
    dims = bundle.manifest.input.shape[1:]
    size = bundle.model.image_size
    c, h, w = (d if isinstance(d, int) and d > 0 else size for d in dims)
    return (c, h, w)


def default_images_dir() -> Path:
    """The calibration photographs shipped as package data."""
    from importlib import resources

    return Path(str(resources.files("vggdeploy").joinpath("data/calibration_images")))


def synthetic_images(dest: Path, count: int = 12, size: int = 256, seed: int = 0) -> Path:
    """Write `count` structured synthetic images (gratings, checkerboards, blobs; not noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        kind = i % 4
        colour = rng.uniform(0.2, 1.0, 3)
        if kind == 0:  # oriented sinusoidal grating
            angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 24)
            base = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        elif kind == 1:  # checkerboard
            n = int(rng.integers(4, 16))
            base = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
        elif kind == 2:  # soft blobs
            base = np.zeros_like(xx)
            for _ in range(6):
                cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
                base += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            base /= base.max()
        else:  # radial rings on a gradient
            cx, cy = rng.uniform(0.3, 0.7, 2)
            base = 0.5 + 0.5 * np.cos(40 * np.hypot(xx - cx, yy - cy)) * (0.5 + 0.5 * xx)
        # a bright colour against a dark version of another: contrast in every image
        dark = rng.uniform(0.0, 0.15, 3)
        rgb = base[..., None] * colour + (1 - base[..., None]) * dark
        img = Image.fromarray(np.clip(rgb * 255, 0, 255).astype(np.uint8), "RGB")
        with atomic_path(dest / f"synthetic_{i:02d}.png") as tmp:
            img.save(tmp, format="PNG")
    return dest


# -- labelled folders (ImageFolder layout) -------------------------------------------------


@dataclass(frozen=True)
class ClassMapping:
    """Image files with their class index, and how the folders were mapped."""

    samples: list[tuple[Path, int]]
    folders: dict[str, int]  # folder name -> output index
    method: str  # "labels" or "alphabetical"
    note: str


def normalize_name(name: str) -> str:
    """Folder/label comparison key: case-insensitive, `_` and runs of spaces are one space."""
    return " ".join(name.replace("_", " ").split()).casefold()


def map_class_folders(
    root: str | os.PathLike[str], labels: Sequence[str] | None, num_classes: int | None = None
) -> ClassMapping:
    """The images under `root/<class>/...` and the output index of each class folder.

    Folder names match `labels` (case-insensitive, `_` = space); without labels the folders,
    sorted, map to outputs 0..N-1 as torchvision's ImageFolder does (at most `num_classes`).
    `evaluate` and `calibrate --accuracy-images` both read labelled folders this way.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not folders:
        raise InputError(
            f"{root} has no class sub-folders{f' ({len(loose)} loose images)' if loose else ''}: "
            "it needs one sub-folder per class (ImageFolder layout), e.g. "
            f"{root}/cat/1.jpg, {root}/dog/2.jpg"
        )
    if labels is None:
        if num_classes is not None and len(folders) > num_classes:
            raise InputError(
                f"{root} has {len(folders)} class folders but the model has {num_classes} "
                "outputs: remove the extra folders, or export the bundle with --labels to match "
                "folders by name"
            )
        index = {p.name: i for i, p in enumerate(folders)}
        method = "alphabetical"
        note = (
            "the bundle has no labels: class folders sorted alphabetically map to output "
            f"indices 0..{len(folders) - 1}, as torchvision's ImageFolder does"
        )
    else:
        by_key: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_key.setdefault(normalize_name(label), []).append(i)
        index, unmatched, ambiguous = {}, [], []
        for folder in folders:
            hits = by_key.get(normalize_name(folder.name), [])
            if len(hits) == 1:
                index[folder.name] = hits[0]
            elif hits:
                ambiguous.append(f"{folder.name!r} (classes {', '.join(map(str, hits))})")
            else:
                unmatched.append(folder.name)
        if unmatched:
            shown = ", ".join(repr(n) for n in unmatched[:10])
            more = f" (+{len(unmatched) - 10} more)" if len(unmatched) > 10 else ""
            examples = ", ".join(repr(n) for n in list(labels)[:3])
            raise InputError(
                f"{len(unmatched)} of {len(folders)} class folders under {root} match no class "
                f"name of the bundle: {shown}{more}. Folder names must equal the bundle's labels "
                f"(case-insensitive, '_' = ' '), e.g. {examples}: rename the folders, or export "
                "the bundle with --labels FILE listing your class names in output order"
            )
        if ambiguous:
            raise InputError(
                f"class folder(s) {', '.join(ambiguous)} match several bundle labels with the "
                "same name: give the bundle unique labels (--labels FILE) to evaluate on them"
            )
        method = "labels"
        note = "class folders matched to the bundle's labels by name"
    samples: list[tuple[Path, int]] = []
    for folder in folders:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        samples += [(p, index[folder.name]) for p in files]
    if not samples:
        raise InputError(
            f"no images found in the class folders under {root} "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    if loose:
        note += f"; {len(loose)} images directly under {root} (in no class folder) were ignored"
    return ClassMapping(samples, index, method, note)
