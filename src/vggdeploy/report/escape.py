"""Text from outside, made safe to show.

Labels, model names, artifact paths, image file names and the messages that quote them come
from bundles, archives and file systems we do not control. A raw escape sequence in one of them
would clear the screen, set the window title or plant a hyperlink; a newline would start a line
of its own (a forged `error:`); a bidi override would show the text in another order. Everything
that reaches the terminal, a table, Markdown or a log goes through `shown` (one line) or
`shown_lines` (several lines, each escaped), so no raw control character ever leaves.

Newlines are the one character `shown_lines` keeps, so a report is built so that a newline
from outside cannot pass for one of its own: every formatter joins its lines with
`report_lines`, which escapes each line whole (a file name's newline becomes `\\n` inside its
line) and keeps only what is already drawn (`Drawn`: a table, another formatter's lines) as it
is. A line never needs its values escaped one by one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: the escapes a reader knows from Python source
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: object) -> str:
    """`text` as one line with every non-printable character written as a visible escape
    (`\\x1b`, `\\n`, `\\u202e`): safe for any terminal, table cell, Markdown row or log line."""
    # str.isprintable is False exactly for Unicode's "Other" categories (control, format: bidi
    # overrides and zero-width characters, surrogate, private use, unassigned) and for every
    # separator but the plain space (line and paragraph separators, odd spaces).
    s = str(text)
    if s.isprintable():  # the common case, fast
        return s
    return "".join(c if c.isprintable() else _escape_char(c) for c in s)


def shown_lines(text: object) -> str:
    """Several lines of report text: each line escaped like `shown`, the newlines kept."""
    return "\n".join(shown(line) for line in str(text).split("\n"))


class Drawn(str):
    """Report text whose every line is already escaped and whose newlines are its own: a table
    (`report.tables`) or lines joined by `report_lines`. Kept as it is when joined again."""


def report_lines(lines: Iterable[str]) -> Drawn:
    """A report's lines joined by newlines, each line escaped whole with `shown` (so a newline
    or an escape sequence inside it, from a file name or a label, stays visible text on that
    line) except `Drawn` text, which is already escaped line by line. "" is a blank line."""
    return Drawn("\n".join(line if isinstance(line, Drawn) else shown(line) for line in lines))


def write_shown(dest: str | os.PathLike[str], text: str) -> None:
    """A report for people (Markdown, text) written to a file, atomically, each line escaped
    like the terminal's (`shown_lines`): a report file is read in a terminal or a Markdown
    viewer too. Data files (JSON, CSV, labels.txt for a server) keep their values as they are."""
    from vggdeploy.atomic import atomic_write_text

    atomic_write_text(dest, shown_lines(text))
