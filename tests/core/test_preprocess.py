"""Preprocessing: torchvision's resize/crop arithmetic, EXIF, image modes, bad files, mean/std."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggdeploy.errors import InputError
from vggdeploy.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    find_images,
    iter_batches,
    load_batch,
    load_image,
    preprocess_image,
)

# Identity normalisation: the output holds raw 0..255 pixel values, so geometry can be read off.
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": 1.0}


def _coordinate_image(width: int, height: int) -> Image.Image:
    """R = x, G = y (both < 256): every output pixel says where it came from."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    arr = np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _torchvision_reference(img: Image.Image, resize: int, crop: int) -> np.ndarray:
    """torchvision's Resize(int) + CenterCrop(int), written from its documented arithmetic:
    the shorter side becomes `resize` and the longer `int(resize * long / short)`; the crop
    starts at `int(round((size - crop) / 2.0))`."""
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32)
    return arr.transpose(2, 0, 1)


def test_crop_offsets_follow_torchvision_rounding() -> None:
    # No resize (shorter side already 64); (101 - 64) / 2 = 18.5 rounds half to even -> 18.
    img = _coordinate_image(101, 64)
    out = preprocess_image(img, Preprocessing(resize=64, crop=64, **RAW))
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    assert out[0, 0, 0] == 18 and out[0, 0, 63] == 18 + 63
    assert out[1, 0, 0] == 0 and out[1, 63, 0] == 63


def test_shorter_side_resize_then_centre_crop_with_nearest() -> None:
    # 256x160 -> shorter side 80 -> 128x80, crop 64 at left 32, top 8. Nearest samples the
    # source at 2 * i + 1, so output column j holds x = 2 * (j + 32) + 1.
    img = _coordinate_image(256, 160)
    pre = Preprocessing(resize=80, crop=64, interpolation="nearest", **RAW)
    out = preprocess_image(img, pre)
    cols, rows = np.arange(64), np.arange(64)
    np.testing.assert_array_equal(out[0, 0, :], 2 * (cols + 32) + 1)
    np.testing.assert_array_equal(out[1, :, 0], 2 * (rows + 8) + 1)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (333, 100), (100, 333), (64, 64)])
