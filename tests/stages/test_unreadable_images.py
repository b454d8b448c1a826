"""An unreadable image in a folder: calibrate, validate and evaluate report it on its own line
(escaped name + reason), leave it out, finish, and exit 3; --strict stops at the first with one
line (exit 1). And `calibrate` on a folder with fewer images than --samples uses what it finds
and says how many."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggdeploy.cli import main
from vggdeploy.errors import SKIPPED_EXIT_CODE

#: a file named like an image whose name carries an escape sequence, and whose bytes are junk
HOSTILE = "bad\x1b[31m.png"
HOSTILE_SHOWN = "bad\\x1b[31m.png"


def run_cli(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _picture(path: Path, seed: int, size: int = 36) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _pictures(root: Path, count: int) -> Path:
    for i in range(count):
        _picture(root / f"img{i:03d}.png", i)
    return root


def _spoil(root: Path) -> list[Path]:
    """Two unreadable images: a truncated PNG and junk under an escape-laden name."""
    truncated = root / "truncated.png"
    _picture(truncated, 99, 64)
    truncated.write_bytes(truncated.read_bytes()[:60])
    junk = root / HOSTILE
    junk.write_bytes(b"not an image at all")
    return [truncated, junk]


def _skip_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("skipped ")]


# -- calibrate ----------------------------------------------------------------------------------


def test_calibrate_on_fewer_images_than_samples_says_how_many_it_used(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's `vggdeploy calibrate bundles/vgg16 --images calib/` on 80 images."""
    folder = _pictures(tmp_path / "calib", 80)
    code, out, err = run_cli(["calibrate", tiny_bundle, "--images", folder], capsys)  # 512
    assert code == 0, err
    assert (
        "calibrated on 60 images, not the 512 --samples asked for: the folder has 80 and 20 are "
        "held out for the int8 check (pass --holdout 0 to calibrate on all of them)"
    ) in out
    assert "held-out int8 vs fp32 on 20 images" in out
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    record = manifest["artifacts"]["onnx.int8"]["calibration"]
    assert (record["samples"], record["samples_asked"], record["images_found"]) == (60, 512, 80)
    code, out, err = run_cli(
        ["calibrate", tiny_bundle, "--images", folder, "--holdout", "0", "--json", "-"], capsys
    )
    summary = json.loads(out)
    assert code == 0 and (summary["samples"], summary["holdout"]["images"]) == (80, 0)


def test_calibrate_skips_unreadable_images_and_exits_3(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _pictures(tmp_path / "calib", 40)
    bad = _spoil(folder)
    code, out, err = run_cli(
        ["calibrate", tiny_bundle, "--images", folder, "--samples", "24"], capsys
    )
    assert code == SKIPPED_EXIT_CODE == 3
    lines = _skip_lines(err)
    assert len(lines) == 2, err
    assert any("truncated.png: " in line for line in lines)
    assert any(HOSTILE_SHOWN in line and "not an image" in line for line in lines)
    assert "\x1b" not in err + out
    assert err.splitlines()[-1].startswith("warning: calibrated without 2 unreadable images")
    assert (tiny_bundle / "model.int8.onnx").is_file()
    # 42 files: 11 held out first (a quarter), 24 calibrate, 18 held out; the two bad ones are
    # left out of whichever set drew them
    record = json.loads((tiny_bundle / "manifest.json").read_text())["artifacts"]["onnx.int8"]
    read = record["calibration"]["images_read"]
    assert read + record["holdout"]["images"] == 24 + 18 - 2
    summary_line = next(line for line in out.splitlines() if line.startswith("wrote "))
    assert f"{read} images" in summary_line
    if read < 24:
        assert f"({24 - read} unreadable left out)" in summary_line
    assert str(bad[0]) not in out  # the lines go to stderr, the report to stdout


def test_calibrate_strict_stops_at_the_first_unreadable_image(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _pictures(tmp_path / "calib", 40)
    _spoil(folder)
    args = ["calibrate", tiny_bundle, "--images", folder, "--samples", "24", "--holdout", "16"]
    code, _, err = run_cli([*args, "--strict"], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err and not _skip_lines(err)
    assert not (tiny_bundle / "model.int8.onnx").exists()


# -- validate -----------------------------------------------------------------------------------


def test_validate_skips_unreadable_images_and_exits_3(
    tiny_bundle_ro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _pictures(tmp_path / "imgs", 5)
    _spoil(folder)
    code, out, err = run_cli(
        ["validate", tiny_bundle_ro, "--images", folder, "--batch", "2"], capsys
    )
    assert code == 3, out + err
    assert len(_skip_lines(err)) == 2  # once each, though the images are read per runtime
    assert any(HOSTILE_SHOWN in line for line in _skip_lines(err))
    assert "PASSED" in out and "7 images from" in out and "2 unreadable, skipped, so 5 used" in out
    assert err.splitlines()[-1].startswith("warning: validated without 2 unreadable images")
    code, _, err = run_cli(["validate", tiny_bundle_ro, "--images", folder, "--strict"], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")


def test_validate_does_not_judge_int8_on_too_few_images(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggdeploy.bundle import Bundle

    # a copy of model.onnx registered as the int8 file: the verdict's plumbing, not INT8 quality
    shutil.copy(tiny_bundle / "model.onnx", tiny_bundle / "model.int8.onnx")
    Bundle.load(tiny_bundle).add_artifact(
        "onnx.int8", "model.int8.onnx", kind="onnx", precision="int8"
    )
    folder = _pictures(tmp_path / "imgs", 5)
    code, out, _ = run_cli(["validate", tiny_bundle, "--images", folder], capsys)
    assert (
        "NOT JUDGED onnxruntime[cpu] int8: 5 images cannot judge this: a verdict needs at "
        "least 10" in out
    )
    assert code == 0 and "PASSED: 2 checks on 1 target" in out  # fp32 judged and passed
    code, out, _ = run_cli(
        ["validate", tiny_bundle, "--images", folder, "--runtime", "onnxruntime@int8"], capsys
    )
    assert code == 2 and "FAILED: nothing was judged (1 target compared on too few images)" in out


# -- evaluate -----------------------------------------------------------------------------------


def test_evaluate_skips_unreadable_images_and_exits_3(
    tiny_bundle_ro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "labelled"
    for c in range(3):
        _pictures(root / f"class_{c}", 3)
    _spoil(root / "class_1")
    out_json = tmp_path / "eval.json"
    code, out, err = run_cli(
        ["evaluate", tiny_bundle_ro, "--images", root, "--batch", "4", "--json", out_json],
        capsys,
    )
    assert code == 3, out + err
    assert len(_skip_lines(err)) == 2
    report = json.loads(out_json.read_text())
    assert report["count"] == 9 and len(report["skipped_images"]) == 2
    assert "9 images (2 unreadable left out)" in out
    assert err.splitlines()[-1].startswith("warning: evaluated without 2 unreadable images")
    code, _, err = run_cli(["evaluate", tiny_bundle_ro, "--images", root, "--strict"], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")


def test_every_image_unreadable_is_one_error_line(
    tiny_bundle_ro: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "labelled" / "class_0"
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(b"junk")
    code, _, err = run_cli(["evaluate", tiny_bundle_ro, "--images", root.parent], capsys)
    assert code == 1 and err.splitlines()[-1].startswith("error: none of the 1 images")
    assert "Traceback" not in err
    shutil.rmtree(root.parent)
