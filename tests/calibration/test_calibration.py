"""INT8 calibration: range methods, streaming statistics, cache, Q/DQ targets, held-out check."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vggdeploy.bundle import Bundle
from vggdeploy.calibration import CalibrationOptions, calibrate_bundle, verify_qdq
from vggdeploy.calibration.calibrators import (
    NUM_BINS,
    HistogramCollector,
    TensorStats,
    compute_range,
    entropy_threshold_bins,
    percentile_threshold_bins,
    select_calibration_tensors,
)
from vggdeploy.calibration.data import ImageBatchReader, split_counts, split_images
from vggdeploy.calibration.qdq import quantize_weight
from vggdeploy.errors import InputError
from vggdeploy.preprocess import Preprocessing

N_IMAGES = 40
SAMPLES = 24


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small image-like pictures (gradients, blobs, noise) in nested folders, png and jpg."""
    from PIL import Image

    root = tmp_path_factory.mktemp("calib_images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    for i in range(N_IMAGES):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-150, 150, (2, 3))
        img = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        cy, cx, r = rng.uniform(4, 28, 2).tolist() + [rng.uniform(3, 10)]
        blob = ((yy * 31 - cy) ** 2 + (xx * 31 - cx) ** 2) < r**2
        img[blob] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 12, img.shape)
        pixels = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        sub = root / ("a" if i % 2 else "b" / Path("deeper"))
        sub.mkdir(parents=True, exist_ok=True)
        pixels.save(sub / f"img{i:03d}.{'png' if i % 3 else 'jpg'}")
    return root


def _options(**kwargs) -> CalibrationOptions:
    defaults = {"samples": SAMPLES, "batch_size": 8}
    return CalibrationOptions(**{**defaults, **kwargs})


def _hist_of(values: np.ndarray) -> TensorStats:
    stats = TensorStats.empty("t")
    stats.update(values.astype(np.float32))
    return stats


# -- range methods ----------------------------------------------------------------------------


def test_entropy_clips_outliers_of_a_gaussian_but_minmax_does_not() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(400_000), [25.0, -30.0, 28.0]])
    stats = _hist_of(values)
    entropy = compute_range(stats, "entropy", "tensorrt")
    minmax = compute_range(stats, "minmax", "tensorrt")
    assert minmax.high == pytest.approx(30.0)
    # KL search keeps the Gaussian body (a few sigma) and clips the far outliers.
    assert 2.5 < entropy.high < 8.0
    assert entropy.low == -entropy.high  # symmetric for TensorRT


def test_entropy_keeps_the_full_range_of_a_uniform_distribution() -> None:
    hist = np.full(NUM_BINS, 1000, dtype=np.int64)
    assert entropy_threshold_bins(hist, 128) >= int(0.95 * NUM_BINS)


def test_entropy_search_on_a_known_histogram() -> None:
    # A dense body over the first 300 bins and one outlier bin at the very end: the best
    # threshold sits just past the body, not at the outlier.
    hist = np.zeros(NUM_BINS, dtype=np.int64)
    hist[:300] = np.linspace(5000, 100, 300).astype(np.int64)
    hist[-1] = 3
    bins = entropy_threshold_bins(hist, 128)
    assert 250 <= bins <= 400


def test_exact_zeros_do_not_drive_the_entropy_threshold() -> None:
    # A ReLU output: 70 % exact zeros, the rest half-normal. The zeros are exact in int8, so
    # the threshold must be the one of the non-zero part alone, not a fraction of it.
    rng = np.random.default_rng(6)
    body = np.abs(rng.standard_normal(300_000))
    with_zeros = _hist_of(np.concatenate([np.zeros(700_000), body]))
    without = _hist_of(body)
    assert with_zeros.zeros == 700_000 and without.zeros == 0
    t_with = compute_range(with_zeros, "entropy", "tensorrt").high
    t_without = compute_range(without, "entropy", "tensorrt").high
    assert t_with == pytest.approx(t_without, rel=1e-6)
    # Percentile counts the zeros: 99 % of all values is a lower |x| than 99 % of the body.
    p_with = compute_range(with_zeros, "percentile", "tensorrt", percentile=99.0).high
    p_without = compute_range(without, "percentile", "tensorrt", percentile=99.0).high
    assert p_with < p_without


