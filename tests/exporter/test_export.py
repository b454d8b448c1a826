"""`export_bundle`: the checked ONNX file, its manifest and metadata, and every refusal."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from waiting import wait_for_size

from vggdeploy.bundle import LOCK_NAME, Bundle, sha256_file
from vggdeploy.errors import CheckFailedError, InputError
from vggdeploy.exporter import onnx_export
from vggdeploy.exporter.onnx_export import (
    DENSE_CHECK_SIZES,
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_MAX_REL,
    PARITY_MIN_COSINE,
    ExportOptions,
    export_bundle,
    imagenet_labels,
)
from vggdeploy.metrics import compare_arrays
from vggdeploy.models import count_flops, count_parameters, random_state_dict, resolve_spec
from vggdeploy.weights import WeightsSource, load_model, state_dict_sha256

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10}
RANDOM = WeightsSource("random", seed=0)


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# -- the shared tiny bundle (vgg11_bn, 32x32, dynamic batch) ----------------------------------


def _files(folder: Path) -> list[str]:
    """The bundle's files, without the manifest's lock file (an empty file the OS locks)."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


def test_bundle_holds_exactly_the_model_and_manifest(tiny_bundle_ro: Path) -> None:
    assert _files(tiny_bundle_ro) == ["manifest.json", "model.onnx"]
    for path in tiny_bundle_ro.iterdir():
        assert path.stat().st_mode & 0o044 == 0o044 & ~_umask()  # readable like normal files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_manifest_fields(tiny_bundle_ro: Path) -> None:
    m = _manifest(tiny_bundle_ro)
    assert m["schema_version"] == 1
    for lib in ("vggdeploy", "torch", "onnx", "onnxscript", "onnxruntime", "python"):
        assert m["created_by"][lib]
    spec = resolve_spec("vgg11_bn", **TINY)
    model = m["model"]
    assert {k: model[k] for k in spec.to_dict()} == spec.to_dict()
    assert model["dense"] is False and model["image_size"] == 32
    assert model["parameters"] == count_parameters(spec)
    assert model["flops_per_image"] == count_flops(spec, 32)
    assert model["weight_layers"] == 11
    assert {k: m["weights"][k] for k in ("source", "seed", "sha256_of")} == {
        "source": "random",
        "seed": 0,
        "sha256_of": "tensors",
    }
    assert m["weights"]["sha256"] == state_dict_sha256(random_state_dict(spec, 0))
    assert m["preprocessing"]["crop"] == 32 and m["preprocessing"]["resize"] == 37
    assert m["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert m["preprocessing"]["channel_order"] == "RGB"
    assert m["labels"] is None
    assert m["io"] == {
        "inputs": [{"name": INPUT_NAME, "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": ["batch", 10], "dtype": "float32"}],
    }
    assert m["export"]["opset"] == 18 and m["export"]["exporter"] == "torch.onnx dynamo"
    assert m["export"]["seconds"] > 0


def test_artifact_record_matches_the_file(tiny_bundle_ro: Path) -> None:
    bundle = Bundle.load(tiny_bundle_ro)
    record = bundle.artifact("onnx.fp32")
    path = tiny_bundle_ro / "model.onnx"
    assert record.path == "model.onnx"
    assert record.sha256 == sha256_file(path)
    assert record.size == path.stat().st_size
    assert (record.kind, record.precision, record.opset) == ("onnx", "fp32", 18)
    assert bundle.artifact_path("onnx.fp32", verify=True) == path


def test_parity_is_recorded_for_every_checked_shape(tiny_bundle_ro: Path) -> None:
    parity = _manifest(tiny_bundle_ro)["parity"]
    assert parity["passed"] is True
    assert parity["thresholds"] == {"max_rel": PARITY_MAX_REL, "min_cosine": PARITY_MIN_COSINE}
    assert parity["thresholds"] == {"max_rel": 1e-4, "min_cosine": 0.9999}
    assert "CPUExecutionProvider" in parity["runtime"]
    shapes = [(c["batch"], c["height"], c["width"]) for c in parity["checks"]]
    assert shapes == [(1, 32, 32), (3, 32, 32)]
    for check in parity["checks"]:
        assert check["passed"] and check["max_rel"] <= 1e-4 and check["cosine"] >= 0.9999
    assert parity["worst_max_rel"] == max(c["max_rel"] for c in parity["checks"])
    assert parity["worst_cosine"] == min(c["cosine"] for c in parity["checks"])


def test_onnx_is_checked_self_contained_and_carries_metadata(tiny_bundle_ro: Path) -> None:
    import onnx

    path = tiny_bundle_ro / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    )
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["vggdeploy.model"] == "vgg11_bn"
    assert meta["vggdeploy.config"] == "A"
    assert meta["vggdeploy.batch_norm"] == "true"
    assert meta["vggdeploy.num_classes"] == "10"
    assert meta["vggdeploy.dense"] == "false"
    assert meta["vggdeploy.image_size"] == "32"
    assert json.loads(meta["vggdeploy.preprocessing"]) == _manifest(tiny_bundle_ro)["preprocessing"]
    weights = json.loads(meta["vggdeploy.weights"])
    recorded = {k: v for k, v in _manifest(tiny_bundle_ro)["weights"].items() if v is not None}
    assert weights == recorded and weights["source"] == "random"
    assert meta["vggdeploy.version"]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    assert len(model.graph.value_info) > 10  # shape inference's results are saved in the file


