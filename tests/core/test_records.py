"""The typed manifest: validated on load, one line naming the field, strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggdeploy import precision as P
from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError, InputError
from vggdeploy.records import EngineRecord, Manifest, OnnxArtifact, dumps


def _manifest(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())


def _write(bundle_dir: Path, data) -> None:
    (bundle_dir / "manifest.json").write_text(json.dumps(data))


def test_a_real_manifest_round_trips(tiny_bundle_ro: Path) -> None:
    bundle = Bundle.load(tiny_bundle_ro)
    assert isinstance(bundle.manifest, Manifest)
    assert isinstance(bundle.artifacts["onnx.fp32"], OnnxArtifact)
    assert bundle.manifest.model.num_classes == 10
    assert bundle.manifest.input.name == "input" and bundle.manifest.output.name == "logits"
    again = Manifest.model_validate(json.loads(dumps(bundle.manifest.to_json_dict())))
    assert again == bundle.manifest


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: m["model"].update(num_classes="ten"), "model.num_classes"),
        (lambda m: m["model"].pop("name"), "model.name"),
        (lambda m: m["artifacts"]["onnx.fp32"].update(sha256="xyz"), "artifacts.onnx.fp32.sha256"),
        (lambda m: m["artifacts"]["onnx.fp32"].update(size=-1), "artifacts.onnx.fp32.size"),
        (
            lambda m: m["artifacts"]["onnx.fp32"].update(path="/etc/passwd"),
            "artifacts.onnx.fp32.path",
        ),
        (
            lambda m: m["artifacts"]["onnx.fp32"].update(path="../../x.onnx"),
            "artifacts.onnx.fp32.path",
        ),
        (lambda m: m.update(labels="/etc/passwd"), "labels"),
        (lambda m: m["preprocessing"].update(std=[0.2, 0.0, 0.2]), "preprocessing.std"),
        (lambda m: m["io"].update(inputs=[]), "io.inputs"),
        (lambda m: m["artifacts"].update({"weird": m["artifacts"]["onnx.fp32"]}), "artifacts"),
    ],
)
def test_bad_fields_are_one_line_naming_the_field(tiny_bundle: Path, change, field) -> None:
    data = _manifest(tiny_bundle)
    change(data)
    _write(tiny_bundle, data)
    with pytest.raises(BundleError) as exc:
        Bundle.load(tiny_bundle)
    message = str(exc.value)
    assert "\n" not in message
    assert f"field {field}" in message


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[1, 2]", "must be a JSON object, not list"),
        ('{"schema_version": 99}', "schema version 99"),
        ("{", "is not valid JSON"),
    ],
)
def test_malformed_manifests_are_one_line(tiny_bundle: Path, text: str, needle: str) -> None:
    (tiny_bundle / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=needle):
        Bundle.load(tiny_bundle)


def test_nan_in_a_manifest_is_refused_and_never_written(tiny_bundle: Path) -> None:
    text = (tiny_bundle / "manifest.json").read_text()
    (tiny_bundle / "manifest.json").write_text(text.replace('"scale": ', '"scale": NaN, "x": ', 1))
    with pytest.raises(BundleError, match="NaN is not JSON"):
        Bundle.load(tiny_bundle)
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})


def test_unknown_fields_survive_a_round_trip(tiny_bundle: Path) -> None:
    data = _manifest(tiny_bundle)
    data["artifacts"]["onnx.fp32"]["from_the_future"] = {"a": 1}
    _write(tiny_bundle, data)
    bundle = Bundle.load(tiny_bundle)
    with bundle.update():
        pass
    assert _manifest(tiny_bundle)["artifacts"]["onnx.fp32"]["from_the_future"] == {"a": 1}


def test_engine_record_facts() -> None:
    record = EngineRecord.model_validate(
        {
            "path": "model.fp16.engine",
            "sha256": "0" * 64,
            "size": 1,
            "precision": "fp16",
            "tensorrt_version": "10.16.1.11",
            "gpu": {"name": "Orin", "compute_capability": "8.7", "jetson": True},
            "flags": {"hardware_compat": "none", "version_compatible": True},
            "profiles": [
                {"input": {"min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}},
                {"input": {"min": [9, 3, 32, 32], "opt": [16, 3, 32, 32], "max": [32, 3, 32, 32]}},
            ],
        }
    )
    assert record.kind == "tensorrt-engine" and record.compute_capability == "8.7"
    assert record.batch_ranges() == [(1, 4, 8), (9, 16, 32)] and record.max_batch() == 32


def test_precision_vocabulary() -> None:
    assert P.NAMES == ("fp32", "fp16", "int8")  # one INT8 file
    assert P.ENGINE_NAMES == ("fp32", "fp16", "int8")
    assert P.onnx_file("int8") == "model.int8.onnx" and P.onnx_file("fp32") == "model.onnx"
    assert P.engine_file("int8") == "model.int8.engine"
    assert P.split_key("onnx.int8") == ("onnx", "int8")
    keys = ["engine.fp16", "onnx.fp16", "onnx.fp32", "onnx.int8", "engine.fp32"]
    assert sorted(keys, key=P.artifact_order) == [
        "onnx.fp32",
        "onnx.fp16",
        "onnx.int8",
        "engine.fp32",
        "engine.fp16",
    ]
    assert P.make_command("onnx.fp16", "b") == "vggdeploy convert b --precision fp16"
    assert P.get("int8").numeric == "int8"
    with pytest.raises(InputError, match="choose one of fp32, fp16, int8$"):
        P.get("bf16")
