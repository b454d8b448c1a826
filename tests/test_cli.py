"""The `vggdeploy` command line: cheap help, one-line errors, `models`, `export`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from vggdeploy.cli import cli, main

# Libraries that must never be imported to show help (slow, or absent on the machine).
HEAVY = ("torch", "onnxruntime", "tensorrt", "onnx", "matplotlib", "kserve", "tritonclient")
TINY_ARGS = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command, so commands added later are covered automatically."""
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
    return paths


COMMANDS = _command_paths(cli)


def _run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vggdeploy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )


_HELP_PROBE = """
import json, sys
from vggdeploy.cli import main
argv = json.loads(sys.argv[1])
try:
    main(argv)
except SystemExit as exc:
    code = exc.code
else:
    code = None
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
sys.stderr.write("PROBE " + json.dumps({{"code": code, "heavy": heavy}}) + "\\n")
"""


def _probe_help(argv: list[str]) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE.format(heavy=HEAVY), json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    probe = [line for line in proc.stderr.splitlines() if line.startswith("PROBE ")]
    assert probe, proc.stderr
    return json.loads(probe[-1][len("PROBE ") :]), proc.stdout


def test_the_known_commands_are_registered() -> None:
    assert {("models",), ("export",)} <= set(COMMANDS)


def test_top_level_help_imports_no_heavy_library() -> None:
    result, out = _probe_help(["--help"])
    assert result == {"code": 0, "heavy": []}
    assert "Usage: vggdeploy" in out
    for name in cli.commands:
        assert name in out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_imports_no_heavy_library(command: tuple[str, ...]) -> None:
    result, out = _probe_help([*command, "--help"])
    assert result["heavy"] == [], f"`vggdeploy {' '.join(command)} --help` imported {result}"
    assert result["code"] == 0
    assert f"Usage: vggdeploy {' '.join(command)}" in out


def test_module_entry_points() -> None:
    for module in ("vggdeploy", "vggdeploy.cli"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("vggdeploy, version ")


# -- models -----------------------------------------------------------------------------------


def test_models_json_lists_eleven_models() -> None:
    proc = _run("models", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["image_size"] == 224
    rows = {r["name"]: r for r in data["models"]}
    assert len(data["models"]) == 11 == len(rows)
    assert rows["vgg16"] == {
        "name": "vgg16",
        "config": "D",
        "batch_norm": False,
        "weight_layers": 16,
        "parameters": 138_357_544,
        "gflops": 30.94,
        "imagenet_weights": True,
    }
    assert rows["vgg19_bn"]["parameters"] == 143_678_248
    assert rows["vgg11"]["parameters"] == 132_863_336
    assert rows["C"]["imagenet_weights"] is False and rows["C"]["weight_layers"] == 16
    assert rows["A-LRN"]["batch_norm"] is False


def test_models_table() -> None:
    proc = _run("models")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "name",
        "config",
        "BN",
        "layers",
        "parameters",
        "GFLOPs",
        "imagenet",
    ]
    vgg16 = next(line for line in lines if line.startswith("vgg16 "))
    assert vgg16.split() == ["vgg16", "D", "-", "16", "138,357,544", "30.94", "yes"]
    assert "GFLOPs at 224x224" in proc.stdout


def test_models_at_another_size() -> None:
    proc = _run("models", "--json", "-", "--image-size", "448")
    rows = {r["name"]: r for r in json.loads(proc.stdout)["models"]}
    assert rows["vgg16"]["gflops"] > 3.9 * 30.94


# -- bad input: one line, non-zero exit, no traceback ------------------------------------------


def _assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "corrupt.pth").write_bytes(b"PK\x03\x04 definitely not a zip archive" * 20)
    (root / "full").mkdir()
    (root / "full" / "something.txt").write_text("x")
    (root / "three.txt").write_text("a\nb\nc\n")
    return root


