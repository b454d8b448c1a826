"""DeepStream nvinfer packages: the config's keys, the labels file, baked normalization.

No DeepStream here: the config is checked against the documented keys (configparser reads it
as nvinfer's GKeyFile does), and the baked ONNX runs in ONNX Runtime. Engines are fake records
(`packaging_helpers.add_engine`), as in the Triton tests: nothing here builds or runs one.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest
from packaging_helpers import add_engine, add_onnx_copy, run_cli

from vggdeploy.bundle import Bundle
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.packaging import (
    BakedNormalization,
    DeepStreamOptions,
    bake_normalization,
    closest_scale,
    package_deepstream,
)
from vggdeploy.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

MODES = {"fp32": "0", "int8": "1", "fp16": "2"}


def read_config(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(path.read_text("utf-8"))
    assert parser.sections() == ["property"]
    return dict(parser["property"])


@pytest.fixture(scope="module")
def int8_bundle_ro(tiny_bundle_ro: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a real Q/DQ file for TensorRT, calibrated on the shipped photos."""
    import shutil

    from vggdeploy.calibration.stage import CalibrationOptions, calibrate_bundle
    from vggdeploy.inputs import default_images_dir

    root = tmp_path_factory.mktemp("ds_int8") / "bundle"
    shutil.copytree(tiny_bundle_ro, root)
    calibrate_bundle(
        Bundle.load(root),
        default_images_dir(),
        CalibrationOptions(samples=8, holdout=3, batch_size=4, progress=False),
    )
    return root


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_config_keys_without_engine(tiny_bundle: Path, tmp_path: Path, precision: str) -> None:
    if precision != "fp32":
        add_onnx_copy(tiny_bundle, precision)
    out = tmp_path / "ds"
    result = package_deepstream(tiny_bundle, out, DeepStreamOptions(precision=precision))
    props = read_config(out / "config_infer_primary.txt")
    onnx_name = "model.onnx" if precision == "fp32" else "model.fp16.onnx"
    assert props["onnx-file"] == onnx_name
    assert (out / onnx_name).read_bytes() == (tiny_bundle / onnx_name).read_bytes()
    assert "model-engine-file" not in props
    assert props["network-mode"] == MODES[precision]
    assert props["network-type"] == "1" and props["process-mode"] == "1"
    assert props["labelfile-path"] == "labels.txt" and (out / "labels.txt").is_file()
    assert props["infer-dims"] == "3;32;32" and props["batch-size"] == "1"
    assert props["model-color-format"] == "0"  # RGB
    assert props["output-blob-names"] == "logits" and props["gpu-id"] == "0"
    assert float(props["classifier-threshold"]) == 0.0
    assert props["maintain-aspect-ratio"] == "0"
    offsets = [float(v) for v in props["offsets"].split(";")]
    assert offsets == pytest.approx([255 * m for m in IMAGENET_MEAN], rel=1e-7)
    std = (min(IMAGENET_STD) + max(IMAGENET_STD)) / 2
    assert float(props["net-scale-factor"]) == pytest.approx(1 / (255 * std), rel=1e-7)
    # one warning line, saying the per-channel std cannot be expressed and what it costs
    assert len(result.warnings) == 1 and "cannot be expressed" in result.warnings[0]
    assert "\n" not in result.warnings[0] and "1.10%" in result.warnings[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files)