def test_every_conv_and_gemm_keeps_its_bias(tiny_bundle_ro: Path) -> None:
    import onnx

    nodes = onnx.load(str(tiny_bundle_ro / "model.onnx")).graph.node
    layers = [n for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert [n.op_type for n in layers] == ["Conv"] * 8 + ["Gemm"] * 3
    assert all(len(n.input) == 3 for n in layers)


def test_onnx_matches_pytorch_at_other_batch_sizes(tiny_bundle_ro: Path) -> None:
    import torch

    model, _ = load_model(resolve_spec("vgg11_bn", **TINY), RANDOM)
    session = _session(tiny_bundle_ro / "model.onnx")
    x = np.random.default_rng(7).standard_normal((5, 3, 32, 32), dtype=np.float32)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert compare_arrays(ref, got)["max_rel"] < 1e-4


# -- the dense bundle (config C, dynamic height and width) ------------------------------------


def test_dense_bundle_has_dynamic_height_and_width(tiny_dense_bundle_ro: Path) -> None:
    m = _manifest(tiny_dense_bundle_ro)
    assert m["model"]["dense"] is True and m["model"]["config"] == "C"
    assert m["io"]["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert m["io"]["outputs"][0]["shape"] == ["batch", 10]
    sizes = sorted({(c["height"], c["width"]) for c in m["parity"]["checks"]})
    assert sizes == [(s, s) for s in DENSE_CHECK_SIZES] == [(224, 224), (256, 256), (320, 320)]
    assert {c["batch"] for c in m["parity"]["checks"]} == {1, 3}
    assert m["parity"]["passed"] is True
    import onnx

    meta = {
        p.key: p.value for p in onnx.load(str(tiny_dense_bundle_ro / "model.onnx")).metadata_props
    }
    assert meta["vggdeploy.dense"] == "true"


def test_dense_onnx_matches_pytorch_at_an_unchecked_non_square_size(
    tiny_dense_bundle_ro: Path,
) -> None:
    import torch

    model, _ = load_model(resolve_spec("C", **TINY), RANDOM, dense=True)
    session = _session(tiny_dense_bundle_ro / "model.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3, 288, 224), dtype=np.float32)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 10)
    figures = compare_arrays(ref, got)
    assert figures["max_rel"] < 1e-4 and figures["cosine"] > 0.9999


# -- fresh exports ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_batch_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vgg11 at batch 2 with a labels file and BGR preprocessing, exported once."""
    from vggdeploy.preprocess import Preprocessing

    root = tmp_path_factory.mktemp("fixed")
    labels = root / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)) + "\n")
    out = root / "bundle"
    export_bundle(
        resolve_spec("vgg11", **TINY),
        RANDOM,
        out,
        ExportOptions(
            image_size=64,
            batch=2,
            opset=20,
            labels=str(labels),
            preprocessing=Preprocessing.for_size(64, channel_order="BGR"),
        ),
    )
    return out


def test_fixed_batch_gives_a_static_batch(fixed_batch_bundle: Path) -> None:
    import onnx

    m = _manifest(fixed_batch_bundle)
    assert m["io"]["inputs"][0]["shape"] == [2, 3, 64, 64]
    assert m["io"]["outputs"][0]["shape"] == [2, 10]
    assert [c["batch"] for c in m["parity"]["checks"]] == [2]
    dims = onnx.load(str(fixed_batch_bundle / "model.onnx")).graph.input[0].type.tensor_type
    assert [d.dim_value for d in dims.shape.dim] == [2, 3, 64, 64]
    assert not any(d.dim_param for d in dims.shape.dim)
    session = _session(fixed_batch_bundle / "model.onnx")
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {INPUT_NAME: np.zeros((3, 3, 64, 64), np.float32)})


