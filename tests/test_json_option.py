"""`--json FILE` in every command, `-` for standard output (JSON only, no table).

Each command is run here with `--json FILE` on a tiny bundle, and the file is read back: it
must hold this run's result (the bundle, model, file or runtime the command was given), and
standard output must still carry the command's text, not the JSON.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vggdeploy.cli import cli, main

pytest_plugins = ("trt_double.fixtures",)

#: commands with no result to write: `serve` runs until it is stopped
NO_RESULT = {"serve"}
#: commands whose --json needs a live model server: tests/serving/test_serve_endpoint.py runs
#: `verify-endpoint --json -` against a real KServe server
NEEDS_SERVER = {"verify-endpoint"}
COMMANDS = sorted(set(cli.commands) - NO_RESULT)
TINY = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_json_file(name):
    params = {p.name: p for p in cli.commands[name].params}
    assert "json_path" in params, f"{name} has no --json FILE"
    assert params["json_path"].opts == ["--json"]
    assert not getattr(params["json_path"], "is_flag", False)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Eight small labelled photographs in two class folders."""
    rng = np.random.default_rng(0)
    for i in range(8):
        path = tmp_path / "images" / f"class_{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return tmp_path / "images"


def _run(args: list[Any], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    return out


# name -> (arguments before --json, a check of the JSON read back); `b` is a writable copy of
# a bundle with model.onnx, model.fp16.onnx and model.int8.onnx, `t` the test's tmp_path
Case = tuple[Callable[[Path, Path, Path], list[Any]], Callable[[Any, Path, Path, Path], None]]


def _check_models(d, b, t, i):
    assert len(d["models"]) == 11 and d["image_size"] == 224
    assert {m["name"] for m in d["models"]} >= {"vgg11", "vgg16_bn"}


def _check_export(d, b, t, i):
    assert d["model"]["name"] == "vgg11_bn" and d["model"]["image_size"] == 32
    assert set(d["artifacts"]) == {"onnx.fp32"} and (t / "exported" / "model.onnx").is_file()


def _check_inspect(d, b, t, i):
    assert d["kind"] == "bundle" and Path(d["path"]) == b and d["ok"]
    assert [a["key"] for a in d["artifacts"]] == ["onnx.fp32", "onnx.fp16", "onnx.int8"]


def _check_validate(d, b, t, i):
    assert Path(d["bundle"]) == b
    assert [t_["target"]["spec"] for t_ in d["targets"]] == ["onnxruntime@fp16"]


def _check_predict(d, b, t, i):
    [result] = d["results"]
    assert Path(result["file"]) == i / "class_0" / "0.png" and len(result["predictions"]) == 3


def _check_evaluate(d, b, t, i):
    assert d["count"] == 8 and d["class_mapping"]["folders"] == {"class_0": 0, "class_1": 1}
    assert [r["spec"] for r in d["results"]] == ["onnxruntime@fp32"]


def _check_bench(d, b, t, i):
    assert d["schema"] == "vggdeploy.bench/1"
    assert [(c["runtime"], c["precision"], c["batch"]) for c in d["cases"]] == [
        ("onnxruntime", "int8", 2)
    ]


def _check_convert(d, b, t, i):
    assert d["precision"] == "fp16" and d["parity"]["passed"]
    assert d["measured_on"]["samples"] == 4


def _check_calibrate(d, b, t, i):
    assert d["artifact"] == "onnx.int8" and d["samples"] == 6 and d["method"] == "minmax"


def _check_build(d, b, t, i):
    assert d["path"] == "model.fp32.engine" and d["precision"] == "fp32"
    assert (b / "model.fp32.engine").is_file()


def _check_pack(d, b, t, i):
    assert d["archive"] == str(t / "b.tar.gz") and "manifest.json" in d["files"]


def _check_unpack(d, b, t, i):
    assert d["manifest"]["schema_version"] == 1
    assert set(d["manifest"]["artifacts"]) >= {"onnx.fp32", "onnx.int8"}


def _check_package(d, b, t, i):
    assert [m["name"] for m in d["models"]] == [
        f"vgg11_bn_onnx_{p}" for p in ("fp32", "fp16", "int8")
    ]
    assert Path(d["repository"]) == t / "repo"


def _check_pipeline(d, b, t, i):
    assert d["schema"] == "vggdeploy.pipeline-report/1" and d["model"] == "vgg11_bn"
    assert [s["name"] for s in d["stages"] if s["status"] == "done"][:2] == [
        "export",
        "validate-export",
    ]
    assert Path(d["out"]) == t / "run"


def _pack_first(b: Path, t: Path) -> Path:
    _run_quiet(["pack", b, "-o", t / "u.tar.gz"])
    return t / "u.tar.gz"


def _run_quiet(args: list[Any]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-q", *[str(a) for a in args]])
    assert exc.value.code == 0


CASES: dict[str, Case] = {
    "models": (lambda b, t, i: ["models"], _check_models),
    "export": (
        lambda b, t, i: ["export", "vgg11_bn", "--out", t / "exported", *TINY],
        _check_export,
    ),
    "inspect": (lambda b, t, i: ["inspect", b], _check_inspect),
    "validate": (
        lambda b, t, i: ["validate", b, "--runtime", "onnxruntime@fp16", "--samples", "4"],
        _check_validate,
    ),
    "predict": (
        lambda b, t, i: ["predict", b, i / "class_0" / "0.png", "--top", "3"],
        _check_predict,
    ),
    "evaluate": (
        lambda b, t, i: ["evaluate", b, "--images", i, "--runtime", "onnxruntime@fp32"],
        _check_evaluate,
    ),
    "bench": (
        lambda b, t, i: (
            ["bench", b, "--runtime", "onnxruntime@int8", "--batch", "2"]
            + ["--warmup", "1", "--iterations", "2"]
        ),
        _check_bench,
    ),
    "convert": (
        lambda b, t, i: ["convert", b, "--precision", "fp16", "--samples", "4"],
        _check_convert,
    ),
    "calibrate": (
        lambda b, t, i: (["calibrate", b, "--images", i, "--samples", "6", "--method", "minmax"]),
        _check_calibrate,
    ),
    "build": (lambda b, t, i: ["build", b, "--precision", "fp32"], _check_build),
    "pack": (lambda b, t, i: ["pack", b, "-o", t / "b.tar.gz"], _check_pack),
    "unpack": (lambda b, t, i: ["unpack", _pack_first(b, t), "-o", t / "u"], _check_unpack),
    "package": (lambda b, t, i: ["package", b, "--out", t / "repo"], _check_package),
    "pipeline": (
        lambda b, t, i: (
            ["pipeline", "vgg11_bn", "--out", t / "run", *TINY, "--precision", "fp32"]
            + ["--batch", "1", "--bench-iterations", "2", "--bench-runtime", "onnxruntime"]
            + ["--validate-samples", "4"]
        ),
        _check_pipeline,
    ),
}


def test_every_command_with_a_result_has_a_case_here() -> None:
    assert set(CASES) == set(COMMANDS) - NEEDS_SERVER


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_file_holds_this_runs_result(
    name, trt10, precision_bundle, images, tmp_path, capsys
) -> None:
    make_args, check = CASES[name]
    dest = tmp_path / "out" / "result.json"
    dest.parent.mkdir()
    out = _run([*make_args(precision_bundle, tmp_path, images), "--json", dest], capsys)
    data = json.loads(dest.read_text("utf-8"))
    check(data, precision_bundle, tmp_path, images)
    # --json FILE writes the file and still shows the command's text on standard output
    assert out.strip(), f"{name} printed nothing"
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_json_dash_prints_json_only(tiny_bundle, tmp_path, capsys) -> None:
    data = json.loads(_run(["pack", tiny_bundle, "-o", tmp_path / "b.tgz", "--json", "-"], capsys))
    assert data["archive"] == str(tmp_path / "b.tgz") and "manifest.json" in data["files"]
    data = json.loads(
        _run(["package", tiny_bundle, "--out", tmp_path / "r", "--json", "-"], capsys)
    )
    assert [m["name"] for m in data["models"]] == ["vgg11_bn_onnx_fp32"]
    shutil.rmtree(tmp_path / "r")
