"""Image preprocessing that travels with the bundle.

The bundle records how images become input tensors (resize, centre crop, scale, mean, std,
channel order, layout) so every runtime and every target applies exactly the same steps.
The defaults are torchvision's ImageNet ones. Only NumPy and Pillow are needed here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
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


#: the largest magnitude a normalised pixel may reach ((x * scale - mean) / std)
NORMALIZED_MAX = 1e4


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
        values = (*self.mean, *self.std)
        if len(self.mean) != 3 or len(self.std) != 3 or not all(math.isfinite(v) for v in values):
            raise InputError("mean and std need three values each, all finite")
        if any(s <= 0 for s in self.std):
            raise InputError("mean and std need three values each, std all positive")
        # (pixel * scale - mean) / std must stay a sane number: far beyond fp16's range (65504)
        # an fp16 artifact sees infinities, and --mean -1e308 overflows even float32. Compared
        # without dividing, so no extreme value can overflow here.
        top = 255 * self.scale
        if not all(abs(v) <= NORMALIZED_MAX * 100 for v in values) or not all(
            abs(v - m) <= NORMALIZED_MAX * s
            for m, s in zip(self.mean, self.std)
            for v in (0.0, top)
        ):
            raise InputError(
                f"mean {list(self.mean)} and std {list(self.std)} put normalised pixel values "
                f"beyond +-{NORMALIZED_MAX:g}: give them on the scale of pixels x {self.scale:g} "
                "(ImageNet: --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)"
            )
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
#: the `interpolation` names `Preprocessing` takes
INTERPOLATIONS = _RESAMPLE


#: The most pixels (width x height, as the file's header states) an image may have. Decoding
#: is refused beyond it, before any pixel is read, because a tiny file can claim a huge canvas
#: (a 20000x20000 PNG compresses to a few kilobytes and decodes to 1.2 GB): 8192 x 8192 is
#: above any camera photo a classifier is fed (a 50-megapixel frame is 8660 x 5773) and
#: decodes to at most 192 MB of RGB. It is below Pillow's own `Image.MAX_IMAGE_PIXELS`
#: (89 megapixels), so Pillow's DecompressionBombWarning never fires for an image we accept and
#: its DecompressionBombError is reported as this same limit.
MAX_IMAGE_PIXELS = 8192 * 8192

#: The formats Pillow may identify a file as. Anything else (EPS would start Ghostscript, and
#: there are dozens of rarer decoders) is refused whatever the file is called. MPO is the
#: multi-picture JPEG many cameras write.
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def load_image(path: str | os.PathLike[str], size: int | None = None) -> Any:
    """An RGB Pillow image, EXIF orientation applied, from any common mode.

    Grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit images all become 8-bit
    RGB; an animated GIF/WebP/PNG gives its first frame. With `size` (the bundle's resize), a
    large JPEG is decoded in draft mode at the smallest 1/2, 1/4 or 1/8 scale that keeps both
    sides at least `size`, so memory stays bounded. Every problem raises one `InputError`
    naming the file: not a regular file, unreadable, not an image of `IMAGE_FORMATS`, more
    than `MAX_IMAGE_PIXELS` pixels (checked from the header, before decoding), empty,
    truncated or corrupt.
    """
    path = Path(path)
    try:
        f = _open_regular(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied: make the file readable") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise InputError(f"{path}: the file is empty (0 bytes)")
        return decode_image(f, str(path), size)


def decode_image(f: Any, name: str, size: int | None = None) -> Any:
    """An RGB Pillow image from an open binary file `f` (a file, or `io.BytesIO` of bytes
    received over the network), with `load_image`'s checks; every problem is one
    `InputError` starting with `name`."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = name
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check, in case its limit was lowered below ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f, formats=_formats()) as img:
                width, height = img.size
                if width < 1 or height < 1:
                    raise InputError(f"{path}: the image is empty ({width}x{height} pixels)")
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_large(path, f"{width}x{height} pixels")
                if size and img.format in ("JPEG", "MPO"):
                    img.draft("RGB", (size, size))
                img.load()  # decode now, so truncation shows up here
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{int(claimed.group(1)):,} pixels" if claimed else "a decompression bomb"
        raise _too_large(path, what) from None
    except UnidentifiedImageError:
        # (the formats outside IMAGE_FORMATS are not opened at all, so "can read" holds)
        raise InputError(f"{path}: not an image Pillow can read") from None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError) as exc:
        raise InputError(
            f"{path}: cannot decode image ({_first_line(exc)}); is the file truncated or damaged?"
        ) from None


