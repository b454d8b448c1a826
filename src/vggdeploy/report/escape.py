"""Text from outside, made safe to show.

Labels, model names, artifact paths, image file names and the messages that quote them come
from bundles, archives and file systems we do not control. A raw escape sequence in one of them
would clear the screen, set the window title or plant a hyperlink; a newline would start a line
of its own (a forged `error:`); a bidi override would show the text in another order. Everything
that reaches the terminal, a table, Markdown or a log goes through `shown` (one line) or
`shown_lines` (several lines, each escaped), so no raw control character ever leaves.
"""

from __future__ import annotations

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