@pytest.mark.parametrize(
    "args, needles",
    [
        (["export", "vgg61", "--out", "{tmp}/o"], ["unknown model 'vgg61'", "did you mean"]),
        (["export", "A-LRN-bn", "--out", "{tmp}/o"], ["not in the VGG paper"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--image-size", "100"], ["multiple of 32"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--image-size", "0"], ["multiple of 32"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--dense", "--image-size", "96"], ["dense"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--image-size", "abc"], ["--image-size"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--batch", "many"], ["--batch"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--mean", "0.5,0.5"], ["--mean"]),
        (["export", "vgg16", "--out", "{tmp}/o", "--width-divisor", "3"], ["must divide 64"]),
        (["export", "vgg16"], ["Missing option '--out'"]),
        (
            ["export", "vgg11", *TINY_ARGS, "--weights", "{tmp}/missing.pth", "--out", "{tmp}/o"],
            ["missing.pth does not exist"],
        ),
        (
            ["export", "vgg11", *TINY_ARGS, "--weights", "{tmp}/corrupt.pth", "--out", "{tmp}/o"],
            ["cannot read weights file", "corrupt.pth"],
        ),
        (
            ["export", "vgg11", *TINY_ARGS, "--weights", "imagenet", "--out", "{tmp}/o"],
            ["no published ImageNet weights"],
        ),
        (["export", "vgg11", *TINY_ARGS, "--out", "{tmp}/full"], ["is not empty", "--force"]),
        (["export", "vgg11", *TINY_ARGS, "--out", "{tmp}/three.txt"], ["is a file"]),
        (
            ["export", "vgg11", *TINY_ARGS, "--labels", "{tmp}/three.txt", "--out", "{tmp}/o"],
            ["has 3 names but the model has 10 classes"],
        ),
        (["models", "--image-size", "33"], ["multiple of 32"]),
        (["no-such-command"], ["No such command"]),
    ],
    ids=lambda v: (
        " ".join(v) if isinstance(v, list) and v and v[0] in ("export", "models") else None
    ),
)
def test_bad_input_is_one_error_line(bad_files: Path, args: list[str], needles: list[str]) -> None:
    proc = _run(*(a.replace("{tmp}", str(bad_files)) for a in args))
    _assert_one_error_line(proc, *needles)
    assert not (bad_files / "o").exists()
    assert sorted(p.name for p in (bad_files / "full").iterdir()) == ["something.txt"]


# -- export -----------------------------------------------------------------------------------


