"""Accuracy on real images: FP16 and INT8 against FP32 on held-out digits.

Random weights say little about INT8. The weights here were trained on scikit-learn's 8x8
handwritten digits (shipped inside the scikit-learn wheel, nothing downloaded) by
scripts/train_digits.py, which also lays the fixed train/test split out as PNG folders. The
whole deployment path runs: export the checkpoint, convert to fp16, calibrate the one int8
file on train-split images (run by ONNX Runtime's CPU runtime in its integer form), and
evaluate every precision on the 540 held-out images (one image is 0.19 points).

The accuracy budget runs here too: a deliberately bad calibration (percentile 90, clipping a
tenth of every activation) loses about 2 points in plain INT8; `--max-drop 1` keeps the most
sensitive layers float and brings it back within a point with most layers still INT8.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from digits_script import train_digits

from vggdeploy.bundle import Bundle

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
WEIGHTS = DATA / "digits_vgg11.safetensors"
RECORD = json.loads((DATA / "digits_vgg11.json").read_text("utf-8"))
CALIBRATION_SAMPLES = 256  # of 300 train-split images (30 a class); the rest are held out
FP16_BUDGET = 0.2  # points of top-1
INT8_BUDGET = 1.0

pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn (dev extra)")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The exported, fp16-converted bundle, image folders, and its fp32/fp16 evaluation."""
    from vggdeploy.evaluate import evaluate_bundle
    from vggdeploy.exporter.fp16 import convert_fp16
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.preprocess import Preprocessing
    from vggdeploy.runtimes.registry import parse_spec
    from vggdeploy.weights import WeightsSource

    root = tmp_path_factory.mktemp("digits")
    script = train_digits()
    script.write_image_folder(root / "train", "train", limit_per_class=30)
    script.write_image_folder(root / "test", "test")
    labels = script.write_labels(root / "labels.txt")

    s = RECORD["spec"]
    spec = resolve_spec(
        s["name"],
        width_divisor=s["width_divisor"],
        hidden=s["hidden"],
        num_classes=s["num_classes"],
    )
    options = ExportOptions(
        image_size=RECORD["image_size"],
        labels=str(labels),
        preprocessing=Preprocessing(**RECORD["preprocessing"]),
    )
    export_bundle(spec, WeightsSource("file", path=str(WEIGHTS)), root / "bundle", options)
    bundle = Bundle.load(root / "bundle")
    fp16_report = convert_fp16(bundle, images=root / "train", samples=64)
    base = evaluate_bundle(
        bundle, root / "test", specs=[parse_spec("onnxruntime")], precisions=["fp32", "fp16"]
    )
    return SimpleNamespace(root=root, bundle=bundle, base=base, fp16=fp16_report)


def _result(report: dict[str, Any], precision: str) -> dict[str, Any]:
    return next(r for r in report["results"] if r["precision"] == precision)


def test_weights_are_small_and_match_their_record() -> None:
    data = WEIGHTS.read_bytes()
    assert len(data) < 1_000_000
    assert hashlib.sha256(data).hexdigest() == RECORD["weights"]["sha256"]
    assert RECORD["script"] == "scripts/train_digits.py"
    assert (REPO / RECORD["script"]).is_file()


def test_fp32_accuracy_is_high_and_matches_training(digits: SimpleNamespace) -> None:
    fp32 = _result(digits.base, "fp32")
    assert digits.base["count"] == RECORD["split"]["test"] == 540
    assert digits.base["class_mapping"]["method"] == "labels"
    assert fp32["top1"] > 0.90
    # ONNX Runtime on PNG files reproduces PyTorch's accuracy on the in-memory arrays.
    assert fp32["top1"] == pytest.approx(RECORD["accuracy"]["test_top1"], abs=1.5 / 540)


def test_fp16_within_0_2_points_of_fp32(digits: SimpleNamespace) -> None:
    fp16 = _result(digits.base, "fp16")
    assert abs(fp16["delta_top1"]) <= FP16_BUDGET, fp16
    assert digits.fp16["kept_fp32"] == []  # digit activations are far from the fp16 range
    assert digits.fp16["max_abs_activation"] < 65504 / 100


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_int8_within_1_point_of_fp32(digits: SimpleNamespace, method: str) -> None:
    from vggdeploy.calibration import CalibrationOptions, calibrate_bundle
    from vggdeploy.evaluate import evaluate_bundle
    from vggdeploy.runtimes.registry import parse_spec

    precision = "int8"
    options = CalibrationOptions(method=method, samples=CALIBRATION_SAMPLES, seed=0)
    calibrate_bundle(digits.bundle, digits.root / "train", options)
    bundle = Bundle.load(digits.bundle.root)
    assert bundle.has_artifact(f"onnx.{precision}")
    report = evaluate_bundle(
        bundle, digits.root / "test", specs=[parse_spec("onnxruntime")], precisions=[precision]
    )
    int8 = _result(report, precision)
    fp32 = _result(digits.base, "fp32")
    delta = 100 * (int8["top1"] - fp32["top1"])
    assert abs(delta) <= INT8_BUDGET, (
        f"{method}: int8 top-1 {100 * int8['top1']:.2f}% vs fp32 "
        f"{100 * fp32['top1']:.2f}% ({delta:+.2f} points)"
    )


def test_max_drop_keeps_sensitive_layers_float_until_within_budget(
    digits: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggdeploy.cli import main
    from vggdeploy.evaluate import evaluate_bundle
    from vggdeploy.runtimes.registry import parse_spec

    root = tmp_path / "bundle"
    shutil.copytree(digits.bundle.root, root)
    args = ["calibrate", str(root), "--images", str(digits.root / "train"), "--samples", "64"]
    args += ["--method", "percentile", "--percentile", "90"]  # clips 10 %: a bad calibration
    args += ["--accuracy-images", str(digits.root / "test"), "--max-drop", str(INT8_BUDGET)]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--json", str(tmp_path / "summary.json")])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text("utf-8"))
    budget = summary["accuracy_budget"]
    fp32 = _result(digits.base, "fp32")
    assert budget["fp32_top1"] == pytest.approx(100 * fp32["top1"], abs=1e-3)
    assert budget["before"]["top1_drop"] > INT8_BUDGET  # plain INT8 misses the budget
    assert budget["met"] and budget["after"]["top1_drop"] <= INT8_BUDGET
    kept = [k["layer"] for k in summary["float_layers"]]
    assert len(kept) >= 1 and summary["int8_layers"] > summary["layers"] / 2
    # the most sensitive layers of the table are the ones kept float, named in the table
    ranked = [row["layer"] for row in summary["sensitivity"]]
    assert ranked[: len(kept)] == kept
    assert all(layer in out for layer in kept) and "layers kept float" in out
    # an independent evaluation of the written file agrees with the budget's figure
    bundle = Bundle.load(root)
    record = bundle.artifact("onnx.int8").to_json_dict()
    assert [k["layer"] for k in record["float_layers"]] == kept
    assert record["sensitivity"] == summary["sensitivity"]
    report = evaluate_bundle(
        bundle, digits.root / "test", specs=[parse_spec("onnxruntime")], precisions=["int8"]
    )
    delta = 100 * (_result(report, "int8")["top1"] - fp32["top1"])
    assert abs(delta) <= INT8_BUDGET
    assert delta == pytest.approx(-budget["after"]["top1_drop"], abs=1e-3)
