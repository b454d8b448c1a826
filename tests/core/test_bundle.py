"""The bundle as a boundary: one containment rule, a lock around every manifest update."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vggdeploy.bundle import Bundle, atomic_write_text
from vggdeploy.errors import BundleError


def _set(bundle_dir: Path, **fields) -> None:
    data = json.loads((bundle_dir / "manifest.json").read_text())
    data.update(fields)
    (bundle_dir / "manifest.json").write_text(json.dumps(data))


def test_a_symlink_leaving_the_bundle_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    (tiny_bundle / "labels.txt").symlink_to(secret)
    _set(tiny_bundle, labels="labels.txt")
    bundle = Bundle.load(tiny_bundle)
    with pytest.raises(BundleError, match="labels 'labels.txt' leads outside the bundle"):
        bundle.labels()


def test_an_artifact_symlinked_out_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.onnx"
    os.replace(tiny_bundle / "model.onnx", outside)
    (tiny_bundle / "model.onnx").symlink_to(outside)
    bundle = Bundle.load(tiny_bundle)
    with pytest.raises(BundleError, match="leads outside the bundle"):
        bundle.artifact_path("onnx.fp32")


def test_a_symlink_inside_the_bundle_is_fine(tiny_bundle: Path) -> None:
    atomic_write_text(tiny_bundle / "names.txt", "\n".join(str(i) for i in range(10)) + "\n")
    (tiny_bundle / "labels.txt").symlink_to("names.txt")
    _set(tiny_bundle, labels="labels.txt")
    Bundle.load(tiny_bundle).add_file("labels.txt")
    assert Bundle.load(tiny_bundle).labels() == [str(i) for i in range(10)]


_ADD = textwrap.dedent(
    """
    import shutil, sys, time
    from pathlib import Path
    from vggdeploy.bundle import Bundle
    root, key = Path(sys.argv[1]), sys.argv[2]
    name = key.replace(".", "_") + ".onnx"
    shutil.copy(root / "model.onnx", root / name)
    bundle = Bundle.load(root)  # read before the others write: a stale copy
    time.sleep(0.5)
    bundle.add_artifact(key, name, kind="onnx", precision=key.split(".", 1)[1])
    """
)


def test_concurrent_stages_keep_every_record(tiny_bundle: Path) -> None:
    """Real processes, each holding a stale manifest, add their artifact at the same time."""
    keys = ["onnx.fp16", "onnx.int8"]
    procs = [subprocess.Popen([sys.executable, "-c", _ADD, str(tiny_bundle), key]) for key in keys]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert set(Bundle.load(tiny_bundle).artifacts) == {"onnx.fp32", *keys}


def test_a_waiting_stage_says_so(tiny_bundle: Path, caplog) -> None:
    import fcntl

    holder = os.open(tiny_bundle / ".manifest.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    script = textwrap.dedent(
        """
        import logging, sys
        logging.basicConfig(level=logging.WARNING)
        from vggdeploy.bundle import Bundle
        with Bundle.load(sys.argv[1]).update():
            pass
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tiny_bundle)], stderr=subprocess.PIPE, text=True
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # it waits for the lock...
    finally:
        os.close(holder)  # ...and goes on once it is released
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "waiting for another vggdeploy process" in err


def test_ctrl_c_during_a_swap_is_held_until_it_is_done() -> None:
    import signal

    from vggdeploy.bundle import interrupts_deferred

    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done = True  # still runs: the signal waits for the block's end
    assert done
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_replace_folder_swaps_and_keeps_one_complete_folder(tmp_path: Path) -> None:
    from vggdeploy.bundle import replace_folder

    old, new = tmp_path / "out", tmp_path / "new"
    old.mkdir()
    (old / "a").write_text("old")
    new.mkdir()
    (new / "b").write_text("new")
    with pytest.raises(OSError):
        replace_folder(new, old, replace=False)  # a non-empty folder is never replaced
    assert (old / "a").read_text() == "old"
    replace_folder(new, old, replace=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (old / "b").read_text() == "new" and not (old / "a").exists()
