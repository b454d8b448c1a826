"""`export` replaces only on success: a failed, refused or interrupted run leaves OUT as it was.

Every case drives the CLI and checks the exit code, the one `error: ...` line (no traceback),
that the old bundle's files and sha256 are unchanged, and that nothing (no staging folder, no
`.partial` file) is left beside it. Numbers out of range are refused before anything is
allocated or written.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from waiting import wait_for_size

from vggdeploy.bundle import sha256_file
from vggdeploy.cli import main
from vggdeploy.exporter import onnx_export, output_dir

TINY_ARGS = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]
INTERRUPTED = "interrupted (no partial files were left behind)"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` (hidden ones included) -> its sha256."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def export_args(out: Path, *extra: str, model: str = "vgg11") -> list[str]:
    return ["-q", "export", model, *TINY_ARGS, "--out", str(out), *extra]


@pytest.fixture
def old(tiny_bundle: Path) -> tuple[Path, dict[str, str]]:
    """A bundle about to be replaced with --force, and its files' sha256 now."""
    return tiny_bundle, snapshot(tiny_bundle)


def assert_untouched(bundle: Path, before: dict[str, str]) -> None:
    assert snapshot(bundle) == before
    # Nothing beside it either: no staging folder, no renamed-aside copy.
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]


# -- --force on an existing bundle --------------------------------------------------------------


def test_force_replaces_a_bundle_on_success(old, capsys) -> None:
    bundle, before = old
    code, out, err = run_cli(export_args(bundle, "--force"), capsys)
    assert (code, err) == (0, "")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["name"] == "vgg11"  # the old one was vgg11_bn
    assert snapshot(bundle) != before
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]


@pytest.mark.parametrize(
    "weights, needle",
    [("{tmp}/missing.pth", "does not exist"), ("{tmp}/corrupt.pth", "cannot read weights file")],
)
def test_force_with_bad_weights_keeps_the_old_bundle(old, capsys, weights, needle) -> None:
    bundle, before = old
    tmp = bundle.parent.parent
    (tmp / "corrupt.pth").write_bytes(b"PK\x03\x04 not a zip" * 10)
    weights = weights.format(tmp=tmp)
    code, _, err = run_cli(export_args(bundle, "--force", "--weights", weights), capsys)
    assert code == 1
    assert one_line(err).startswith("error: ") and needle in err
    assert_untouched(bundle, before)


def test_force_with_a_parity_failure_keeps_the_old_bundle(old, capsys, monkeypatch) -> None:
    """A bundle that fails its own check never replaces one that passed: exit 2, figures shown."""
    bundle, before = old
    real = onnx_export.compare_arrays
    monkeypatch.setattr(
        onnx_export, "compare_arrays", lambda ref, got: real(ref, got + np.abs(ref).max())
    )
    code, _, err = run_cli(export_args(bundle, "--force"), capsys)
    assert code == 2
    line = one_line(err)
    assert line.startswith("error: ONNX Runtime and PyTorch disagree (max rel diff ")
    assert f"the bundle in {bundle} was not replaced" in line
    assert_untouched(bundle, before)


def test_a_parity_failure_in_a_fresh_folder_keeps_the_figures(tmp_path: Path, capsys, monkeypatch):
    real = onnx_export.compare_arrays
    monkeypatch.setattr(
        onnx_export, "compare_arrays", lambda ref, got: real(ref, got + np.abs(ref).max())
    )
    out = tmp_path / "b"
    code, _, err = run_cli(export_args(out), capsys)
    assert code == 2
    assert f"figures in {out / 'manifest.json'}" in one_line(err)
    assert json.loads((out / "manifest.json").read_text())["parity"]["passed"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _raise_in_exporter(monkeypatch, exc: BaseException) -> None:
    import torch

    def export(*args, **kwargs):
        raise exc

    monkeypatch.setattr(torch.onnx, "export", export)


def _wrapped_interrupt() -> BaseException:
    """What an exporter that wraps everything it meets while tracing raises on Ctrl-C."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as inner:
            raise RuntimeError("torch._dynamo: error while tracing") from inner
    except RuntimeError as outer:
        return outer


def _context_interrupt() -> BaseException:
    """An interrupt only in `__context__` (raised while handling it, without `from`)."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("cleanup failed") from None
    except ValueError as exc:
        exc.__suppress_context__ = False
        return exc


@pytest.mark.parametrize(
    "make",
    [KeyboardInterrupt, _wrapped_interrupt, _context_interrupt],
    ids=["plain", "wrapped-cause", "wrapped-context"],
)
def test_ctrl_c_in_the_exporter_exits_130_and_keeps_the_old_bundle(
    old, capsys, monkeypatch, make
) -> None:
    bundle, before = old
    _raise_in_exporter(monkeypatch, make())
    code, _, err = run_cli(export_args(bundle, "--force"), capsys)
    assert (code, one_line(err)) == (130, INTERRUPTED)
    assert_untouched(bundle, before)


def test_ctrl_c_in_a_fresh_folder_leaves_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    def interrupted(model, onnx_path, options, *checks):
        # The parity check runs while the file is written: interrupt once it is written.
        assert wait_for_size(onnx_path, 10_000) > 10_000
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "check_parity", interrupted)
    code, _, err = run_cli(export_args(tmp_path / "a" / "b" / "out"), capsys)
    assert (code, one_line(err)) == (130, INTERRUPTED)
    assert list(tmp_path.iterdir()) == []  # not even the parent folders it made