def test_matches_torchvision_arithmetic_on_landscape_and_portrait(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    out = preprocess_image(img, Preprocessing(resize=64, crop=56, **RAW))
    np.testing.assert_array_equal(out, _torchvision_reference(img, 64, 56))


def test_mean_std_scale_in_rgb_order() -> None:
    img = Image.new("RGB", (40, 30), (200, 100, 50))
    out = preprocess_image(img, Preprocessing(resize=32, crop=32))
    expected = (np.array([200, 100, 50]) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[:, 5, 5], expected, rtol=1e-5)
    assert out.shape == (3, 32, 32) and out.flags["C_CONTIGUOUS"]


def test_bgr_order_reverses_channels_and_their_mean_std() -> None:
    img = Image.new("RGB", (32, 32), (200, 100, 50))
    rgb = preprocess_image(img, Preprocessing(resize=32, crop=32))
    bgr = preprocess_image(img, Preprocessing(resize=32, crop=32, channel_order="BGR"))
    np.testing.assert_allclose(bgr, rgb[::-1], rtol=1e-6)
    np.testing.assert_allclose(bgr[0, 0, 0], (50 / 255.0 - 0.406) / 0.225, rtol=1e-5)


def test_custom_mean_std_and_scale() -> None:
    img = Image.new("RGB", (32, 32), (255, 0, 128))
    pre = Preprocessing(resize=32, crop=32, mean=(128.0, 0.0, 0.0), std=(2.0, 1.0, 4.0), scale=1.0)
    np.testing.assert_allclose(preprocess_image(img, pre)[:, 0, 0], [63.5, 0.0, 32.0])


# -- loading ----------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, left half red, right half blue; orientation 6 means "rotate
    # 90 degrees clockwise to display": shown 20 wide x 40 high with red on top.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    top, bottom = loaded.getpixel((10, 5)), loaded.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def _save(tmp_path: Path, img: Image.Image, name: str, **kwargs) -> Path:
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    loaded = load_image(_save(tmp_path, Image.new("L", (8, 8), 77), "g.png"))
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (77, 77, 77)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((1, 1), (0, 0, 255, 255))
    loaded = load_image(_save(tmp_path, img, "a.png"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> background
    assert loaded.getpixel((1, 1)) == (0, 0, 255)


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_image(_save(tmp_path, img, "c.jpg", quality=100))
    assert loaded.mode == "RGB"
    r, g, b = loaded.getpixel((4, 4))
    assert r > 230 and g < 30 and b < 30


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    loaded = load_image(_save(tmp_path, img, "deep.png"))
    assert loaded.mode == "RGB"
    values = [loaded.getpixel((x, 0))[0] for x in range(4)]
    assert values == [0, 128, 255, 4]


def test_palette_with_transparency_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 255, 0] + [10, 20, 30] * 255)
    img.putpixel((2, 2), 1)
    loaded = load_image(_save(tmp_path, img, "p.png"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (0, 255, 0) and loaded.getpixel((2, 2)) == (10, 20, 30)
    img.info["transparency"] = 0
    loaded = load_image(_save(tmp_path, img, "pt.png", transparency=0))
    assert loaded.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["1", "LA", "I", "F"])
def test_other_modes_become_rgb(mode: str) -> None:
    from vggdeploy.preprocess import to_rgb

    img = Image.new(mode, (4, 4))
    assert to_rgb(img).mode == "RGB"


def test_text_file_named_jpg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(InputError, match="notes.jpg: not an image") as err:
        load_image(path)
    assert "\n" not in str(err.value)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    path = _save(tmp_path, img, "cut.jpg", quality=90)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.jpg: cannot decode image") as err:
        load_image(path)
    assert "truncated" in str(err.value)


def test_missing_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "gone.png")


# -- the recorded description -----------------------------------------------------------------


def test_for_size_uses_torchvision_ratio() -> None:
    assert (Preprocessing.for_size(224).resize, Preprocessing.for_size(224).crop) == (256, 224)
    assert Preprocessing.for_size(32).resize == 37
    assert Preprocessing.for_size(448).resize == 512
    pre = Preprocessing.for_size(224, channel_order="BGR", mean=None)
    assert pre.channel_order == "BGR" and pre.mean == IMAGENET_MEAN


def test_round_trips_through_a_dict() -> None:
    pre = Preprocessing(resize=300, crop=288, mean=(0.5, 0.5, 0.5), channel_order="BGR")
    data = pre.to_dict()
    assert data["mean"] == [0.5, 0.5, 0.5] and isinstance(data["std"], list)
    assert Preprocessing.from_dict({**data, "unknown_key": 1}) == pre


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"crop": 300, "resize": 256}, "larger than resize"),
        ({"channel_order": "RBG"}, "channel order"),
        ({"interpolation": "area"}, "interpolation"),
        ({"std": (0.2, 0.0, 0.2)}, "std all positive"),
        ({"mean": (0.5, 0.5)}, "three values"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Preprocessing(**kwargs)


# -- folders and batches ----------------------------------------------------------------------


def test_find_images_and_batches(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.png", ".hidden.png"):
        Image.new("RGB", (40, 48), (10, 20, 30)).save(
            tmp_path / name, format="PNG" if name.endswith("png") else "JPEG"
        )
    (tmp_path / "readme.txt").write_text("x")
    files = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.JPG", "b.png", "sub/c.png"]
    pre = Preprocessing(resize=32, crop=32)
    assert load_batch(files, pre).shape == (3, 3, 32, 32)
    batches = list(iter_batches(files, pre, batch_size=2))
    assert [len(paths) for paths, _ in batches] == [2, 1]
    assert [arr.shape[0] for _, arr in batches] == [2, 1]


def test_find_images_refuses_empty_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images found"):
        find_images(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        find_images(tmp_path / "nope")
