"""Image preprocessing that travels with the bundle.

The bundle records how images become input tensors (resize, centre crop, scale, mean, std,
channel order, layout) so every runtime and every target applies exactly the same steps.
The defaults are torchvision's ImageNet ones. Only NumPy and Pillow are needed here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to `resize`, centre-crop `crop` x `crop`, scale to [0, 1],
    subtract `mean`, divide by `std`, in `channel_order`, as an NCHW float32 tensor."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    interpolation: str = "bilinear"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(
                f"channel order {self.channel_order!r} is not supported: use RGB or BGR"
            )
        if self.interpolation not in _RESAMPLE:
            raise InputError(
                f"interpolation {self.interpolation!r} is not supported: use one of {', '.join(_RESAMPLE)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise InputError("mean and std need three values each, std all positive")
        if self.crop > self.resize:
            raise InputError(
                f"crop {self.crop} is larger than resize {self.resize}: resize must be at least the crop"
            )

    @classmethod
    def for_size(cls, image_size: int, **overrides: Any) -> Preprocessing:
        """torchvision's ratio: resize to 256/224 of the crop, then crop `image_size`."""
        resize = int(round(image_size * 256 / 224))
        return cls(
            resize=resize, crop=image_size, **{k: v for k, v in overrides.items() if v is not None}
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def _resample(name: str) -> int:
    from PIL import Image

    return {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }[name]


_RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos")


def load_image(path: str | os.PathLike[str]) -> Any:
    """An RGB Pillow image, EXIF orientation applied, from any common mode.

    Grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit images all become 8-bit
    RGB. A file that is not an image or is truncated raises `InputError` naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now, so truncation shows up here
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: cannot decode image ({exc}); is the file truncated?") from None


def to_rgb(img: Any) -> Any:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale the real range down to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode == "F":
        arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    return img.convert("RGB")


def preprocess_image(img: Any, pre: Preprocessing) -> np.ndarray:
    """One RGB Pillow image -> a (3, crop, crop) float32 array."""
    w, h = img.size
    if min(w, h) != pre.resize:
        # torchvision's Resize(int): the shorter side becomes `resize`, the aspect ratio is kept.
        if w <= h:
            w, h = pre.resize, int(pre.resize * h / w)
        else:
            w, h = int(pre.resize * w / h), pre.resize
        img = img.resize((w, h), _resample(pre.interpolation))
    left = int(round((w - pre.crop) / 2.0))
    top = int(round((h - pre.crop) / 2.0))
    img = img.crop((left, top, left + pre.crop, top + pre.crop))
    arr = np.asarray(img, dtype=np.float32) * np.float32(pre.scale)
    if pre.channel_order == "BGR":
        arr = arr[..., ::-1]
        mean, std = pre.mean[::-1], pre.std[::-1]
    else:
        mean, std = pre.mean, pre.std
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_batch(paths: Sequence[str | os.PathLike[str]], pre: Preprocessing) -> np.ndarray:
    """Preprocess several files into one (N, 3, crop, crop) float32 batch."""
    return np.stack([preprocess_image(load_image(p), pre) for p in paths])


def find_images(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under `root`, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise InputError(f"no images found under {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def iter_batches(
    paths: Sequence[Path], pre: Preprocessing, batch_size: int
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Stream preprocessed batches; memory stays at one batch whatever the folder size."""
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start : start + batch_size])
        yield chunk, load_batch(chunk, pre)