def test_an_exporter_error_is_one_line(old, capsys, monkeypatch) -> None:
    bundle, before = old
    _raise_in_exporter(monkeypatch, RuntimeError("unsupported op\nsecond line\nthird"))
    code, _, err = run_cli(export_args(bundle, "--force"), capsys)
    assert code == 1
    assert one_line(err) == "error: the ONNX exporter failed: unsupported op"
    assert_untouched(bundle, before)


def test_a_full_disk_keeps_the_old_bundle(old, capsys, monkeypatch) -> None:
    bundle, before = old

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx_export, "finish_onnx", full)
    code, _, err = run_cli(export_args(bundle, "--force"), capsys)
    assert code == 1
    line = one_line(err)
    assert "No space left on device" in line and "free some space" in line
    assert_untouched(bundle, before)


def test_a_failed_swap_puts_the_old_bundle_back(old, capsys, monkeypatch) -> None:
    bundle, before = old
    real = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(f".{bundle.name}.export-"):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real(src, dst)

    monkeypatch.setattr(output_dir.os, "rename", rename)
    code, _, err = run_cli(export_args(bundle, "--force"), capsys)
    assert code == 1
    assert "cannot move the new bundle into" in one_line(err)
    assert_untouched(bundle, before)


def test_force_follows_a_symbolic_link_to_a_bundle(old, capsys) -> None:
    bundle, _ = old
    link = bundle.parent.parent / "link"
    link.symlink_to(bundle, target_is_directory=True)
    code, _, err = run_cli(export_args(link, "--force"), capsys)
    assert (code, err) == (0, "")
    assert link.is_symlink() and (bundle / "model.onnx").is_file()
    assert json.loads((bundle / "manifest.json").read_text())["model"]["name"] == "vgg11"


# -- refusals: nothing deleted ------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, needle",
    [
        ({"notes.txt": "mine"}, "it has no manifest.json"),
        ({"manifest.json": '{"manifest_version": 3, "name": "my extension"}'}, "manifest.json"),
        ({"manifest.json": "{broken"}, "manifest.json"),
    ],
    ids=["no-manifest", "someone-elses-manifest", "corrupt-manifest"],
)
def test_force_refuses_a_folder_that_is_not_a_bundle(tmp_path: Path, capsys, files, needle):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = snapshot(out)
    code, _, err = run_cli(export_args(out, "--force"), capsys)
    assert code == 1
    line = one_line(err)
    assert "is not a vggdeploy bundle" in line and needle in line
    assert "--force will not replace it" in line
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_without_force_a_bundle_is_refused(old, capsys) -> None:
    bundle, before = old
    code, _, err = run_cli(export_args(bundle), capsys)
    assert code == 1 and "is not empty" in one_line(err) and "--force" in err
    assert_untouched(bundle, before)


def test_an_empty_folder_is_filled_in_place(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino
    code, _, err = run_cli(export_args(out), capsys)
    assert (code, err) == (0, "")
    assert out.stat().st_ino == inode  # the same folder (a mount point keeps working)
    assert {"manifest.json", "model.onnx"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]


def test_an_empty_folder_stays_empty_on_failure(tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _raise_in_exporter(monkeypatch, KeyboardInterrupt())
    code, _, err = run_cli(export_args(out), capsys)
    assert (code, one_line(err)) == (130, INTERRUPTED)
    assert list(out.iterdir()) == []


# -- numbers out of range: refused before anything is allocated or written -------------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--image-size", "100000"], "image size 100000 is too large: at most 4096"),
        (["--image-size", "4128"], "at most 4096"),
        (["--seed", "-1"], "--seed -1 is not supported"),
        (["--seed", str(2**64)], "is not supported"),
        (["--num-classes", "0"], "--num-classes"),
        (["--num-classes", str(10**9)], "num_classes 1000000000 is too large"),
        (["--hidden", str(10**9)], "hidden 1000000000 is too large"),
        (["--hidden", "16384", "--width-divisor", "1"], "fit one ONNX file"),
        (["--opset", "99"], "opset 99 is not supported"),
        (["--batch", "0"], "must be a positive integer"),
        (["--batch", "-3"], "must be a positive integer"),
        (["--batch", "100000000"], "batch 100000000 is too large: at most 4096"),
        (["--mean", "nan,0.5,0.5"], "finite numbers"),
        (["--mean", "inf,0.5,0.5"], "finite numbers"),
        (["--std", "nan,0.2,0.2"], "finite numbers"),
        (["--std", "0.2,inf,0.2"], "finite numbers"),
        (["--std", "0,0.2,0.2"], "std all positive"),
        (["--std", "-1,0.2,0.2"], "std all positive"),
        (["--resize", "16"], "--resize 16 must be between the crop"),
        (["--resize", "-5"], "--resize -5 must be between the crop"),
        (["--resize", str(10**9)], "must be between the crop"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_out_of_range_numbers_are_one_line(tmp_path: Path, capsys, monkeypatch, extra, needle):
    from vggdeploy import models

    def no_model(spec):
        raise AssertionError("a model was built for a refused option")

    monkeypatch.setattr(models, "build_model", no_model)
    out = tmp_path / "out"
    code, _, err = run_cli(["export", "vgg11", "--out", str(out), *TINY_ARGS, *extra], capsys)
    line = one_line(err)
    assert code != 0 and line.startswith("error: ") and needle in line, line
    assert list(tmp_path.iterdir()) == []
