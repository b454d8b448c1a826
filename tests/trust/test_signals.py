"""Cause 4 of issue 18: SIGTERM and SIGHUP do what Ctrl-C does. Real subprocesses, real
signals; the child waits at a known step (a patched write) so no timing is involved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WRITE_THEN_WAIT = """
import sys, time
from pathlib import Path
import vggdeploy.atomic as b
from vggdeploy.cli import main
ready = Path(sys.argv[1])
def slow_write(dest, data):
    with b.atomic_path(dest) as tmp:
        tmp.write_bytes(data[:10])
        ready.touch()
        time.sleep(60)
b.atomic_write_bytes = slow_write
main(["models", "--json", sys.argv[2]])
"""

SWAP_THEN_WAIT = """
import sys, time
from pathlib import Path
import vggdeploy.atomic as b
from vggdeploy.cli import _install_stop_handlers
ready, root = Path(sys.argv[1]), Path(sys.argv[2])
def hook(step):
    if step == "aside":
        ready.touch()
        time.sleep(3)  # the signal arrives here, held until the swap is done
b._swap_hook = hook
_install_stop_handlers()
try:
    b.replace_folder(root / "staging", root / "out", replace=True)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _run_until_ready(script: str, tmp_path: Path, *args: str) -> subprocess.Popen:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(ready), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never reached its step"
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_during_a_write_cleans_up_like_ctrl_c(tmp_path, sig) -> None:
    out = tmp_path / "out" / "zoo.json"
    proc = _run_until_ready(WRITE_THEN_WAIT, tmp_path, str(out))
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        "interrupted"
        + ("" if sig == signal.SIGINT else f" by {sig.name}")
        + " (no partial files were left behind)"
    ]
    assert os.listdir(out.parent) == []  # no .partial file, no half-written JSON


def test_sigterm_during_a_force_swap_is_held_until_the_new_folder_is_in_place(tmp_path) -> None:
    for name, text in (("out", "old"), ("staging", "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(text)
    proc = _run_until_ready(SWAP_THEN_WAIT, tmp_path, str(tmp_path))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (tmp_path / "out" / "manifest.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out", "ready"]  # nothing .replaced left
