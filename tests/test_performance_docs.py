"""docs/performance.md is written by the scripts that measure it (issue 19): each script in
benchmarks/ takes `--write-docs` and owns one marked section, and the shared helper
(benchmarks/docs_section.py) rewrites that section and nothing else."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PAGE = ROOT / "docs" / "performance.md"
HELPER = BENCHMARKS / "docs_section.py"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p != HELPER)


def _helper():
    spec = importlib.util.spec_from_file_location("docs_section", HELPER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs_section = _helper()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_each_script_has_its_section(script: Path) -> None:
    begin, end = docs_section.markers(script.stem)
    lines = [line.strip() for line in PAGE.read_text("utf-8").splitlines()]
    assert lines.count(begin) == 1 and lines.count(end) == 1, (
        f"docs/performance.md needs one {begin!r} and one {end!r} line for {script.name}"
    )
    assert lines.index(begin) < lines.index(end)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_each_script_takes_write_docs(script: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--write-docs" in proc.stdout, f"{script.name} --help has no --write-docs"


NAMES = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True), min_size=1, max_size=5, unique=True
)
# text of a page or a section: anything but a marker line
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=60)


def _page(names: list[str], bodies: list[str], filler: list[str]) -> str:
    parts = [filler[0]]
    for name, body, after in zip(names, bodies, filler[1:]):
        begin, end = docs_section.markers(name)
        parts.append(f"{begin}\n{body}\n{end}" if body else f"{begin}\n{end}")
        parts.append(after)
    return "\n".join(parts)


@given(names=NAMES, data=st.data())
def test_replace_section_rewrites_only_its_own_section(names: list[str], data) -> None:
    clean = TEXT.filter(lambda t: "<!--" not in t)
    body = clean.filter(lambda t: t == t.strip("\n"))
    bodies = [data.draw(body) for _ in names]
    filler = [data.draw(clean) for _ in range(len(names) + 1)]
    target = data.draw(st.sampled_from(names))
    new_body = data.draw(clean)
    page = _page(names, bodies, filler)

    result = docs_section.replace_section(page, target, new_body)

    expected = [new_body.strip("\n") if n == target else b for n, b in zip(names, bodies)]
    assert result == _page(names, expected, filler)
    # and putting the old text back gives the page it started from, byte for byte
    assert docs_section.replace_section(result, target, bodies[names.index(target)]) == page


@pytest.mark.parametrize(
    "page, why",
    [
        ("intro\n<!-- begin b -->\nx\n<!-- end b -->\n", "no section a"),
        ("<!-- begin a -->\n<!-- end a -->\n<!-- begin a -->\n<!-- end a -->", "two sections a"),
        ("<!-- end a -->\nx\n<!-- begin a -->", "markers in the wrong order"),
        ("<!-- begin a -->\nx\n", "no end marker"),
    ],
)
def test_a_page_without_one_section_is_refused(page: str, why: str) -> None:
    with pytest.raises(docs_section.SectionError):
        docs_section.replace_section(page, "a", "new")


def test_a_body_holding_markers_is_refused() -> None:
    page = "<!-- begin a -->\nold\n<!-- end a -->\n<!-- begin b -->\nold\n<!-- end b -->\n"
    with pytest.raises(docs_section.SectionError):
        docs_section.replace_section(page, "a", "x\n<!-- end a -->\n<!-- begin a -->\ny")


def test_recorder_tees_into_its_own_section(tmp_path: Path, capsys) -> None:
    page = tmp_path / "performance.md"
    page.write_text(
        "# P\n<!-- begin other -->\nkept\n<!-- end other -->\n"
        "<!-- begin demo -->\nold figures\n<!-- end demo -->\ntail\n"
    )
    with docs_section.Recorder("benchmarks/demo.py", True, ["--x", "1", "--write-docs"], page):
        print("median 1.0 ms")
    assert "median 1.0 ms" in capsys.readouterr().out  # still printed
    text = page.read_text()
    assert "old figures" not in text
    assert text.startswith(
        "# P\n<!-- begin other -->\nkept\n<!-- end other -->\n<!-- begin demo -->\n"
    )
    assert text.endswith("```text\nmedian 1.0 ms\n```\n<!-- end demo -->\ntail\n")
    assert "`.venv/bin/python benchmarks/demo.py --x 1`" in text  # the command, less --write-docs


def test_recorder_writes_nothing_when_off_or_failed(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    original = "<!-- begin demo -->\nold\n<!-- end demo -->\n"
    page.write_text(original)
    with docs_section.Recorder("demo.py", False, [], page):
        print("figures")
    with pytest.raises(RuntimeError), docs_section.Recorder("demo.py", True, [], page):
        print("half the figures")
        raise RuntimeError("measurement failed")
    assert page.read_text() == original