def test_percentile_threshold() -> None:
    rng = np.random.default_rng(2)
    stats = _hist_of(rng.uniform(0, 1, 200_000))
    r99 = compute_range(stats, "percentile", "tensorrt", percentile=99.0)
    assert r99.high == pytest.approx(0.99, abs=2 * stats.bin_width)
    assert r99.low == -r99.high  # symmetric int8 even for unsigned data
    r100 = compute_range(stats, "percentile", "tensorrt", percentile=100.0)
    assert r100.high == pytest.approx(stats.max)
    hist = np.zeros(10, np.int64)
    hist[[0, 9]] = [999, 1]
    assert percentile_threshold_bins(hist, 99.9) == 1
    assert percentile_threshold_bins(hist, 100.0) == 10


def test_signed_tensor_ranges_are_symmetric() -> None:
    rng = np.random.default_rng(3)
    stats = _hist_of(rng.uniform(-1.0, 3.0, 100_000))
    trt = compute_range(stats, "minmax", "tensorrt")
    assert (
        trt.signed
        and trt.low == pytest.approx(-trt.high)
        and trt.high == pytest.approx(3.0, abs=1e-3)
    )


def test_unknown_method_is_an_input_error() -> None:
    with pytest.raises(InputError, match="entropy, minmax, percentile"):
        CalibrationOptions(method="kl")
    with pytest.raises(InputError, match="unknown Q/DQ target 'onnxruntime': use one of tensorrt"):
        CalibrationOptions(target="onnxruntime")  # one INT8 file, no uint8 form


# -- streaming statistics -----------------------------------------------------------------------


def test_histogram_grows_by_rebinning_and_keeps_every_count() -> None:
    stats = TensorStats.empty("t")
    stats.update(np.full(1000, 0.5, np.float32))
    stats.update(np.linspace(0, 1.0, 1000, dtype=np.float32))
    first_max = stats.hist_max
    stats.update(np.full(10, 3.5 * first_max, np.float32))
    assert stats.hist_max == pytest.approx(4 * first_max)  # grown by a power of two
    assert stats.hist.size == NUM_BINS
    assert stats.hist.sum() + stats.zeros == stats.count == 2010
    assert stats.zeros == 1  # linspace's 0.0, counted apart from the histogram
    # The 1000 values of 0.5 sat at the top edge of the first range (bin 2047); after two
    # regrowths (x2, then x4) they are in bin 255, one bin-width below 0.5 at most.
    assert stats.hist[255] >= 1000 and 255 * stats.bin_width <= 0.5 <= 257 * stats.bin_width
    assert stats.hist[-NUM_BINS // 8 :].sum() == 10


def test_collector_state_does_not_grow_with_samples() -> None:
    rng = np.random.default_rng(4)
    collector = HistogramCollector(["a", "b"])
    collector.update({"a": rng.standard_normal((2, 8, 8, 8)), "b": rng.random((2, 64))})
    size_after_one = collector.state_nbytes()
    for _ in range(60):
        collector.update({"a": rng.standard_normal((2, 8, 8, 8)), "b": rng.random((2, 64))})
    assert collector.state_nbytes() == size_after_one
    assert all(s.hist.size == NUM_BINS for s in collector.stats.values())
    assert collector.stats["a"].count == 61 * 2 * 512
    # Serialised state is bounded by the bin count too.
    for entry in collector.to_dict().values():
        assert len(entry["hist"]) <= NUM_BINS
    restored = HistogramCollector.from_dict(json.loads(json.dumps(collector.to_dict())))
    assert np.array_equal(restored.stats["a"].hist, collector.stats["a"].hist)


def test_calibration_tensors_are_conv_and_gemm_inputs(tiny_bundle_ro: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_bundle_ro / "model.onnx"))
    names = select_calibration_tensors(model)
    quantizable = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert names[0] == "input"
    assert len(names) == len(quantizable)  # VGG: one activation per weighted layer


# -- data ---------------------------------------------------------------------------------------


