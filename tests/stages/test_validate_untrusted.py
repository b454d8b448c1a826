"""A bundle is untrusted input: what validate and predict do with a hostile or damaged one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _edit(bundle_dir: Path, change) -> None:
    data = json.loads((bundle_dir / "manifest.json").read_text())
    change(data)
    (bundle_dir / "manifest.json").write_text(json.dumps(data))


def _add_copy(bundle_dir: Path, key: str, name: str) -> None:
    shutil.copy(bundle_dir / "model.onnx", bundle_dir / name)
    Bundle.load(bundle_dir).add_artifact(key, name, kind="onnx", precision=key.split(".")[1])


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: ")
    return lines[-1]


def test_a_listed_artifact_that_is_missing_fails_validation(tiny_bundle, capsys):
    _add_copy(tiny_bundle, "onnx.int8", "model.int8.onnx")
    (tiny_bundle / "model.int8.onnx").unlink()
    code, out, err = run_cli(["validate", tiny_bundle], capsys)
    assert code == 2
    assert "MISSING model.int8.onnx is listed in the manifest as onnx.int8 but missing" in out
    assert "vggdeploy calibrate" in out
    assert "FAILED: 1 listed artifact missing" in _one_error(err)


def test_a_modified_artifact_is_one_line(tiny_bundle, capsys):
    with open(tiny_bundle / "model.onnx", "ab") as f:
        f.write(b"tampered")
    code, _, err = run_cli(["validate", tiny_bundle, "--runtime", "onnxruntime@fp32"], capsys)
    assert code == 1
    assert "does not match the sha256 in the manifest" in _one_error(err)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda m: m.update(labels="/etc/passwd"), "labels"),
        (lambda m: m.update(labels="../../../../etc/passwd"), "labels"),
        (lambda m: m["artifacts"]["onnx.fp32"].update(path="../elsewhere/model.onnx"), "path"),
        (lambda m: m["artifacts"]["onnx.fp32"].update(path="/tmp/model.onnx"), "path"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "predict", "inspect"])
def test_manifest_paths_leaving_the_bundle_are_refused(
    tiny_bundle, tmp_path, capsys, change, field, command
):
    _edit(tiny_bundle, change)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(image)
    args = {"validate": [tiny_bundle], "predict": [tiny_bundle, image], "inspect": [tiny_bundle]}
    code, out, err = run_cli([command, *args[command]], capsys)
    assert code == 1
    line = _one_error(err)
    assert f".{field}" in line or f"field {field}" in line
    assert "leaves the bundle" in line
    assert "root:" not in out  # nothing of /etc/passwd was read


def test_labels_symlinked_out_are_not_read(tiny_bundle, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("\n".join(f"SECRET-{i}" for i in range(10)) + "\n")
    (tiny_bundle / "labels.txt").symlink_to(secret)
    _edit(tiny_bundle, lambda m: m.update(labels="labels.txt"))
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    code, out, err = run_cli(["predict", tiny_bundle, tmp_path / "x.png"], capsys)
    assert code == 1 and "SECRET" not in out
    assert "leads outside the bundle" in _one_error(err)


@pytest.mark.parametrize("text", ["[]", "{}", "null", '{"schema_version": 1}', "\x00\x01"])
def test_malformed_manifests_are_one_line(tiny_bundle, capsys, text):
    (tiny_bundle / "manifest.json").write_text(text)
    code, _, err = run_cli(["validate", tiny_bundle], capsys)
    assert code == 1
    assert "manifest.json" in _one_error(err)


def test_onnx_with_external_data_is_refused(tiny_bundle, tmp_path, capsys):
    """An ONNX file whose tensors point at other files (here a symlink out of the bundle) is
    refused before any runtime opens it."""
    import onnx

    from vggdeploy.bundle import sha256_file

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    (tiny_bundle / "weights.bin").symlink_to(secret)
    model = onnx.load(str(tiny_bundle / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    onnx.save(model, str(tiny_bundle / "model.onnx"))
    sha = sha256_file(tiny_bundle / "model.onnx")
    size = (tiny_bundle / "model.onnx").stat().st_size
    _edit(tiny_bundle, lambda m: m["artifacts"]["onnx.fp32"].update(sha256=sha, size=size))
    code, _, err = run_cli(["validate", tiny_bundle, "--runtime", "onnxruntime@fp32"], capsys)
    assert code == 1
    line = _one_error(err)
    assert "external data files" in line and "self-contained" in line
