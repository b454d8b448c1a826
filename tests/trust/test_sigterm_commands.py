"""Cause 4 of issue 18, tried on the real commands: SIGTERM at any moment of export (with and
without --force), calibrate, pack, unpack and pipeline leaves either the old or the new output
complete, no debris, exit 130 and the one `interrupted by SIGTERM` line, no traceback.

Each command runs as `vggdeploy` in a child process on the tiny VGG. Its moments are the file
system's own steps: the child counts every `os.replace` and `os.rename` it makes (a file put in
place, a folder swapped) and can pause just before or just after the k-th one; the parent sends
SIGTERM during that pause. A first run without a signal lists the steps, so every moment of a
command is named by its step, not by a timing guess. One more test waits only for the command's
own progress line on standard error, with nothing patched at all.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TINY = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]
PHOTOS = Path(__file__).parents[2] / "src" / "vggdeploy" / "data" / "calibration_images"
INTERRUPTED = "interrupted by SIGTERM (no partial files were left behind)"
#: the names an interrupted write or swap would leave (atomic.py, bundle.py, packaging/archive.py,
#: exporter/output_dir.py)
DEBRIS = (".partial", ".replaced", ".pending", ".unpacking")

#: run `vggdeploy ARGS` with every file-system step counted into LOG; MODE `before:K` or
#: `after:K` pauses around step K, touching READY, until the signal comes
CHILD = """
import os, sys, time
from pathlib import Path
ready, log, mode, args = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
step = [0]
def counted(name, real):
    def op(src, dst, *a, **k):
        i = step[0]
        step[0] += 1
        with open(log, "a") as f:
            f.write(f"{i} {name} {os.fspath(src)} -> {os.fspath(dst)}\\n")
        if mode == f"before:{i}":
            ready.touch()
            time.sleep(5)
        real(src, dst, *a, **k)
        if mode == f"after:{i}":
            ready.touch()
            time.sleep(5)
    return op