def test_holdout_is_disjoint_and_the_draw_reproducible(image_dir: Path) -> None:
    split = split_images(image_dir, SAMPLES, seed=0)
    assert len(split.calibration) == SAMPLES
    assert len(split.holdout) == N_IMAGES - SAMPLES
    assert not set(split.calibration) & set(split.holdout)
    assert split_images(image_dir, SAMPLES, seed=0).calibration == split.calibration
    assert split_images(image_dir, SAMPLES, seed=1).calibration != split.calibration
    assert len(split_images(image_dir, SAMPLES, seed=0, holdout=5).holdout) == 5
    # more than the folder has: a quarter (10) is held out, the rest (30) calibrate
    short = split_images(image_dir, 41)
    assert (len(short.calibration), len(short.holdout), short.asked) == (30, 10, 41)
    assert short.short and not split.short
    with pytest.raises(InputError, match="--holdout 40 leaves none of the 40 images"):
        split_images(image_dir, SAMPLES, holdout=N_IMAGES)


@pytest.mark.parametrize(
    ("available", "samples", "holdout", "expected"),
    [
        (80, 512, None, (60, 20)),  # the README's example folder: a quarter held out
        (11, 64, None, (8, 3)),  # the shipped photographs in the pipeline
        (1000, 512, None, (512, 64)),
        (1000, 64, None, (64, 64)),
        (3, 512, None, (3, 0)),  # too few to hold any out
        (80, 512, 0, (80, 0)),
        (80, 10, 5, (10, 5)),
        (80, 512, 5, (75, 5)),
    ],
)
def test_split_counts_rule(
    available: int, samples: int, holdout: int | None, expected: tuple[int, int]
) -> None:
    assert split_counts(available, samples, holdout) == expected


@given(
    available=st.integers(1, 3000),
    samples=st.integers(1, 5000),
    holdout=st.none() | st.integers(0, 3000),
)
def test_split_counts_never_overdraws(available: int, samples: int, holdout: int | None) -> None:
    """Calibration never exceeds --samples, the two sets fit the folder, at least one image
    calibrates, and the pipeline's count is calibrate's."""
    from vggdeploy.pipeline.options import calibration_split

    if holdout is not None and holdout >= available:
        with pytest.raises(InputError, match="leaves none"):
            split_counts(available, samples, holdout)
        return
    used, held = split_counts(available, samples, holdout)
    assert 1 <= used <= samples and used + held <= available
    assert held == holdout if holdout is not None else held <= 64
    if holdout is None:
        assert calibration_split(available, samples) == used
        if samples >= available:  # short folders always keep something back from 4 images
            assert (held > 0) == (available >= 4)


def test_reader_contract(image_dir: Path) -> None:
    paths = split_images(image_dir, 10).calibration
    reader = ImageBatchReader(paths, Preprocessing.for_size(32), "input", batch_size=4)
    shapes = []
    while (feed := reader.get_next()) is not None:
        assert list(feed) == ["input"]
        shapes.append(feed["input"].shape)
    assert shapes == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert len(reader) == 3 and reader.get_next() is None
    assert len(list(reader)) == 3  # iterating rewinds


# -- calibrate_bundle: targets, verification, manifest, cache -----------------------------------


def test_the_int8_file_is_written_verified_and_run(tiny_bundle: Path, image_dir: Path) -> None:
    import onnx
    import onnxruntime as ort

    bundle = Bundle.load(tiny_bundle)
    trt = calibrate_bundle(bundle, image_dir, _options())
    assert Path(trt["path"]).name == "model.int8.onnx"
    bundle = Bundle.load(tiny_bundle)
    assert {"onnx.fp32", "onnx.int8"} <= set(bundle.artifacts)
    assert [k for k in bundle.artifacts if k.startswith("onnx.int8")] == ["onnx.int8"]
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    for key, target, zp_type in (("onnx.int8", "tensorrt", onnx.TensorProto.INT8),):
        path = bundle.artifact_path(key, verify=True)
        model = onnx.load(str(path))
        assert verify_qdq(model, target) == []
        inits = {i.name: i for i in model.graph.initializer}
        act_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert act_q and all(inits[n.input[2]].data_type == zp_type for n in act_q)
        # Weights are int8 initializers; no float conv/gemm weight is left.
        weight_dq = [
            n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
        ]
        assert len(weight_dq) == trt["quantized_ops"]
        assert all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in weight_dq)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"input": x})[0]
        assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    assert trt["holdout"]["cosine_mean"] > 0.95