def test_the_requested_opset_is_the_one_written(fixed_batch_bundle: Path) -> None:
    import onnx

    model = onnx.load(str(fixed_batch_bundle / "model.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [20]
    bundle = Bundle.load(fixed_batch_bundle)
    assert bundle.manifest.export["opset"] == 20 == bundle.artifact("onnx.fp32").opset


def test_labels_and_preprocessing_overrides_are_recorded(fixed_batch_bundle: Path) -> None:
    bundle = Bundle.load(fixed_batch_bundle)
    assert bundle.manifest.labels == "labels.txt"
    assert bundle.labels() == [f"class {i}" for i in range(10)]
    assert bundle.preprocessing.channel_order == "BGR"
    assert bundle.preprocessing.resize == 73 and bundle.preprocessing.crop == 64


def test_a_lrn_exports_and_passes_parity(tmp_path: Path) -> None:
    """LocalResponseNorm is what the deprecated TorchScript exporter could not handle."""
    import onnx

    bundle = export_bundle(
        resolve_spec("A-LRN", **TINY), RANDOM, tmp_path / "b", ExportOptions(image_size=32)
    )
    assert bundle.manifest.parity["passed"] is True
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node}
    assert "LRN" in ops or {"Pad", "Pow", "Div"} <= ops  # LRN itself, or its decomposition


def test_non_empty_output_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="is not empty.*--force"):
        export_bundle(resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32))
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_force_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="not a vggdeploy bundle.*--force will not replace it"):
        export_bundle(
            resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32, force=True)
        )
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_replaces_a_bundle_and_everything_in_it(tiny_bundle: Path) -> None:
    out = tiny_bundle
    (out / "old_dir").mkdir()
    (out / "old_dir" / "x").write_text("x")
    (out / "model.int8.onnx").write_text("stale")
    bundle = export_bundle(
        resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32, force=True)
    )
    assert _files(out) == ["manifest.json", "model.onnx"]
    assert list(bundle.artifacts) == ["onnx.fp32"]
    assert _manifest(out)["model"]["name"] == "vgg11"
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        export_bundle(resolve_spec("vgg11", **TINY), RANDOM, target, ExportOptions(image_size=32))


def test_unwritable_output_is_refused(tmp_path: Path) -> None:
    # A folder below a regular file can never be created, whoever runs the test (even root).
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write to output folder.*writable --out"):
        export_bundle(
            resolve_spec("vgg11", **TINY), RANDOM, blocker / "out", ExportOptions(image_size=32)
        )


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(InputError, match="cannot write to output folder"):
            export_bundle(
                resolve_spec("vgg11", **TINY), RANDOM, parent / "out", ExportOptions(image_size=32)
            )
    finally:
        parent.chmod(0o755)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 100}, "multiple of 32"),
        ({"image_size": 16}, "multiple of 32"),
        ({"image_size": 192, "dense": True}, "too small for the dense model"),
        ({"batch": 0}, "positive integer"),
        ({"opset": 12}, "opset 12 is not supported"),
        ({"opset": 17}, "use 18 to 23"),
        ({"opset": 24}, "use 18 to 23"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        ExportOptions(**kwargs)


def test_labels_of_the_wrong_length_are_refused(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="has 3 names but the model has 10 classes"):
        export_bundle(
            resolve_spec("vgg11", **TINY),
            RANDOM,
            out,
            ExportOptions(image_size=32, labels=str(labels)),
        )
    assert not out.exists()
    with pytest.raises(InputError, match="labels file .* does not exist"):
        export_bundle(
            resolve_spec("vgg11", **TINY),
            RANDOM,
            out,
            ExportOptions(image_size=32, labels=str(tmp_path / "none.txt")),
        )


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_export_leaves_no_model_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: type[BaseException]
) -> None:
    """Interrupt after the exporter has written the file, during the parity check."""
    seen = {}

    def interrupted(model, onnx_path: Path, options, *checks) -> None:
        # The parity check runs while the file is written: interrupt once it is written.
        seen["size"] = wait_for_size(onnx_path, 10_000)
        raise exc("interrupted during parity")

    monkeypatch.setattr(onnx_export, "check_parity", interrupted)
    out = tmp_path / "out"
    with pytest.raises(exc):
        export_bundle(resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32))
    assert seen["size"] > 10_000
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder, no partial file


def test_interrupt_while_the_exporter_writes(tmp_path: Path, monkeypatch) -> None:
    def half_written(model, dest: Path, options, *more) -> None:
        dest.write_bytes(b"\x08\x07partial protobuf")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "export_onnx", half_written)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_bundle(resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32))
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_exits_2_and_records_the_figures(tmp_path: Path, monkeypatch) -> None:
    real = onnx_export.compare_arrays

    def off_by_a_lot(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
        return real(ref, got + 0.01 * np.abs(ref).max())

    monkeypatch.setattr(onnx_export, "compare_arrays", off_by_a_lot)
    out = tmp_path / "out"
    with pytest.raises(CheckFailedError, match="disagree") as err:
        export_bundle(resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32))
    assert err.value.exit_code == 2
    parity = _manifest(out)["parity"]
    assert parity["passed"] is False and parity["worst_max_rel"] > 1e-3
    assert all(not c["passed"] for c in parity["checks"])