def test_closest_scale_minimises_the_worst_channel() -> None:
    choice = closest_scale(IMAGENET_STD)
    assert max(choice.relative_error) == pytest.approx(0.229 / 0.2265 - 1)
    for other in (np.mean(IMAGENET_STD), np.exp(np.mean(np.log(IMAGENET_STD)))):
        assert max(abs(s / other - 1) for s in IMAGENET_STD) > max(choice.relative_error)
    assert max(closest_scale((0.5, 0.5, 0.5)).relative_error) == 0.0


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_config_with_engine(tiny_bundle: Path, tmp_path: Path, precision: str) -> None:
    if precision != "fp32":
        add_onnx_copy(tiny_bundle, precision, target="tensorrt" if precision == "int8" else None)
    add_engine(tiny_bundle, f"engine.{precision}", "8.7", max_batch=16)
    out = tmp_path / "ds"
    result = package_deepstream(
        tiny_bundle, out, DeepStreamOptions(precision=precision, batch=8, secondary=True)
    )
    props = read_config(out / "config_infer_secondary.txt")
    engine = f"model.{precision}.engine"
    assert props["model-engine-file"] == engine
    assert (out / engine).read_bytes() == (tiny_bundle / engine).read_bytes()
    assert props["network-mode"] == MODES[precision] and props["batch-size"] == "8"
    assert props["process-mode"] == "2" and props["operate-on-gie-id"] == "1"
    assert result.engine_source == f"engine.{precision} ({engine})"
    assert "int8-calib-file" not in props


def test_refusals_are_one_line(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    add_engine(tiny_bundle, "engine.fp32", "8.7", max_batch=16)
    out = tmp_path / "ds"
    cases = [
        (["--batch", "32"], "outside the fp32 engine's optimization profile (batch 1..16)"),
        (["--precision", "int4"], "fp32, fp16, int8"),
        (["--precision", "int8-u8"], "fp32, fp16, int8"),  # one INT8 file
        (["--precision", "fp16"], "vggdeploy convert"),  # no fp16 file: the command making it
        (["--color-format", "bgr"], "--bake-normalization"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(
            ["package", str(tiny_bundle), "--format", "deepstream", "--out", str(out), *extra],
            capsys,
        )
        assert code == 1 and message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(
        ["package", str(tiny_bundle), "--format", "deepstream", "--out", str(out)], capsys
    )
    assert code == 1 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    # a failure with --force leaves the old folder as it was
    code, _, err = run_cli(
        ["package", str(tiny_bundle), "--format", "deepstream", "--out", str(out), "--force",
         "--batch", "99"],
        capsys,
    )  # fmt: skip
    assert code == 1 and (out / "keep.txt").read_text() == "mine"
    code, stdout, _ = run_cli(
        ["package", str(tiny_bundle), "--format", "deepstream", "--out", str(out), "--force"],
        capsys,
    )
    assert code == 0 and not (out / "keep.txt").exists()
    assert "model-engine-file" in stdout and "warning:" in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    code, _, err = run_cli(
        ["package", str(tiny_bundle), "--out", str(tmp_path / "t"), "--bake-normalization"],
        capsys,
    )
    assert code == 1 and "only for --format deepstream" in err


def test_labels_file_is_one_line_separated_by_semicolons(tiny_bundle: Path, tmp_path: Path) -> None:
    labels = [f"class {i}" for i in range(9)] + ["a;b"]
    Bundle.load(tiny_bundle).write_labels(labels)
    result = package_deepstream(tiny_bundle, tmp_path / "ds", DeepStreamOptions())
    text = (tmp_path / "ds" / "labels.txt").read_text()
    assert text.count("\n") == 1
    assert text.rstrip("\n").split(";") == [*labels[:9], "a,b"]
    assert any("';'" in n for n in result.notes)


def _ort(model, x: np.ndarray) -> np.ndarray:
    from vggdeploy.ortsession import cpu_session

    session = cpu_session(model.SerializeToString())
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_baked_onnx_is_exact_on_random_pixels(tiny_bundle_ro: Path, order: str) -> None:
    """Raw 0..255 pixels through the baked file equal the bundle's model on the same pixels
    normalized by the bundle's preprocessing (channels reordered when the pipeline's order
    differs)."""
    import onnx

    bundle = Bundle.load(tiny_bundle_ro)
    pre = bundle.preprocessing
    model = onnx.load(str(bundle.artifact_path("onnx.fp32", verify=True)))
    norm = BakedNormalization.from_preprocessing(pre, order)
    baked = bake_normalization(model, norm)
    onnx.checker.check_model(baked, full_check=True)
    assert [i.name for i in baked.graph.input] == ["input"]
    raw = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32)).astype(np.float32)
    rgb = raw[:, ::-1] if order == "BGR" else raw
    mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1)
    ref = _ort(model, (rgb * np.float32(pre.scale) - mean) / std)
    got = _ort(baked, raw)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_bake_matches_a_bgr_bundle(tiny_bundle_ro: Path) -> None:
    bgr = Preprocessing(resize=32, crop=32, channel_order="BGR")
    norm = BakedNormalization.from_preprocessing(bgr, "RGB")
    raw = np.random.default_rng(1).integers(0, 256, (2, 3, 8, 8)).astype(np.float32)
    expected = (raw[:, ::-1] / 255 - np.asarray(IMAGENET_MEAN[::-1]).reshape(1, 3, 1, 1)) / (
        np.asarray(IMAGENET_STD[::-1]).reshape(1, 3, 1, 1)
    )
    np.testing.assert_allclose(norm.apply(raw), expected, rtol=1e-5, atol=1e-5)