def test_verify_qdq_rejects_broken_files(tiny_bundle: Path, image_dir: Path) -> None:
    import onnx
    from onnx import numpy_helper

    bundle = Bundle.load(tiny_bundle)
    calibrate_bundle(bundle, image_dir, _options(method="minmax"))
    good = onnx.load(str(tiny_bundle / "model.int8.onnx"))
    assert verify_qdq(good, "tensorrt") == []

    def broken(change) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(good)
        change(model)
        return model

    def act_zero_point(model: onnx.ModelProto) -> onnx.TensorProto:
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        return next(i for i in model.graph.initializer if i.name == q.input[2])

    def zero_point_one(model: onnx.ModelProto) -> None:
        act_zero_point(model).CopyFrom(
            numpy_helper.from_array(np.array(1, np.int8), act_zero_point(model).name)
        )

    def uint8_zero_point(model: onnx.ModelProto) -> None:
        act_zero_point(model).CopyFrom(
            numpy_helper.from_array(np.array(0, np.uint8), act_zero_point(model).name)
        )

    def wrong_axis(model: onnx.ModelProto) -> None:
        dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.attribute)
        dq.attribute[0].i = 1

    def float_weight(model: onnx.ModelProto) -> None:
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
        weight = next(i for i in model.graph.initializer if i.name == dq.input[0])
        model.graph.initializer.append(
            numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float32), "w_float")
        )
        conv.input[1] = "w_float"

    def negative_scale(model: onnx.ModelProto) -> None:
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
        scale = next(i for i in model.graph.initializer if i.name == q.input[1])
        scale.CopyFrom(numpy_helper.from_array(np.array(-0.1, np.float32), scale.name))

    assert any("zero point must be 0" in p for p in verify_qdq(broken(zero_point_one), "tensorrt"))
    assert any("must be int8" in p for p in verify_qdq(broken(uint8_zero_point), "tensorrt"))
    assert any("axis" in p for p in verify_qdq(broken(wrong_axis), "tensorrt"))
    assert any(
        "weight input is not dequantized" in p for p in verify_qdq(broken(float_weight), "tensorrt")
    )
    assert any("positive" in p for p in verify_qdq(broken(negative_scale), "tensorrt"))
    fp32 = onnx.load(str(tiny_bundle / "model.onnx"))
    assert any("not quantized" in p for p in verify_qdq(fp32, "tensorrt"))


def test_per_channel_weight_quantization_round_trips() -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * np.arange(1, 7).reshape(6, 1, 1, 1)
    q, scale = quantize_weight(w, axis=0)
    assert q.dtype == np.int8 and q.min() >= -127 and scale.shape == (6,)
    assert np.allclose(np.abs(q).reshape(6, -1).max(axis=1), 127)
    err = np.abs(q * scale.reshape(6, 1, 1, 1) - w)
    assert np.all(err <= scale.reshape(6, 1, 1, 1) / 2 + 1e-7)
    gemm = rng.standard_normal((4, 8)).astype(np.float32)
    _, scale_k = quantize_weight(gemm.T, axis=1)  # Gemm with transB=0: weight (K, N), axis 1
    assert scale_k.shape == (4,)


