"""vggdeploy's `model.int8.onnx` against NVIDIA ModelOpt's ONNX PTQ, node by node.

The reference is ModelOpt 0.47's own output for the same small VGG, recorded by
`benchmarks/modelopt_reference.py` in tests/data/modelopt_vgg11_placement.json (ModelOpt brings
onnxruntime-gpu, so it cannot share CI's environment). Compared per quantized node input:
activation or weight, dtype, zero points, per-tensor or per-channel and the axis; scales are
not compared (they depend on calibration), but which MaxPools share one scale on both sides is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.calibration import CalibrationOptions, calibrate_bundle
from vggdeploy.calibration.placement import qdq_placement

RECORD = Path(__file__).resolve().parents[1] / "data" / "modelopt_vgg11_placement.json"
COMPARED = ("kind", "dtype", "zero_point", "per", "axis")
FC_LAYERS = ("classifier.0", "classifier.3", "classifier.6")

FC_WHY = (
    "ModelOpt keeps batch-1 (GEMV-shaped) Gemms float for TensorRT "
    "(modelopt/onnx/quantization/graph_utils.py, find_nodes_from_matmul_to_exclude); "
    "vggdeploy quantizes the FC layers because int8 FCs measured faster on ONNX Runtime's CPU "
    "(docs/performance.md, INT8 on the CPU), records the choice in the manifest (fc_layers), and "
    "`--keep-float classifier.0,classifier.3,classifier.6` gives ModelOpt's choice"
)
#: Where vggdeploy's file differs from ModelOpt's on purpose, and why.
DIFFERENCES = {f"Gemm {layer} input {index}": FC_WHY for layer in FC_LAYERS for index in (0, 1)}


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The model ModelOpt quantized: `vggdeploy export vgg11 --width-divisor 4 --hidden 64
    --num-classes 10 --image-size 32`."""
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.weights import WeightsSource

    root = tmp_path_factory.mktemp("modelopt_vgg11") / "bundle"
    spec = resolve_spec("vgg11", width_divisor=4, hidden=64, num_classes=10)
    export_bundle(spec, WeightsSource("random", seed=0), root, ExportOptions(image_size=32))
    return Bundle.load(root)


def _calibrate(bundle: Bundle, **options) -> tuple[dict, dict]:
    """vggdeploy's placement of `calibrate` on the shipped calibration images, and its record."""
    import onnx

    import vggdeploy

    images = Path(vggdeploy.__file__).parent / "data" / "calibration_images"
    opts = CalibrationOptions(
        method="minmax", samples=4, holdout=0, batch_size=4, weight_bits=8, **options
    )
    summary = calibrate_bundle(bundle, images, opts)
    placement = qdq_placement(onnx.load(summary["path"]))
    return placement, Bundle.load(bundle.root).artifact("onnx.int8").model_dump()


def _differences(ours: dict, theirs: dict) -> dict[str, str]:
    """Every node input where the two placements differ, as one line each."""
    found = {}
    for key in sorted(set(ours["inputs"]) | set(theirs["inputs"])):
        a, b = ours["inputs"].get(key), theirs["inputs"].get(key)
        if a is None or b is None:
            found[key] = f"quantized by {'ModelOpt' if a is None else 'vggdeploy'} only"
        elif any(a[field] != b[field] for field in COMPARED):
            found[key] = "; ".join(
                f"{f}: ours {a[f]!r}, ModelOpt {b[f]!r}" for f in COMPARED if a[f] != b[f]
            )
    return found


def test_the_record_is_modelopts_placement(record: dict) -> None:
    """What the record says ModelOpt does (the rules the writer follows), read from it."""
    assert record["source"]["versions"]["nvidia-modelopt"].startswith("0.47")
    inputs = record["inputs"]
    activations = [v for v in inputs.values() if v["kind"] == "activation"]
    weights = [v for v in inputs.values() if v["kind"] == "weight"]
    assert activations and all(
        (v["dtype"], v["zero_point"], v["per"]) == ("int8", [0], "tensor") for v in activations
    )
    assert weights and all(
        (v["dtype"], v["zero_point"], v["per"], v["axis"]) == ("int8", [0], "channel", 0)
        for v in weights
    )
    assert all(key.startswith(("Conv ", "MaxPool ")) for key in inputs)  # no Relu, no output
    assert record["float"] == [f"Gemm {layer}" for layer in FC_LAYERS]
    pools = {key.split(" input")[0] for key in inputs if key.startswith("MaxPool")}
    assert sorted(record["same_scale"]) == sorted(pools)


def test_vggdeploy_places_qdq_as_modelopt_does_node_by_node(bundle: Bundle, record: dict) -> None:
    ours, artifact = _calibrate(bundle)
    found = _differences(ours, record)
    # Every difference is listed with its reason, and every listed one still exists.
    assert set(found) == set(DIFFERENCES), json.dumps(found, indent=1)
    for key, line in found.items():
        assert line == "quantized by vggdeploy only", (key, line, DIFFERENCES[key])
    assert ours["float"] == [] and ours["same_scale"] == record["same_scale"]
    assert artifact["fc_layers"]["layers"] == dict.fromkeys(FC_LAYERS, "int8")
    assert set(artifact["fc_layers"]["why"]) == {"onnxruntime", "tensorrt"}


def test_with_the_fc_layers_float_vggdeploy_is_modelopts_placement(
    bundle: Bundle, record: dict
) -> None:
    ours, artifact = _calibrate(bundle, keep_float=FC_LAYERS)
    assert _differences(ours, record) == {}
    assert ours["float"] == record["float"] and ours["same_scale"] == record["same_scale"]
    assert artifact["fc_layers"]["layers"] == dict.fromkeys(FC_LAYERS, "float")
    assert artifact["fc_layers"]["chosen_by"] == "--keep-float"