def test_compare_arrays() -> None:
    ref = np.array([[1.0, -2.0, 4.0]], np.float32)
    assert compare_arrays(ref, ref) == {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}
    figures = compare_arrays(ref, ref + np.float32(0.04))
    assert figures["max_abs"] == pytest.approx(0.04, rel=1e-5)
    assert figures["max_rel"] == pytest.approx(0.01, rel=1e-5)
    assert compare_arrays(ref, -ref)["cosine"] == pytest.approx(-1.0)
    zeros = np.zeros(3, np.float32)
    assert compare_arrays(zeros, zeros)["cosine"] == 1.0


def test_imagenet_labels_are_shipped() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench" and labels[1] == "goldfish"
    assert labels[207] == "golden retriever" and labels[999] == "toilet tissue"
    assert not any("_" in name for name in labels)


def test_imagenet_labels_are_package_data() -> None:
    from importlib import resources

    text = resources.files("vggdeploy").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    assert len(text.splitlines()) == 1000 and text.endswith("\n")


@pytest.mark.slow
def test_full_vgg16_export_at_224_passes_parity(tmp_path: Path) -> None:
    """The one full-size export: VGG-16, random weights, 224x224, dynamic batch."""
    bundle = export_bundle(resolve_spec("vgg16"), RANDOM, tmp_path / "vgg16")
    m = bundle.manifest.to_json_dict()
    assert m["parity"]["passed"] is True
    assert [(c["batch"], c["height"]) for c in m["parity"]["checks"]] == [(1, 224), (3, 224)]
    assert m["model"]["parameters"] == 138_357_544
    assert m["io"]["inputs"][0]["shape"] == ["batch", 3, 224, 224]
    assert m["io"]["outputs"][0]["shape"] == ["batch", 1000]
    size = (tmp_path / "vgg16" / "model.onnx").stat().st_size
    assert 138_357_544 * 4 < size < 138_357_544 * 4 * 1.01  # one file, fp32 weights inside
    assert bundle.artifact_path("onnx.fp32", verify=True).is_file()


def test_the_model_is_serialised_once_and_checked_on_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No onnx.load/onnx.save round trips and no file rewrite: the graph is serialised once;
    the file holds those bytes, the checker (strict shape inference) reads the file, and the
    one ORT session and the manifest's sha256 come from the same bytes."""
    import onnx

    from vggdeploy import ortsession

    calls: dict[str, int] = {"load": 0, "save": 0, "infer_shapes_path": 0, "session": 0}
    checked: list[tuple[str, bool]] = []

    def count(name: str, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(onnx, "load", count("load", onnx.load))
    monkeypatch.setattr(onnx, "save", count("save", onnx.save))
    monkeypatch.setattr(
        onnx.shape_inference,
        "infer_shapes_path",
        count("infer_shapes_path", onnx.shape_inference.infer_shapes_path),
    )
    real_check = onnx.checker.check_model
    monkeypatch.setattr(
        onnx.checker,
        "check_model",
        lambda m, full_check=False, **kw: (
            checked.append((str(m), full_check)),
            real_check(m, full_check, **kw),
        )[1],
    )
    sources: list[object] = []

    def session(source, **kwargs):
        calls["session"] += 1
        sources.append(source)
        return ortsession.cpu_session(source, **kwargs)

    monkeypatch.setattr(onnx_export, "cpu_session", session)
    out = tmp_path / "out"
    bundle = export_bundle(resolve_spec("vgg11", **TINY), RANDOM, out, ExportOptions(image_size=32))
    # onnx.save is never called: the graph's bytes are written once, as they are
    assert calls == {"load": 0, "save": 0, "infer_shapes_path": 0, "session": 1}
    assert len(checked) == 1 and checked[0][1] is True  # full check: strict, type-checked
    written = (out / "model.onnx").read_bytes()
    assert sources == [written]  # the session parsed exactly what the file holds
    record = bundle.manifest.artifacts["onnx.fp32"]
    assert record.sha256 == hashlib.sha256(written).hexdigest()
    # What the skipped rewrite would have written is already in the file.
    model = onnx.load(str(out / "model.onnx"))
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert {v.name: v.SerializeToString() for v in model.graph.value_info} == {
        v.name: v.SerializeToString() for v in inferred.graph.value_info
    }
    assert model.doc_string.startswith("vgg11 (VGG config A) exported by vggdeploy")


def test_background_hands_back_the_result_or_the_error() -> None:
    from vggdeploy.onnxutil import Background

    with Background(lambda: 42) as job:
        assert job.result() == 42

    def fails() -> None:
        raise InputError("cannot load")

    with Background(fails) as job, pytest.raises(InputError, match="cannot load"):
        job.result()