os.replace = counted("replace", os.replace)
os.rename = counted("rename", os.rename)
from vggdeploy.cli import main
main(args)
"""


def _child(tmp_path: Path, mode: str, args: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    ready, log = tmp_path / f"ready-{mode}", tmp_path / f"steps-{mode}.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(ready), str(log), mode, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    return proc, ready, log


def _steps(tmp_path: Path, args: list[str]) -> list[str]:
    """The file-system steps of one uninterrupted run (which must succeed)."""
    proc, _, log = _child(tmp_path, "count", args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return log.read_text().splitlines()


def _steps_in(tmp_path: Path, args: list[str], folder: str) -> list[str]:
    """The steps that put something in `folder` (a library's own temporary files elsewhere are
    not the command's output)."""
    return [line for line in _steps(tmp_path, args) if folder in Path(line.split(" -> ")[-1]).parts]


def _interrupt_at(tmp_path: Path, mode: str, args: list[str]) -> tuple[int, str]:
    proc, ready, _ = _child(tmp_path, mode, args)
    deadline = time.monotonic() + 600
    while not ready.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the command ended before step {mode}: {err}")
        assert time.monotonic() < deadline, "the command never reached its step"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def _assert_one_interrupted_line(code: int, err: str) -> None:
    assert code == 130, err
    assert "Traceback" not in err, err
    # a warning from the clean-up (e.g. a removed leftover) may come first; the last line is it
    lines = err.strip().splitlines()
    assert lines[-1] == INTERRUPTED, err
    assert not [line for line in lines if line.startswith("error:")], err


def _debris(root: Path) -> list[str]:
    if not root.exists():
        return []
    return [str(p) for p in root.rglob("*") if p.name.endswith(DEBRIS)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bundle_state(root: Path) -> dict[str, str] | None:
    """None for no bundle; else the sha256 of every file, after `vggdeploy inspect` accepts it
    and every file on disk is one the manifest lists (nothing half-recorded)."""
    if not root.exists() or not any(root.iterdir()):
        return None
    import json

    done = subprocess.run(
        [sys.executable, "-m", "vggdeploy", "inspect", str(root)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((root / "manifest.json").read_text())
    listed = {a["path"] for a in manifest["artifacts"].values()} | set(manifest["files"])
    # the manifest, the calibration cache (a cache the next calibrate checks, not a record) and
    # the checksum list `pack` adds
    listed |= {"manifest.json", "calibration.cache.json", "SHA256SUMS"}
    files = {
        p.relative_to(root).as_posix(): _sha(p)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert set(files) <= listed, (sorted(files), sorted(listed))
    del files["manifest.json"]  # it holds the time of its run: the artifacts tell old from new
    return files


def _moments(steps: list[str], middle: bool = False) -> list[str]:
    """The moments tried (each run takes seconds, so not all of them): before the first step
    (the work under way, a file half made), after the one before last (everything made, not yet
    in place), and before and after the last (the output put in place, then the report)."""
    ids = [line.split()[0] for line in steps]
    chosen = [f"before:{ids[0]}", f"before:{ids[-1]}", f"after:{ids[-1]}"]
    if len(ids) > 1:
        chosen.insert(1, f"after:{ids[-2]}")
    if middle:  # a long command: one moment halfway too
        chosen.insert(1, f"after:{ids[len(ids) // 2]}")
    return list(dict.fromkeys(chosen))


def _export(out: Path, *more: str) -> list[str]:
    return ["export", "vgg11_bn", *TINY, "--out", str(out), *more]


# -- the commands -----------------------------------------------------------------------------


def _check_every_moment(
    tmp_path: Path,
    args: list[str],
    setup: Callable[[Path], None],
    state: Callable[[Path], object],
    watched: str,
) -> None:
    """Run `args` once to list its steps and learn the new state, then again from `setup`'s old
    state for every moment, SIGTERM there, and require the old or the new state and no debris
    under the watched folder."""
    first = tmp_path / "first"
    first.mkdir(parents=True)
    setup(first)
    old = state(first / watched)
    steps = _steps(first, args)
    new = state(first / watched)
    assert new != old and new is not None
    moments = _moments(steps)
    assert moments, steps
    for mode in moments:
        where = tmp_path / mode.replace(":", "-")
        where.mkdir(parents=True)
        setup(where)
        code, err = _interrupt_at(where, mode, args)
        _assert_one_interrupted_line(code, err)
        assert _debris(where) == [], (mode, steps)
        got = state(where / watched)
        assert got in (old, new), (mode, steps)


def _no_setup(where: Path) -> None:
    pass


def _with_bundle(tiny_bundle_ro: Path, name: str = "bundle") -> Callable[[Path], None]:
    def setup(where: Path) -> None:
        shutil.copytree(tiny_bundle_ro, where / name)

    return setup


def test_sigterm_during_export_leaves_no_bundle_or_the_whole_one(tmp_path) -> None:
    _check_every_moment(tmp_path, _export(Path("out")), _no_setup, _bundle_state, "out")


def test_sigterm_during_export_force_leaves_the_old_bundle_or_the_new_one(
    tmp_path, tiny_bundle_ro
) -> None:
    # the new bundle has other weights (seed 1), so old and new differ in every ONNX byte
    args = _export(Path("bundle"), "--force", "--weights", "random", "--seed", "1")
    _check_every_moment(tmp_path, args, _with_bundle(tiny_bundle_ro), _bundle_state, "bundle")


def test_sigterm_during_calibrate_leaves_the_bundle_consistent(tmp_path, tiny_bundle_ro) -> None:
    args = ["calibrate", "bundle", "--images", str(PHOTOS), "--samples", "4"]
    first = tmp_path / "first"

    # a calibrated bundle holds more records; an interrupted one either the old set or the new
    # one, or the old set plus whole, recorded artifacts (cache before the model): every state
    # `inspect` accepts with nothing unrecorded is consistent
    first.mkdir()
    _with_bundle(tiny_bundle_ro)(first)
    steps = _steps_in(first, args, "bundle")
    assert steps
    for mode in _moments(steps):
        where = tmp_path / mode.replace(":", "-")
        where.mkdir()
        _with_bundle(tiny_bundle_ro)(where)
        code, err = _interrupt_at(where, mode, args)
        _assert_one_interrupted_line(code, err)
        assert _debris(where) == [], (mode, steps)
        got = _bundle_state(where / "bundle")
        assert got is not None
        old = _bundle_state(tiny_bundle_ro)
        assert old is not None
        assert {k: v for k, v in got.items() if k in old and k != "manifest.json"} == {
            k: v for k, v in old.items() if k != "manifest.json"
        }, mode


def _archive_state(path: Path) -> str | None:
    if not path.exists():
        return None
    with tarfile.open(path) as tar:  # a whole gzip stream and tar, or this raises
        names = tar.getnames()
    assert "manifest.json" in [n.split("/")[-1] for n in names]
    return _sha(path)


def test_sigterm_during_pack_leaves_no_archive_or_the_old_or_the_new(
    tmp_path, tiny_bundle_ro
) -> None:
    def setup(where: Path) -> None:
        _with_bundle(tiny_bundle_ro)(where)
        (where / "out").mkdir()
        (where / "out" / "b.tar.gz").write_bytes(b"an old archive, not a tar")

    def state(out: Path) -> str | None:
        path = out / "b.tar.gz"
        if path.read_bytes() == b"an old archive, not a tar":
            return "old"
        return _archive_state(path)

    args = ["pack", "bundle", "--output", "out/b.tar.gz"]
    _check_every_moment(tmp_path, args, setup, state, "out")


def test_sigterm_during_unpack_leaves_the_old_bundle_or_the_new_one(
    tmp_path, tiny_bundle_ro
) -> None:
    archive = tmp_path / "b.tar.gz"
    packed = subprocess.run(
        [sys.executable, "-m", "vggdeploy", "pack", str(tiny_bundle_ro), "--output", str(archive)],
        capture_output=True,
        text=True,
    )
    assert packed.returncode == 0, packed.stderr
    other = tmp_path / "other"
    made = subprocess.run(
        [sys.executable, "-m", "vggdeploy", *_export(other, "--seed", "1")],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr

    def setup(where: Path) -> None:
        shutil.copytree(other, where / "out")

    args = ["unpack", str(archive), "--output", "out", "--force"]
    _check_every_moment(tmp_path / "runs", args, setup, _bundle_state, "out")


def test_sigterm_during_pipeline_leaves_a_consistent_run_folder(tmp_path) -> None:
    args = [
        "pipeline",
        "vgg11_bn",
        *TINY,
        "--out",
        "run",
        "--precision",
        "fp32,int8",
        "--calib-samples",
        "4",
        "--validate-samples",
        "2",
        "--batch",
        "1",
        "--bench-iterations",
        "2",
        "--bench-runtime",
        "onnxruntime",
    ]
    first = tmp_path / "first"
    first.mkdir()
    steps = _steps_in(first, args, "run")
    moments = _moments(steps, middle=True)
    assert moments
    for mode in moments:
        where = tmp_path / mode.replace(":", "-")
        where.mkdir()
        code, err = _interrupt_at(where, mode, args)
        _assert_one_interrupted_line(code, err)
        assert _debris(where) == [], (mode, steps)
        _bundle_state(where / "run" / "bundle")


def test_sigterm_at_an_export_progress_line_with_nothing_patched(tmp_path, tiny_bundle_ro) -> None:
    """No hook in the child: the signal follows the command's first parity line on stderr."""
    shutil.copytree(tiny_bundle_ro, tmp_path / "bundle")
    old = _bundle_state(tmp_path / "bundle")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggdeploy", *_export(Path("bundle"), "--force", "--seed", "1")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("parity b="):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=600)
    err = "".join(seen) + rest
    _assert_one_interrupted_line(proc.returncode, err)
    assert _debris(tmp_path) == []
    assert _bundle_state(tmp_path / "bundle") == old  # parity ran before the swap: the old one
