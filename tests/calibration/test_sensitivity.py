"""Per-layer INT8 sensitivity, the accuracy budget (--max-drop) and --keep-float, on tiny models.

Real accuracy figures are in tests/core/test_real_data.py; here the greedy search and the
refusals are checked with a scorer whose losses are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.calibration import CalibrationOptions
from vggdeploy.calibration.budget import AccuracyOptions, calibrate_with_accuracy, split_names
from vggdeploy.calibration.qdq import quantizable_nodes
from vggdeploy.calibration.sensitivity import OutputScorer, read_labelled_folder
from vggdeploy.errors import CheckFailedError, InputError

CLASSES = ["cat", "dog", "fish"]


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three class folders of small noisy pictures (also used, flat, to calibrate)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(8):
            img = rng.normal(60 + 60 * c, 40, (32, 32, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def _options(*keep_float: str) -> CalibrationOptions:
    return CalibrationOptions(
        method="minmax", samples=16, batch_size=8, holdout=4, keep_float=keep_float
    )


def _layers(bundle: Path) -> list[tuple[str, str, str]]:
    return quantizable_nodes(onnx.load(str(bundle / "model.onnx")))


def _float_layers(path: Path) -> set[str]:
    """Layer names whose weight is still a float initializer in the written file."""
    return {layer for _, _, layer in quantizable_nodes(onnx.load(str(path)))}


# -- labelled folders and options ---------------------------------------------------------------


def test_labelled_folder_maps_by_labels_or_alphabetically(labelled_dir: Path) -> None:
    alpha = read_labelled_folder(labelled_dir, None)
    assert alpha.method == "alphabetical" and len(alpha.paths) == 24
    assert sorted(set(alpha.targets.tolist())) == [0, 1, 2]
    named = read_labelled_folder(labelled_dir, ["Fish", "x", "DOG", "cat"])
    assert named.method == "labels"
    assert dict(zip((p.parent.name for p in named.paths), named.targets.tolist())) == {
        "cat": 3,
        "dog": 2,
        "fish": 0,
    }
    with pytest.raises(InputError, match="'fish'"):
        read_labelled_folder(labelled_dir, ["cat", "dog"])


def test_options_refuse_a_budget_without_labelled_images() -> None:
    with pytest.raises(InputError, match="--accuracy-images"):
        AccuracyOptions(max_drop=1.0)
    with pytest.raises(InputError, match="--max-drop"):
        AccuracyOptions(max_drop=-1, accuracy_images="x")
    assert split_names(["a,b", " c ", "a"]) == ("a", "b", "c")
    assert not AccuracyOptions().measures and AccuracyOptions(sensitivity=True).measures


# -- sensitivity ----------------------------------------------------------------------------------


def test_sensitivity_table_on_unlabelled_held_out_images(
    tiny_bundle: Path, labelled_dir: Path
) -> None:
    summary = calibrate_with_accuracy(
        Bundle.load(tiny_bundle), labelled_dir, _options(), AccuracyOptions(sensitivity=True)
    )
    layers = _layers(tiny_bundle)
    rows = summary["sensitivity"]
    assert len(rows) == len(layers) == 11  # vgg11: 8 conv + 3 fc
    assert {(r["node"], r["layer"]) for r in rows} == {(node, layer) for node, _, layer in layers}
    assert {r["layer"] for r in rows} >= {"features.0", "classifier.6"}
    assert [r["rank"] for r in rows] == list(range(1, 12))
    keys = [(-r["loss"], r["cosine_mean"]) for r in rows]
    assert keys == sorted(keys)
    assert "top1" not in rows[0]  # unlabelled: agreement with fp32, not accuracy
    assert summary["accuracy"]["source"] == "held-out" and summary["accuracy"]["images"] == 4
    assert summary["float_layers"] == [] and summary["quantized_ops"] == 11
    record = Bundle.load(tiny_bundle).artifact("onnx.int8").to_json_dict()
    assert record["sensitivity"] == rows and record["float_layers"] == []


def test_keep_float_by_hand_by_layer_or_node_name(tiny_bundle: Path, labelled_dir: Path) -> None:
    layers = _layers(tiny_bundle)
    last_node = layers[-1][0]
    summary = calibrate_with_accuracy(
        Bundle.load(tiny_bundle),
        labelled_dir,
        _options("features.0", last_node),
        AccuracyOptions(),
    )
    assert summary["quantized_ops"] == 9
    kept = {(k["layer"], k["node"]) for k in summary["float_layers"]}
    assert kept == {(layers[0][2], layers[0][0]), (layers[-1][2], last_node)}
    assert _float_layers(tiny_bundle / "model.int8.onnx") == {"features.0", layers[-1][2]}
    bundle = Bundle.load(tiny_bundle)
    bundle.artifact_path("onnx.int8", verify=True)  # the record matches the rewritten file
    record = bundle.artifact("onnx.int8").to_json_dict()
    assert record["quantized_ops"] == 9 and len(record["float_layers"]) == 2
    assert sorted(record["kept_float"]) == sorted(node for _, node in kept)
    assert "sensitivity" not in record  # nothing measured unless asked
    assert summary["holdout"]["images"] == 4


def test_keep_float_refuses_unknown_names_and_all_layers_before_writing(
    tiny_bundle: Path, labelled_dir: Path
) -> None:
    bundle = Bundle.load(tiny_bundle)
    with pytest.raises(InputError, match="features.99"):
        calibrate_with_accuracy(bundle, labelled_dir, _options("features.99"), AccuracyOptions())
    every = [layer for _, _, layer in _layers(tiny_bundle)]
    with pytest.raises(InputError, match="nothing would be int8"):
        calibrate_with_accuracy(bundle, labelled_dir, _options(*every), AccuracyOptions())
    assert not (tiny_bundle / "model.int8.onnx").exists()


# -- the budget, with known per-layer losses ------------------------------------------------------


def _fake_losses(monkeypatch: pytest.MonkeyPatch, losses: dict[str, float]) -> None:
    """Top-1 drop = the sum of `losses` over the layers a model quantizes (others: 0)."""

    def score(self: OutputScorer, model: object) -> dict[str, float]:
        data = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
        proto = onnx.load_from_string(data)
        quantized_layers = {
            n.input[0].rsplit(".weight", 1)[0]
            for n in proto.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quantized")
        }
        drop = sum(v for k, v in losses.items() if k in quantized_layers)
        self.fp32_top1 = 90.0
        return {
            "top1_agreement": 1.0,
            "cosine_mean": 1.0,
            "cosine_min": 1.0,
            "top1": 90.0 - drop,
            "top1_drop": drop,
            "loss": drop,
        }

    monkeypatch.setattr(OutputScorer, "score", score)


def test_budget_keeps_the_most_sensitive_layers_float(
    tiny_bundle: Path, labelled_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_losses(monkeypatch, {"features.4": 3.0, "classifier.3": 2.0, "features.0": 0.5})
    summary = calibrate_with_accuracy(
        Bundle.load(tiny_bundle),
        labelled_dir,
        _options(),
        AccuracyOptions(accuracy_images=labelled_dir, max_drop=1.0),
    )
    assert [r["layer"] for r in summary["sensitivity"][:3]] == [
        "features.4",
        "classifier.3",
        "features.0",
    ]
    budget = summary["accuracy_budget"]
    assert budget["met"] and budget["before"]["top1_drop"] == pytest.approx(5.5)
    assert budget["after"]["top1_drop"] == pytest.approx(0.5)
    assert [k["layer"] for k in budget["kept_float"]] == ["features.4", "classifier.3"]
    assert len(budget["steps"]) == 3  # plain, +features.4, +classifier.3
    assert summary["int8_layers"] == 9 and summary["quantized_ops"] == 9
    assert _float_layers(tiny_bundle / "model.int8.onnx") == {"features.4", "classifier.3"}
    record = Bundle.load(tiny_bundle).artifact("onnx.int8").to_json_dict()
    assert record["accuracy_budget"]["met"] is True
    assert [k["layer"] for k in record["float_layers"]] == ["features.4", "classifier.3"]


def test_budget_that_needs_most_layers_float_exits_2_and_ships_plain_int8(
    tiny_bundle: Path,
    labelled_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from vggdeploy.cli import main

    _fake_losses(monkeypatch, {layer: 1.0 for _, _, layer in _layers(tiny_bundle)})
    args = ["calibrate", str(tiny_bundle), "--images", str(labelled_dir), "--samples", "16"]
    args += ["--method", "minmax", "--accuracy-images", str(labelled_dir), "--max-drop", "2"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == CheckFailedError.exit_code == 2
    err = capsys.readouterr().err
    assert "cannot be met with most layers in INT8" in err and "plain INT8" in err
    assert _float_layers(tiny_bundle / "model.int8.onnx") == set()  # never an fp32 "int8"
    record = Bundle.load(tiny_bundle).artifact("onnx.int8").to_json_dict()
    budget = record["accuracy_budget"]
    assert budget["met"] is False and len(budget["kept_float"]) == 5  # (11 - 1) // 2
    assert record["float_layers"] == [] and record["quantized_ops"] == 11


def test_cli_sensitivity_table_and_json(
    tiny_bundle: Path, labelled_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggdeploy.cli import main

    base = ["calibrate", str(tiny_bundle), "--images", str(labelled_dir), "--samples", "16"]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--accuracy-images", str(labelled_dir), "--keep-float", "classifier.0"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert "INT8 sensitivity" in out and "features.0" in out and "24 labelled images" in out
    assert "layers kept float: classifier.0" in out
    with pytest.raises(SystemExit):
        main([*base, "--sensitivity", "--json", "-"])
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["sensitivity"]) == 11 and "ranges" not in summary