def test_manifest_records_calibration_and_holdout(tiny_bundle: Path, image_dir: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    summary = calibrate_bundle(
        bundle, image_dir, _options(method="percentile", percentile=99.9, holdout=10)
    )
    record = Bundle.load(tiny_bundle).artifact("onnx.int8")
    assert record.precision == "int8" and record.target == "tensorrt"
    calib = record.calibration
    assert calib["method"] == "percentile" and calib["percentile"] == 99.9
    assert calib["samples"] == SAMPLES and calib["tensors"] == summary["tensors"] > 0
    assert len(calib["data_sha256"]) == 64
    held = record.holdout
    assert held["images"] == 10
    for key in ("cosine", "cosine_mean", "top1_agreement", "top5_overlap", "passed", "tolerance"):
        assert key in held
    assert 0.0 <= held["top5_overlap"] <= 1.0


def test_cache_reuse_skips_the_data_pass(
    tiny_bundle: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vggdeploy.calibration.stage as calibration

    runs = []
    real = calibration.collect_statistics

    def counting(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration, "collect_statistics", counting)
    bundle = Bundle.load(tiny_bundle)
    first = calibrate_bundle(bundle, image_dir, _options())
    assert len(runs) == 1 and not first["cache_reused"]
    second = calibrate_bundle(bundle, image_dir, _options(method="minmax"))
    assert len(runs) == 1 and second["cache_reused"]
    assert Path(second["cache"]) == tiny_bundle / "calibration.cache.json"
    cache = json.loads((tiny_bundle / "calibration.cache.json").read_text())
    assert {"entropy/tensorrt", "minmax/tensorrt"} <= set(cache["ranges"])
    # Another draw of images does not match the default cache: it is recomputed, not reused.
    calibrate_bundle(bundle, image_dir, _options(seed=7))
    assert len(runs) == 2


def test_stale_cache_is_refused(tiny_bundle: Path, image_dir: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    cache = tmp_path / "calib.json"
    calibrate_bundle(bundle, image_dir, _options(cache=cache))
    data = json.loads(cache.read_text())
    data["model_sha256"] = "0" * 64
    cache.write_text(json.dumps(data))
    with pytest.raises(InputError, match="different model.*--cache"):
        calibrate_bundle(bundle, image_dir, _options(cache=cache))
    # Same model, but the images changed: refused too.
    data["model_sha256"] = bundle.artifact("onnx.fp32").sha256
    data["data_sha256"] = "1" * 64
    cache.write_text(json.dumps(data))
    with pytest.raises(InputError, match="different calibration images"):
        calibrate_bundle(bundle, image_dir, _options(cache=cache))
    cache.write_text("{not json")
    with pytest.raises(InputError, match="is damaged.*delete it or pass another --cache"):
        calibrate_bundle(bundle, image_dir, _options(cache=cache))


def test_below_tolerance_warns_loudly(
    tiny_bundle: Path,
    image_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import vggdeploy.calibration.stage as calibration

    monkeypatch.setattr(calibration, "int8_tolerance", lambda: {"cosine": 1.1, "top1": 1.1})
    with caplog.at_level(logging.WARNING, logger="vggdeploy"):
        summary = calibrate_bundle(Bundle.load(tiny_bundle), image_dir, _options())
    assert summary["holdout"]["passed"] is False
    assert summary["warnings"] and "INT8 ACCURACY WARNING" in summary["warnings"][0]
    assert any("INT8 ACCURACY WARNING" in r.getMessage() for r in caplog.records)


def test_too_few_held_out_images_give_no_verdict_and_no_warning(
    tiny_bundle: Path,
    image_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """5 held-out images cannot judge top-1 agreement 0.9 (one disagreeing image is 0.8): no
    verdict, no warning, and the record says how many a verdict needs."""
    import vggdeploy.calibration.stage as calibration
    from vggdeploy.report.calibrate import render_calibration

    monkeypatch.setattr(calibration, "int8_tolerance", lambda: {"cosine": 1.1, "top1": 0.9})
    with caplog.at_level(logging.WARNING, logger="vggdeploy"):
        summary = calibrate_bundle(Bundle.load(tiny_bundle), image_dir, _options(holdout=5))
    held = summary["holdout"]
    assert held["images"] == 5 and held["passed"] is None and held["images_needed"] == 10
    assert "5 images cannot judge this: a verdict needs at least 10" in held["unjudged"]
    assert summary["warnings"] == [] and not caplog.records
    assert "- not judged: 5 images cannot judge this" in render_calibration(summary)


def test_progress_callback_counts_every_calibration_image(
    tiny_bundle: Path, image_dir: Path
) -> None:
    seen: list[int] = []
    calibrate_bundle(Bundle.load(tiny_bundle), image_dir, _options(progress=seen.append))
    assert sum(seen) == SAMPLES and all(0 < n <= 8 for n in seen)


def test_no_holdout_images_skips_the_comparison_with_a_warning(
    tiny_bundle: Path, image_dir: Path
) -> None:
    summary = calibrate_bundle(
        Bundle.load(tiny_bundle), image_dir, _options(samples=N_IMAGES, holdout=0)
    )
    assert summary["holdout"]["images"] == 0
    assert any("skipped" in w for w in summary["warnings"])


# -- CLI ----------------------------------------------------------------------------------------


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from vggdeploy.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_calibrate(
    tiny_bundle: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run_cli(
        [
            "calibrate",
            str(tiny_bundle),
            "--images",
            str(image_dir),
            "--samples",
            "24",
            "--json",
            "-",
        ],
        capsys,
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["artifact"] == "onnx.int8" and summary["holdout"]["images"] == N_IMAGES - 24


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "kl"], "unknown --method 'kl'"),
        (["--samples", "0"], "--samples 0"),
        (["--percentile", "120", "--method", "percentile"], "--percentile 120"),
    ],
)
def test_cli_bad_options_one_line(
    tiny_bundle: Path,
    image_dir: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code, _, err = _run_cli(
        ["calibrate", str(tiny_bundle), "--images", str(image_dir), *extra], capsys
    )
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error:") and message in err


def test_cli_has_no_target_option(
    tiny_bundle: Path, image_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One INT8 file: `--target onnxruntime` (the old uint8 form) is gone."""
    args = ["calibrate", str(tiny_bundle), "--images", str(image_dir), "--target", "onnxruntime"]
    code, _, err = _run_cli(args, capsys)
    assert code == 2 and "No such option '--target'" in err
    assert not (tiny_bundle / "model.int8-u8.onnx").exists()


def test_cli_no_images_one_line(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    code, _, err = _run_cli(["calibrate", str(tiny_bundle), "--images", str(empty)], capsys)
    assert code == 1 and err.count("\n") == 1 and "no images found" in err
    assert not (tiny_bundle / "model.int8.onnx").exists()


# -- CPU-aware integer kernels (7-bit weights where the CPU has no int8 dot product) ----------


def test_weight_bits_choice_rules() -> None:
    from vggdeploy.calibration import cpu_kernels
    from vggdeploy.host import CpuInfo

    avx2 = CpuInfo("old cpu", frozenset({"avx2"}))
    vnni = CpuInfo("new cpu", frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert not avx2.int8_dot_product and vnni.int8_dot_product and vnni.has_avx512
    assert cpu_kernels.candidates("auto", avx2, True) == [8, 7]
    assert cpu_kernels.candidates("auto", avx2, False) == [8]
    assert cpu_kernels.candidates("auto", vnni, True) == [8]
    assert cpu_kernels.candidates(7, vnni, True) == [7]
    with pytest.raises(InputError):
        cpu_kernels.candidates("6", avx2, True)

    def fig(top1: float, mean: float, low: float) -> dict[str, float]:
        return {"top1_agreement": top1, "cosine_mean": mean, "cosine_min": low}

    assert cpu_kernels.choose({8: fig(0.9, 0.99, 0.98), 7: fig(1.0, 0.98, 0.97)}) == 7
    assert cpu_kernels.choose({8: fig(1.0, 0.9976, 0.994), 7: fig(1.0, 0.9987, 0.996)}) == 7
    assert cpu_kernels.choose({8: fig(1.0, 0.99900, 0.99), 7: fig(1.0, 0.99905, 0.99)}) == 8  # tie
    assert cpu_kernels.choose({8: fig(1.0, 0.999, 0.99)}) == 8


def test_cpu_without_vnni_measures_both_weight_ranges(
    tiny_bundle: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vggdeploy.calibration import stage
    from vggdeploy.host import CpuInfo

    monkeypatch.setattr(stage, "cpu", lambda: CpuInfo("AVX2 test CPU", frozenset({"avx2"})))
    summary = calibrate_bundle(Bundle.load(tiny_bundle), image_dir, _options(method="minmax"))
    record = Bundle.load(tiny_bundle).artifact("onnx.int8")
    kernels = record.cpu_kernels
    assert kernels["cpu"] == "AVX2 test CPU" and kernels["features"] == ["avx2"]
    assert set(kernels["chosen_by"]["candidates"]) == {"8", "7"}
    assert kernels["weights_bits"] == summary["weight_bits"] in (7, 8)
    assert (kernels["weights_bits"] == 7) == ("tensorrt" in kernels)
    assert not list(tiny_bundle.glob(".model.int8.onnx*"))  # no candidate left behind


def test_vnni_cpu_and_forced_widths(tiny_bundle: Path, image_dir: Path, monkeypatch) -> None:
    import onnx
    from onnx import numpy_helper

    from vggdeploy.calibration import stage
    from vggdeploy.host import CpuInfo

    vnni = CpuInfo("VNNI test CPU", frozenset({"avx2", "avx512_vnni"}))
    monkeypatch.setattr(stage, "cpu", lambda: vnni)
    bundle = Bundle.load(tiny_bundle)
    summary = calibrate_bundle(bundle, image_dir, _options(method="minmax"))
    assert summary["cpu_kernels"]["weights_bits"] == 8
    assert list(summary["cpu_kernels"]["chosen_by"]["candidates"]) == ["8"]
    summary = calibrate_bundle(bundle, image_dir, _options(method="minmax", weight_bits=7))
    assert summary["weight_bits"] == 7 and "tensorrt" in summary["cpu_kernels"]
    model = onnx.load(str(tiny_bundle / "model.int8.onnx"))
    assert verify_qdq(model, "tensorrt") == []
    ints = [
        numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1
    ]
    assert max(int(np.abs(w).max()) for w in ints) == 63
    with pytest.raises(InputError):
        _options(weight_bits="9")


def test_a_cache_for_other_options_names_the_option_not_the_files(
    tiny_bundle: Path, image_dir: Path, tmp_path: Path
) -> None:
    bundle = Bundle.load(tiny_bundle)
    cache = tmp_path / "calib.json"
    calibrate_bundle(bundle, image_dir, _options(cache=cache))
    # Fewer samples draw other images, so the data digest differs too: that is not a change
    # of the files, and the error says which option changed instead.
    with pytest.raises(InputError) as exc:
        calibrate_bundle(bundle, image_dir, _options(cache=cache, samples=SAMPLES - 1))
    text = str(exc.value)
    assert f"made for --samples {SAMPLES} (this run: {SAMPLES - 1})" in text
    assert "contents changed" not in text
    with pytest.raises(InputError) as exc:
        calibrate_bundle(bundle, image_dir, _options(cache=cache, seed=5, batch_size=4))
    text = str(exc.value)
    assert "--batch 8 (this run: 4)" in text and "--seed 0 (this run: 5)" in text
    assert "contents changed" not in text


def test_the_fp32_model_is_parsed_once_for_tensors_and_data_pass(
    tiny_bundle: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data pass runs the model the calibrated tensors were chosen from (one parse of the
    fp32 file before the Q/DQ model is written), and its ranges are those of a fresh parse."""
    import onnx

    from vggdeploy.calibration import stage

    events: list[str] = []
    real_load, real_collect = onnx.load, stage.collect_statistics
    seen: list[int] = []

    def load(path, *args, **kwargs):
        if kwargs.get("load_external_data", True):  # not the bundle's external-data check
            events.append("load")
        return real_load(path, *args, **kwargs)

    def collect(model, *args, **kwargs):
        events.append("collect")
        seen.append(id(model))
        fresh = real_collect(real_load(str(fp32)), *args, **kwargs)  # what a fresh parse gives
        reused = real_collect(model, *args, **kwargs)
        for name in fresh.stats:
            assert np.array_equal(fresh.stats[name].hist, reused.stats[name].hist), name
        return reused

    bundle = Bundle.load(tiny_bundle)
    fp32 = bundle.artifact_path("onnx.fp32")
    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(stage, "collect_statistics", collect)
    calibrate_bundle(bundle, image_dir, _options())
    assert events[:2] == ["load", "collect"], events
    events.clear()
    calibrate_bundle(Bundle.load(tiny_bundle), image_dir, _options())  # the cache is reused
    assert "collect" not in events
