"""Untrusted images: every bad file is one error naming it, the others still run, no traceback."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.preprocess import MAX_IMAGE_PIXELS, Preprocessing, load_batch, load_image


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims `width` x `height` and holds no pixel data (a few dozen bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(path)
    return path


def test_huge_png_is_one_error_and_the_good_image_is_classified(
    tiny_bundle_ro: Path, tmp_path: Path, good: Path, capsys
) -> None:
    big = tmp_path / "big.png"
    Image.new("1", (20000, 20000)).save(big)  # 1-bit: ~50 KB on disk, 1.2 GB as RGB
    assert big.stat().st_size < 1 << 20
    code, out, err = run_cli(["predict", tiny_bundle_ro, big, good], capsys)
    assert code == 1
    assert "Traceback" not in out + err and "DecompressionBomb" not in out + err
    bad_lines = [line for line in (out + err).splitlines() if "too large" in line]
    assert len(bad_lines) == 1 and "big.png" in bad_lines[0]
    assert "good.png" in out and "class" in out


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: png_header(p / "hdr.png", 100_000, 100_000), "too large"),
        (lambda p: png_header(p / "just.png", 8193, 8192), "too large"),
        (lambda p: png_header(p / "zero.png", 0, 0), "not an image"),
        (lambda p: (p / "empty.jpg").write_bytes(b"") and None or p / "empty.jpg", "empty"),
        (lambda p: (p / "d.jpg").mkdir() or p / "d.jpg", "is a folder"),
        (lambda p: os.mkfifo(p / "f.jpg") or p / "f.jpg", "not a regular file"),
        (
            lambda p: (p / "x.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n") and p / "x.jpg",
            "not an image",
        ),
        (lambda p: p / "missing.png", "no such file"),
    ],
)
def test_bad_file_is_one_input_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as exc:
        load_image(path, 256)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_limit_is_below_pillows_own() -> None:
    assert MAX_IMAGE_PIXELS == 8192 * 8192 <= Image.MAX_IMAGE_PIXELS


def test_truncated_image(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(InputError, match="cut.png: cannot decode image"):
        load_image(cut)


def test_unreadable_file(tmp_path: Path, good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def deny(path, *args, **kwargs):
        if Path(path) == good:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(InputError, match="good.png: permission denied"):
        load_image(good)


@pytest.mark.parametrize(
    "img, name",
    [
        (Image.new("RGB", (1, 1), (9, 8, 7)), "one.png"),
        (Image.new("I;16", (40, 30), 60000), "deep.png"),
        (Image.new("CMYK", (40, 30), (1, 2, 3, 4)), "cmyk.jpg"),
        (Image.new("LA", (40, 30), (100, 50)), "la.png"),
        (Image.new("F", (20, 20), 3.5), "f.tif"),
        (Image.new("RGB", (1, 60000)), "thin.png"),  # resizing it whole would be 15 G pixels
        (Image.new("RGB", (60000, 1)), "wide.png"),
    ],
)
def test_odd_but_valid_images_load(tmp_path: Path, img, name: str) -> None:
    path = tmp_path / name
    img.save(path)
    batch = load_batch([path], Preprocessing())
    assert batch.shape == (1, 3, 224, 224) and np.isfinite(batch).all()


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("P", (300, 300), i * 40) for i in range(5)]
    frames[0].putpalette([v for i in range(256) for v in (i, i, i)])
    for f in frames[1:]:
        f.putpalette(frames[0].getpalette())
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(path)).max() == 0  # frame 0 is black


def test_large_jpeg_decodes_in_draft_mode(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(path, quality=80)
    assert load_image(path, 256).size == (500, 375)  # 1/8 scale: both sides still >= 256
    assert load_image(path).size == (4000, 3000)
    assert load_batch([path], Preprocessing()).shape == (1, 3, 224, 224)