def test_baked_package_cli(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    add_engine(tiny_bundle, "engine.fp32", "8.7")
    out = tmp_path / "ds"
    code, stdout, _ = run_cli(
        ["package", str(tiny_bundle), "--format", "deepstream", "--out", str(out),
         "--bake-normalization", "--color-format", "bgr", "--maintain-aspect-ratio"],
        capsys,
    )  # fmt: skip
    assert code == 0, stdout
    props = read_config(out / "config_infer_primary.txt")
    assert props["onnx-file"] == "model.baked.onnx" and (out / "model.baked.onnx").is_file()
    assert props["net-scale-factor"] == "1" and props["offsets"] == "0;0;0"
    assert props["model-color-format"] == "1"
    assert props["maintain-aspect-ratio"] == "1" and props["symmetric-padding"] == "1"
    assert "model-engine-file" not in props  # the engine expects normalized input
    assert "warning:" not in stdout and "baked normalization checked" in stdout
    assert not (out / "model.fp32.engine").exists()


def test_baked_parity_failure_writes_nothing(
    tiny_bundle: Path, tmp_path: Path, monkeypatch
) -> None:
    from vggdeploy.packaging import bake

    monkeypatch.setattr(
        bake.BakedNormalization, "apply", lambda self, raw: raw.astype(np.float32) / 255
    )
    real = bake.bake_normalization

    def wrong(model, norm):
        return real(model, BakedNormalization(norm.input_order, "BGR", 1.0, (0, 0, 0), (1, 1, 1)))

    monkeypatch.setattr(bake, "bake_normalization", wrong)
    with pytest.raises(CheckFailedError, match="does not match"):
        package_deepstream(tiny_bundle, tmp_path / "ds", DeepStreamOptions(bake_normalization=True))
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.*"))


def test_baked_int8_keeps_qdq_and_runs(int8_bundle_ro: Path, tmp_path: Path) -> None:
    import onnx

    from vggdeploy.calibration.qdq import verify_qdq

    out = tmp_path / "ds"
    result = package_deepstream(
        int8_bundle_ro, out, DeepStreamOptions(precision="int8", bake_normalization=True)
    )
    props = read_config(out / "config_infer_primary.txt")
    assert props["network-mode"] == "1" and props["onnx-file"] == "model.int8.baked.onnx"
    baked = onnx.load(str(out / "model.int8.baked.onnx"))
    assert verify_qdq(baked, "tensorrt") == []
    ops = [n.op_type for n in baked.graph.node]
    assert ops[:4] == ["Mul", "Sub", "Div", "QuantizeLinear"]  # the first Q stays on the conv input
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.float32)
    assert np.isfinite(_ort(baked, raw)).all()
    assert result.parity is not None and result.parity["top1"] == 1.0


def test_options_refuse_bad_values() -> None:
    with pytest.raises(InputError, match="fp32, fp16, int8"):
        DeepStreamOptions(precision="int4")
    with pytest.raises(InputError, match="positive"):
        DeepStreamOptions(batch=0)
    with pytest.raises(InputError, match="rgb or bgr"):
        DeepStreamOptions(color_format="gray")