def test_export_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    proc = _run("export", "C", *TINY_ARGS, "--batch", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    assert f"exported C to {out / 'model.onnx'}" in proc.stdout and "passed" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["config"] == "C" and manifest["model"]["num_classes"] == 10
    assert manifest["io"]["inputs"][0]["shape"] == [4, 3, 32, 32]
    # The same command again refuses the now non-empty folder; --force replaces it.
    again = _run("export", "C", *TINY_ARGS, "--out", str(out))
    _assert_one_error_line(again, "is not empty")
    forced = _run("-q", "export", "vgg11", *TINY_ARGS, "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "manifest.json").read_text())["model"]["config"] == "A"
    assert forced.stderr == ""


def test_export_parity_failure_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    import numpy as np

    from vggdeploy.exporter import onnx_export

    real = onnx_export.compare_arrays
    monkeypatch.setattr(
        onnx_export, "compare_arrays", lambda ref, got: real(ref, got + np.abs(ref).max())
    )
    with pytest.raises(SystemExit) as exc:
        main(["-q", "export", "vgg11", *TINY_ARGS, "--out", str(tmp_path / "b")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ONNX Runtime and PyTorch disagree")


def test_export_interrupted_exits_130_without_files(tmp_path: Path, monkeypatch, capsys) -> None:
    from vggdeploy.exporter import onnx_export

    def interrupted(model, dest: Path, options, *rest) -> None:
        dest.write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "export_onnx", interrupted)
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11", *TINY_ARGS, "--out", str(out)])
    assert exc.value.code == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["interrupted (no partial files were left behind)"]
    assert not out.exists()


def test_export_passes_every_option_through(tmp_path: Path, monkeypatch) -> None:
    """Every CLI option is passed through unchanged (the export itself is stubbed out)."""
    from vggdeploy.exporter import onnx_export

    seen = {}

    def fake_export(spec, weights, out, options, progress=None):
        seen.update(spec=spec, weights=weights, out=out, options=options)
        raise SystemExit(0)

    monkeypatch.setattr(onnx_export, "export_bundle", fake_export)
    labels = tmp_path / "labels.txt"
    with pytest.raises(SystemExit):
        main(
            [
                "export",
                "d-bn",
                "--weights",
                "random",
                "--seed",
                "7",
                "--out",
                str(tmp_path / "o"),
                "--image-size",
                "256",
                "--batch",
                "8",
                "--opset",
                "20",
                "--dense",
                "--num-classes",
                "5",
                "--width-divisor",
                "2",
                "--hidden",
                "128",
                "--labels",
                str(labels),
                "--resize",
                "300",
                "--mean",
                "0.5,0.4,0.3",
                "--std",
                "0.2,0.2,0.2",
                "--channel-order",
                "BGR",
                "--force",
            ]
        )
    spec, options = seen["spec"], seen["options"]
    assert (spec.name, spec.config, spec.batch_norm) == ("vgg16_bn", "D", True)
    assert (spec.num_classes, spec.width_divisor, spec.hidden) == (5, 2, 128)
    assert (seen["weights"].kind, seen["weights"].seed) == ("random", 7)
    assert seen["out"] == tmp_path / "o"
    assert (options.image_size, options.batch, options.opset) == (256, 8, 20)
    assert options.dense and options.force and options.labels == str(labels)
    pre = options.preprocessing
    assert (pre.resize, pre.crop, pre.channel_order) == (300, 256, "BGR")
    assert pre.mean == (0.5, 0.4, 0.3) and pre.std == (0.2, 0.2, 0.2)


def test_precision_choices_come_from_the_precision_module() -> None:
    """`build` and `convert` offer the precisions `vggdeploy.precision` declares, and the torch
    runtime runs its floating-point ones: one list each, in one home."""
    from vggdeploy import precision as P
    from vggdeploy.cli import cli
    from vggdeploy.runtimes.pytorch import TorchRuntime

    def choices(command: str) -> tuple[str, ...]:
        (param,) = [p for p in cli.commands[command].params if p.name == "precision"]
        return tuple(param.type.choices)

    assert choices("build") == P.ENGINE_NAMES == ("fp32", "fp16", "int8")
    assert choices("convert") == P.made_by("convert") == ("fp16",)
    assert P.made_by("calibrate") == ("int8",) and P.made_by("export") == ("fp32",)
    assert TorchRuntime.PRECISIONS == P.FLOAT_NAMES == ("fp32", "fp16")
    assert TorchRuntime.native_precisions("cpu") == ("fp32",)
    assert TorchRuntime.native_precisions("cuda") == ("fp32", "fp16")


def test_help_texts_copied_for_speed_match_the_registry() -> None:
    """--help spells the spec grammar and bench's default runtimes without importing the
    registry; those copies say what the registry does."""
    from vggdeploy import cli_options
    from vggdeploy.runtimes import registry

    assert cli_options.RUNTIME_SPEC_HELP == registry.SPEC_HELP
    defaults = ", ".join(s.runtime for s in registry.DEFAULT_BENCH_SPECS)
    assert defaults == cli_options.DEFAULT_BENCH_RUNTIMES_HELP
    out = " ".join(CliRunner().invoke(cli, ["bench", "--help"]).output.split())
    assert f"Default: {defaults} (those this host cannot run are listed as skipped)" in out
