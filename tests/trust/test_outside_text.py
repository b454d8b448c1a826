"""Cause 3 of issue 18: text from outside (labels, names, paths, messages) never reaches the
terminal, a table, Markdown or a log raw."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vggdeploy.cli import main
from vggdeploy.report.escape import shown, shown_lines
from vggdeploy.report.tables import markdown_table, text_table

NASTY = "a\x1b]0;owned\x07b\x1b[2J\nerror: forged\r\u202egnp.exe\u2028x\x00"


def _raw_controls(text: str, allow: str = "") -> list[str]:
    return [c for c in text if not c.isprintable() and c not in allow]


@given(st.text())
def test_shown_never_lets_a_control_character_through(text: str) -> None:
    assert _raw_controls(shown(text)) == []
    assert _raw_controls(shown_lines(text), allow="\n") == []
    assert shown_lines(text).count("\n") == text.count("\n")


@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]) | st.just(" ")))
def test_shown_keeps_printable_text_as_it_is(text: str) -> None:
    assert shown(text) == text


def test_tables_and_markdown_escape_every_cell() -> None:
    for drawn in (text_table(["name"], [[NASTY]]), markdown_table(["name"], [[NASTY]])):
        assert _raw_controls(drawn, allow="\n") == []
        assert "error: forged" not in [line.strip() for line in drawn.splitlines()]


def test_a_file_name_cannot_forge_an_error_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        # (a command line cannot hold a NUL byte, so none here)
        main(["validate", str(tmp_path / NASTY.replace("\x00", ""))])
    out, err = capsys.readouterr()
    assert exc.value.code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and _raw_controls(err, allow="\n") == []
    assert "\\x1b" in err


def test_log_lines_are_escaped(capsys) -> None:
    from vggdeploy.cli import _setup_logging

    root = logging.getLogger()
    before = list(root.handlers)
    root.handlers.clear()
    try:
        _setup_logging(0, False)
        logging.getLogger("vggdeploy.test").warning("label %s", NASTY)
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = before
    assert len(err.strip().splitlines()) == 1
    assert _raw_controls(err, allow="\n") == []


def test_predict_escapes_labels_and_file_names() -> None:
    from pathlib import Path

    from vggdeploy.predict import Prediction
    from vggdeploy.report.predict import render_predictions

    ok = Prediction(Path(NASTY))
    ok.top = [(0, NASTY, 0.5)]
    bad = Prediction(Path(NASTY))
    bad.error = NASTY
    text = render_predictions([ok, bad])
    assert _raw_controls(text, allow="\n") == []
    assert len(text.splitlines()) == 3


@given(st.lists(st.text(), max_size=6))
def test_report_lines_keep_one_line_per_line_whatever_the_text(lines: list[str]) -> None:
    from vggdeploy.report.escape import report_lines

    table = text_table(["name"], [[NASTY]])
    joined = report_lines([*lines, table])
    assert _raw_controls(joined, allow="\n") == []
    # each given line stays one line; the table keeps its own lines
    assert joined.count("\n") == len(lines) + table.count("\n")
    assert joined.endswith(table)


@given(st.text())
def test_echo_text_prints_plain_text_as_one_escaped_line(text: str) -> None:
    from click.testing import CliRunner

    from vggdeploy.cli_options import echo_text

    def command() -> None:
        echo_text(text)

    import click

    out = CliRunner().invoke(click.command()(command)).output
    assert out.count("\n") == 1 and _raw_controls(out, allow="\n") == []
