"""Cause 3 of issue 18, tried on the real commands: hostile file names, labels and model names
(escape sequences, OSC 8 hyperlinks, carriage returns, newlines, bidi and C1 controls) never
reach standard output, standard error, a log line or a Markdown report raw, and never forge a
line of their own (`error: forged`).

Hypothesis draws the hostile text; one text names the output folder of a bundle (so every path
printed holds it), the images, the archive and the package folders, and makes the labels; a
copy of the bundle carries it as its model name. Each command runs in this process through
`vggdeploy.cli.main`, its output and its log records caught.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from vggdeploy.cli import main

TINY = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]
FORGED = "error: forged"
#: pieces of hostile text: CSI (clear screen, colour), OSC (window title, an OSC 8 hyperlink),
#: C1 CSI, bell, carriage return, newlines that would forge a line, bidi overrides and isolates,
#: a zero-width joiner, Unicode line separators; and ordinary text between them
PIECES = [
    "\x1b[2J",
    "\x1b[31m",
    "\x1b]0;owned\x07",
    "\x1b]8;;mailto:x@evil.example\x1b\\click\x1b]8;;\x1b\\",  # no "/": a file name holds it
    "\x9b1;31m",
    "\x85",
    "\x07",
    "\r",
    "\n",
    "\n" + FORGED,
    "\r" + FORGED,
    "\u202e",
    "\u2066",
    "\u200d",
    "\u2028",
    "a",
    " ",
    "é",
]
#: the characters `str.splitlines` splits on: a label is one line of labels.txt
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"

hostile = st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map(lambda p: "x" + "".join(p))


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if not c.isprintable() and c != "\n"]


def _forged(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith(FORGED)]


class _Caught:
    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.codes: list[tuple[str, int]] = []

    def run(self, *args: object) -> int:
        out, err = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(err)  # the CLI puts its escaping filter on it too
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    main([str(a) for a in args])
                    code = 0
                except SystemExit as exc:
                    code = int(exc.code or 0)
        finally:
            root.removeHandler(handler)
        what = " ".join(str(a) for a in args[:1])
        self.codes.append((what, code))
        self.texts += [(f"{what} stdout", out.getvalue()), (f"{what} stderr", err.getvalue())]
        return code

    def file(self, path: Path) -> None:
        if path.is_file():
            self.texts.append((str(path), path.read_text("utf-8")))

    def check(self) -> None:
        """Every leak at once: where, and the lines that hold it."""
        leaks = [
            (where, line)
            for where, text in self.texts
            for line in text.splitlines()
            if _raw_controls(line) or _forged(line)
        ]
        assert leaks == [], "\n".join(f"{w}: {line!r}" for w, line in leaks)


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (36, 36, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(
    name="x\x1b[2J\x1b]8;;mailto:x@e.example\x1b\\l\x1b]8;;\x1b\\\x9b1m\x85\x07\r\n"
    + FORGED
    + "\u202e\u2066\u2028é"
)
@given(name=hostile)
def test_hostile_names_never_reach_the_terminal_or_a_report_raw(tmp_path, name) -> None:
    # a file name holds 255 bytes; " unpacked" and the like are added to it
    name = name.encode()[:160].decode(errors="ignore")
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    label = "".join(c for c in name if c not in LINE_BREAKS)
    labels = [f"{label}{i}" for i in range(10)]
    (root / "labels.txt").write_text("\n".join(labels) + "\n", "utf-8")
    images = root / f"images {name}"
    for i in range(3):
        _image(images / f"{name}{i}.png", i)
    labelled = root / "labelled"
    for i in range(2):
        _image(labelled / labels[i] / f"{name}.png", 10 + i)
    bundle = root / name / "bundle"
    caught = _Caught()
    code = caught.run("export", "vgg11_bn", *TINY, "--labels", root / "labels.txt", "--out", bundle)
    assert code == 0, caught.texts

    ort = ["--runtime", "onnxruntime"]
    caught.run("inspect", bundle)
    caught.run("validate", bundle, *ort, "--samples", "2")
    caught.run("predict", bundle, *ort, images / f"{name}0.png", images / f"{name}1.png")
    caught.run("evaluate", bundle, *ort, "--images", labelled)
    bench_md = ["--iterations", "2", "--batch", "1", "--markdown", root / "b.md"]
    caught.run("bench", bundle, *ort, *bench_md)
    caught.file(root / "b.md")
    caught.run("calibrate", bundle, "--images", images, "--samples", "2")
    caught.run("convert", bundle, "--precision", "fp16", "--images", images, "--samples", "2")
    archive = root / f"{name}.tar.gz"
    caught.run("pack", bundle, "--output", archive)
    caught.run("unpack", archive, "--output", root / f"{name} unpacked")
    for fmt in ("triton", "deepstream"):
        caught.run("package", bundle, "--format", fmt, "--out", root / f"{name} {fmt}")
    run = root / f"{name} run"
    caught.run(
        "pipeline", "vgg11_bn", *TINY, "--out", run, "--precision", "fp32",
        "--images", images, "--validate-samples", "2", "--batch", "1",
        "--bench-iterations", "2", "--bench-runtime", "onnxruntime",
    )  # fmt: skip
    for md in ("report.md", "bench.md"):
        caught.file(run / md)
    caught.check()
    # every command ran to its end (so each printed what it prints on success)
    assert [what for what, code in caught.codes if code != 0] == [], caught.texts

    # the same bundle with the hostile text as its model name: refused, in one escaped line
    named = root / "named"
    shutil.copytree(bundle, named)
    manifest = json.loads((named / "manifest.json").read_text())
    manifest["model"]["name"] = name
    (named / "manifest.json").write_text(json.dumps(manifest))
    refused = _Caught()
    for args in (["inspect"], ["validate", *ort], ["bench", *ort, "--iterations", "2"]):
        assert refused.run(args[0], named, *args[1:]) == 1
        err = refused.texts[-1][1]
        assert err.startswith("error: ") and "model.name" in err and err.count("\n") == 1, err
    refused.check()