def _formats() -> list[str]:
    from PIL import Image

    Image.init()  # registers every plugin (MPO is not among Pillow's pre-loaded ones)
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def _open_regular(path: Path) -> Any:
    """`path` opened for reading, refused unless it is a regular file (a FIFO or a device
    named x.jpg would block or never end). O_NONBLOCK makes opening a FIFO return at once."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            raise OSError("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_large(path: Path | str, what: str) -> InputError:
    return InputError(
        f"{path}: the image is too large ({what}; the limit is {MAX_IMAGE_PIXELS:,} pixels, "
        "8192x8192): downscale it first"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
    if img.mode not in ("RGB", "L", "1", "CMYK", "YCbCr", "RGBX", "I;16", "I"):
        try:
            return img.convert("RGB")
        except ValueError:
            raise InputError(f"image mode {img.mode} cannot be converted to RGB") from None
    return img.convert("RGB")


def preprocess_image(img: Any, pre: Preprocessing) -> np.ndarray:
    """One RGB Pillow image -> a (3, crop, crop) float32 array."""
    w0, h0 = w, h = img.size
    if min(w, h) != pre.resize:
        # torchvision's Resize(int): the shorter side becomes `resize`, the aspect ratio is kept.
        if w <= h:
            w, h = pre.resize, int(pre.resize * h / w)
        else:
            w, h = int(pre.resize * w / h), pre.resize
    left = int(round((w - pre.crop) / 2.0))
    top = int(round((h - pre.crop) / 2.0))
    if (w, h) == (w0, h0):
        img = img.crop((left, top, left + pre.crop, top + pre.crop))
    elif w * h <= 4 * pre.resize * pre.resize:
        img = img.resize((w, h), _resample(pre.interpolation))
        img = img.crop((left, top, left + pre.crop, top + pre.crop))
    else:
        # A very elongated image (1 x 60000) would resize to billions of pixels; resample only
        # the source region that lands in the crop (same sample positions and filter support).
        sx, sy = w0 / w, h0 / h
        box = (left * sx, top * sy, (left + pre.crop) * sx, (top + pre.crop) * sy)
        img = img.resize((pre.crop, pre.crop), _resample(pre.interpolation), box=box)
    arr = np.asarray(img, dtype=np.float32) * np.float32(pre.scale)
    if pre.channel_order == "BGR":
        arr = arr[..., ::-1]
        mean, std = pre.mean[::-1], pre.std[::-1]
    else:
        mean, std = pre.mean, pre.std
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_batch(paths: Sequence[str | os.PathLike[str]], pre: Preprocessing) -> np.ndarray:
    """Preprocess several files into one (N, 3, crop, crop) float32 batch (strict: the first
    unreadable file raises its `InputError`)."""
    return np.stack([preprocess_image(load_image(p, pre.resize), pre) for p in paths])


# -- unreadable images: the one skip rule -----------------------------------------------------


@dataclass(frozen=True)
class SkippedImage:
    """An image left out because it could not be read: the file and the one-line reason."""

    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": str(self.path), "reason": self.reason}


#: called once per unreadable image when images are skipped rather than fatal
OnSkip = Callable[[SkippedImage], None]


class ImageSkips:
    """The skip rule for folders of images (calibrate, validate, evaluate), in one place.

    `strict`: the first unreadable image raises its `InputError` (one line naming the file), as
    `--strict` asks. Otherwise each unreadable image is recorded once, however often it is read
    again (validate reads its inputs once per runtime), `on_skip` is called for it the first
    time (the command prints the line), and the caller goes on without it. Only problems of
    the file itself (`load_image`'s `InputError`s) are skipped; anything else still raises.
    """

    def __init__(self, *, strict: bool = False, on_skip: OnSkip | None = None) -> None:
        self.strict = strict
        self.on_skip = on_skip
        self._found: dict[Path, SkippedImage] = {}

    @property
    def skipped(self) -> list[SkippedImage]:
        return list(self._found.values())

    def read(self, path: Path, pre: Preprocessing) -> np.ndarray | None:
        """`path` preprocessed, or None when it is skipped."""
        try:
            return preprocess_image(load_image(path, pre.resize), pre)
        except InputError as exc:
            if self.strict:
                raise
            self.record(path, str(exc))
            return None

    def record(self, path: Path, message: str) -> None:
        path = Path(path)
        if path in self._found:
            return
        prefix = f"{path}: "
        reason = message[len(prefix) :] if message.startswith(prefix) else message
        self._found[path] = skip = SkippedImage(path, reason)
        if self.on_skip is not None:
            self.on_skip(skip)

    def batch(
        self, paths: Sequence[Path], pre: Preprocessing
    ) -> tuple[list[Path], np.ndarray | None]:
        """The readable files of `paths` and their (N, 3, crop, crop) batch (None if none)."""
        kept: list[Path] = []
        arrays: list[np.ndarray] = []
        for path in paths:
            array = self.read(Path(path), pre)
            if array is not None:
                kept.append(Path(path))
                arrays.append(array)
        return kept, (np.stack(arrays) if arrays else None)


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
    paths: Sequence[Path],
    pre: Preprocessing,
    batch_size: int,
    skips: ImageSkips | None = None,
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Stream preprocessed batches; memory stays at one batch whatever the folder size.

    Without `skips` an unreadable file raises; with it, unreadable files follow its rule and
    each batch holds (and names) only the files that were read (a batch of none is left out).
    """
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start : start + batch_size])
        if skips is None:
            yield chunk, load_batch(chunk, pre)
            continue
        kept, array = skips.batch(chunk, pre)
        if array is not None:
            yield kept, array
