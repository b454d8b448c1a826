"""A calibration cache is untrusted: a damaged one is one line naming it and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggdeploy.calibration.cache import cache_key, load_cache, save_cache
from vggdeploy.calibration.calibrators import HistogramCollector
from vggdeploy.cli import main
from vggdeploy.errors import InputError

KEY = cache_key(
    model_sha256="a" * 64,
    data_sha256="b" * 64,
    samples=4,
    seed=0,
    batch_size=2,
    preprocessing={},
    tensors=["t0", "t1"],
)


@pytest.fixture
def good_cache(tmp_path: Path) -> Path:
    collector = HistogramCollector(["t0", "t1"])
    collector.update({"t0": np.linspace(-1, 3, 1000), "t1": np.zeros(10)})
    path = tmp_path / "cache.json"
    save_cache(path, KEY, collector, {"minmax/onnxruntime": {}})
    return path


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_good_cache_round_trips(good_cache: Path) -> None:
    collector, ranges = load_cache(good_cache, KEY, explicit=True)
    assert collector.stats["t0"].count == 1000 and "minmax/onnxruntime" in ranges
    assert "NaN" not in good_cache.read_text()
    assert not list(good_cache.parent.glob("*.tmp*"))  # written atomically, nothing left over


DAMAGE = {
    "not json": lambda p: p.write_text("{not json"),
    "truncated": lambda p: p.write_text(p.read_text()[:100]),
    "list at root": lambda p: p.write_text("[1, 2]"),
    "binary": lambda p: p.write_bytes(b"\x80\x04\x95pickle"),
    "NaN": lambda p: p.write_text(p.read_text().replace('"hist_max": 3.0', '"hist_max": NaN')),
    "huge float": lambda p: _edit(p, lambda d: d["tensors"]["t0"].update(hist_max=1e999)),
    "missing field": lambda p: _edit(p, lambda d: d.pop("settings")),
    "missing tensors": lambda p: _edit(p, lambda d: d.pop("tensors")),
    "wrong type": lambda p: _edit(p, lambda d: d.update(model_sha256=5)),
    "settings a list": lambda p: _edit(p, lambda d: d.update(settings=[])),
    "tensor missing": lambda p: _edit(p, lambda d: d["tensors"].pop("t1")),
    "num_bins wrong": lambda p: _edit(p, lambda d: d["tensors"]["t0"].update(num_bins=7)),
    "bin out of range": lambda p: _edit(p, lambda d: d["tensors"]["t0"]["hist"].append([5000, 1])),
    "negative count": lambda p: _edit(
        p, lambda d: d["tensors"]["t0"]["hist"][0].__setitem__(1, -3)
    ),
    "count overflow": lambda p: _edit(p, lambda d: d["tensors"]["t0"].update(count=10**30)),
    "bool count": lambda p: _edit(p, lambda d: d["tensors"]["t1"].update(count=True)),
    "hist not pairs": lambda p: _edit(p, lambda d: d["tensors"]["t0"].update(hist=[1, 2, 3])),
    "min above max": lambda p: _edit(p, lambda d: d["tensors"]["t0"].update(min=9.0)),
    "sum mismatch": lambda p: _edit(p, lambda d: d["tensors"]["t0"].update(zeros=5)),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_cache_is_one_line(good_cache: Path, case: str) -> None:
    DAMAGE[case](good_cache)
    with pytest.raises(InputError) as exc:
        load_cache(good_cache, KEY, explicit=True)
    message = str(exc.value)
    assert str(good_cache) in message and "\n" not in message
    assert "delete it or pass another --cache" in message


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_default_cache_is_recomputed(good_cache: Path, case: str) -> None:
    DAMAGE[case](good_cache)
    assert load_cache(good_cache, KEY, explicit=False) is None


def test_cache_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a regular file: pass another --cache"):
        load_cache(tmp_path, KEY, explicit=True)


def test_default_cache_linking_outside_the_bundle_is_not_read(
    good_cache: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "calibration.cache.json").symlink_to(good_cache)
    assert load_cache(bundle / "calibration.cache.json", KEY, explicit=False) is None


def test_calibrate_cli_with_damaged_cache(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), np.uint8)).save(images / f"{i}.png")
    cache = tmp_path / "c.json"
    cache.write_text('{"format": "vggdeploy-calibration-cache", "version": 2, "tensors": []}')
    manifest = (tiny_bundle / "manifest.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(tiny_bundle), "--images", str(images), "--samples", "4",
              "--cache", str(cache)])  # fmt: skip
    out, err = capsys.readouterr()
    assert exc.value.code == 1 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: calibration cache") and str(cache) in lines[-1]
    assert "delete it or pass another --cache" in lines[-1]
    assert (tiny_bundle / "manifest.json").read_bytes() == manifest  # nothing recorded
