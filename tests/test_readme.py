"""Every command the README shows works, run in order (issue 19).

The README's `sh` blocks are read as they are: the first set-up one-liner's own `vggdeploy`
command (the quick start: `pipeline vgg16 --out runs/vgg16`, seeded random weights) makes the
bundle, then every `vggdeploy ...` line of the other `sh` blocks runs, in order, through the
project's console script in this venv, in a temporary working folder. The two set-up
one-liners themselves (they create venvs) are not run. The folder holds a link to the
checkout's `src/`, since the README's commands run at the root of the checkout and read the
photographs shipped in src/vggdeploy/data. A line of an `sh` block that is not a vggdeploy
command fails the test: the README shows only commands that are run here.

Slow (VGG-16 work): the quick start's pipeline, then the tour.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETUP = "python3 -m venv .venv"
FENCE = re.compile(r"^```sh[ \t]*\n(.*?)^```", re.M | re.S)


def sh_blocks(text: str) -> list[str]:
    return [m.group(1) for m in FENCE.finditer(text)]


def block_commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def readme_commands(text: str) -> tuple[list[str], list[list[str]]]:
    """(the quick start's vggdeploy arguments, the arguments of every other vggdeploy line)."""
    blocks = sh_blocks(text)
    setups = [b for b in blocks if b.lstrip().startswith(SETUP)]
    assert len(setups) == 2, f"expected the two set-up one-liners in README.md, found {len(setups)}"
    main = setups[0].strip().split(" && ")[-1]
    assert main.startswith(".venv/bin/vggdeploy "), f"the quick start ends in {main!r}"
    quick_start = shlex.split(main)[1:]
    tour: list[list[str]] = []
    for block in blocks:
        if block in setups:
            continue
        for argv in block_commands(block):
            if not argv:  # a comment line
                continue
            assert argv[0] == "vggdeploy", (
                f"README.md shows {shlex.join(argv)!r} in an sh block: only vggdeploy commands, "
                f"which tests/test_readme.py runs, belong in sh blocks"
            )
            tour.append(argv[1:])
    return quick_start, tour


def test_reader_takes_commands_in_order() -> None:
    text = (
        f"```sh\n{SETUP} && .venv/bin/pip install x && .venv/bin/vggdeploy pipeline m --out r\n```\n"
        f"```sh\n{SETUP} && .venv/bin/pytest\n```\n"
        "```sh\nvggdeploy models   # the zoo\n# a comment\nvggdeploy bench b --runtime \\\n"
        "    onnxruntime --batch 1\n```\n```text\nnot run\n```\n"
    )
    quick, tour = readme_commands(text)
    assert quick == ["pipeline", "m", "--out", "r"]
    assert tour == [["models"], ["bench", "b", "--runtime", "onnxruntime", "--batch", "1"]]
    with pytest.raises(AssertionError, match="only vggdeploy commands"):
        readme_commands(text.replace("vggdeploy models", "docker run x"))


def _entry_point() -> Path:
    script = Path(sys.executable).parent / "vggdeploy"
    assert script.exists(), f"no vggdeploy console script beside {sys.executable}: pip install -e ."
    return script


def _run(argv: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        [str(_entry_point()), *argv], cwd=cwd, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, (
        f"`vggdeploy {shlex.join(argv)}` from README.md exited {proc.returncode}:\n"
        f"{proc.stderr[-3000:]}"
    )
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path: Path) -> None:
    quick_start, tour = readme_commands(README.read_text("utf-8"))
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)
    _run(quick_start, tmp_path)
    assert tour, "README.md shows no vggdeploy command besides the quick start"
    for argv in tour:
        output = _run(argv, tmp_path)
        if argv == quick_start:  # the README says a re-run redoes nothing
            assert ": done in " not in output, f"a stage of the re-run was redone:\n{output}"
