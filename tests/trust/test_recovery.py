"""Cause 5 of issue 18: the --force folder swap and the artifact+record pair are recoverable.
A process killed between two steps is modelled by an exception no handler catches (`Killed`,
raised from the step hook); the next command must finish or roll back what it finds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import vggdeploy.atomic as b
from vggdeploy.bundle import Bundle, replace_folder


class Killed(BaseException):
    """The process dying at this point (nothing after it runs)."""


def _folders(tmp_path: Path) -> None:
    for name, text in (("out", "old"), ("staging", "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(text)


def _kill_at(monkeypatch, step: str) -> None:
    def hook(now: str) -> None:
        if now == step:
            raise Killed

    monkeypatch.setattr(b, "_swap_hook", hook)


@pytest.mark.parametrize(("step", "survivor"), [("aside", "old"), ("swapped", "new")])
def test_a_swap_killed_between_its_renames_is_finished_by_the_next_command(
    tmp_path, monkeypatch, step, survivor
) -> None:
    _folders(tmp_path)
    _kill_at(monkeypatch, step)
    with pytest.raises(Killed):
        replace_folder(tmp_path / "staging", tmp_path / "out", replace=True)
    assert any(n.endswith(".replaced") for n in os.listdir(tmp_path))
    monkeypatch.setattr(b, "_swap_hook", lambda step: None)

    b.recover_swap(tmp_path / "out")  # what Bundle.load and the next replace_folder run first
    assert (tmp_path / "out" / "manifest.json").read_text() == survivor
    assert not any(n.endswith(".replaced") for n in os.listdir(tmp_path))


def test_bundle_load_restores_a_bundle_left_aside(tiny_bundle, monkeypatch) -> None:
    staging = tiny_bundle.parent / "staging"
    shutil.copytree(tiny_bundle, staging)
    _kill_at(monkeypatch, "aside")
    with pytest.raises(Killed):
        replace_folder(staging, tiny_bundle, replace=True)
    assert not tiny_bundle.exists()
    assert Bundle.load(tiny_bundle).has_artifact("onnx.fp32")


def test_recovery_leaves_other_folders_alone(tmp_path) -> None:
    (tmp_path / ".out.b.abcdefgh.replaced").mkdir()  # belongs to a folder named "out.b"
    (tmp_path / ".out.b.abcdefgh.replaced" / "x").write_text("keep")
    b.recover_swap(tmp_path / "out")
    assert (tmp_path / ".out.b.abcdefgh.replaced" / "x").exists()


def test_an_artifact_written_without_its_record_is_removed_on_load(tiny_bundle) -> None:
    bundle = Bundle.load(tiny_bundle)
    dest = tiny_bundle / "model.int8.onnx"
    with pytest.raises(Killed), bundle.writing(dest.name):
        dest.write_bytes(b"new bytes, no record yet")
        (tiny_bundle / ".model.int8.onnx.pending").touch()  # (unlinked by the block's end)
        raise Killed
    assert not dest.exists()  # an interrupt in the block rolls back at once

    # A process killed outright leaves the marker, unheld, beside the file.
    dest.write_bytes(b"new bytes, no record yet")
    (tiny_bundle / ".model.int8.onnx.pending").touch()
    loaded = Bundle.load(tiny_bundle)
    assert not dest.exists()
    assert not (tiny_bundle / ".model.int8.onnx.pending").exists()
    assert "onnx.int8" not in loaded.artifacts


def test_a_complete_artifact_and_record_survive_recovery(tiny_bundle) -> None:
    (tiny_bundle / ".model.onnx.pending").touch()  # killed after the record was written
    loaded = Bundle.load(tiny_bundle)
    assert loaded.artifact_path("onnx.fp32", verify=True).is_file()
    assert not (tiny_bundle / ".model.onnx.pending").exists()


def test_a_replaced_artifact_whose_record_is_stale_is_removed_with_its_record(tiny_bundle) -> None:
    (tiny_bundle / "model.onnx").write_bytes(b"replaced, record not yet written")
    (tiny_bundle / ".model.onnx.pending").touch()
    loaded = Bundle.load(tiny_bundle)
    assert "onnx.fp32" not in loaded.artifacts
    assert not (tiny_bundle / "model.onnx").exists()


def test_ctrl_c_between_the_int8_file_and_its_record_leaves_a_consistent_bundle(
    tiny_bundle, tmp_path, monkeypatch, capsys
) -> None:
    import numpy as np
    from PIL import Image

    from vggdeploy.cli import main

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")

    def interrupted(self, key, path, **facts):
        assert (self.root / path).is_file()  # the file is in place, its record not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(Bundle, "add_artifact", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(tiny_bundle), "--images", str(images), "--samples", "4"])
    assert exc.value.code == 130
    assert capsys.readouterr().err.strip().endswith("(no partial files were left behind)")
    left = sorted(os.listdir(tiny_bundle))
    assert "model.int8.onnx" not in left
    assert not [n for n in left if n.endswith((".pending", ".partial"))]
    assert "onnx.int8" not in Bundle.load(tiny_bundle).artifacts
