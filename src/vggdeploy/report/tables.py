"""Tables and sizes, drawn one way for every command.

`text_table` renders with rich (aligned columns, no colour codes when the output is not a
terminal); `markdown_table` writes the same rows as GitHub Markdown; `mib` is the one size unit.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from vggdeploy.report.escape import Drawn, shown


def mib(n: int | float | None) -> str:
    """Bytes as MiB (KiB below 1 MiB): the one unit family for sizes in every report."""
    if n is None:
        return "-"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def text_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    align: str | None = None,
    title: str | None = None,
) -> Drawn:
    """An aligned plain-text table (rich's renderer, captured as text); every cell `shown`."""
    from rich.box import SIMPLE_HEAD
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    align = align or "l" * len(headers)
    table = Table(
        box=SIMPLE_HEAD,
        title=shown(title) if title else None,
        show_edge=False,
        pad_edge=False,
        highlight=False,
    )
    for header, a in zip(headers, align):
        table.add_column(Text(shown(header)), justify="right" if a == "r" else "left", no_wrap=True)
    for row in rows:
        # Text, not str: cell contents are data, never rich markup ("vggdeploy[gpu]" stays).
        table.add_row(*(Text(shown(c)) for c in row))
    buf = io.StringIO()
    Console(file=buf, width=250, color_system=None, force_terminal=False, highlight=False).print(
        table
    )
    return Drawn("\n".join(line.rstrip() for line in buf.getvalue().splitlines()).strip("\n"))


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> Drawn:
    align = align or "l" * len(headers)
    lines = ["| " + " | ".join(shown(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(shown(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return Drawn("\n".join(lines))


def json_text(data: Any) -> str:
    """Strict JSON (NaN/inf refused) with two-space indents."""
    return json.dumps(data, indent=2, allow_nan=False)
