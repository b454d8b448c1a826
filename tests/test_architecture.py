"""Rules of the package's shape, checked like behaviour (the layer and no-cycle contracts are
import-linter's, run by .ci/run as `lint-imports`; see [tool.importlinter] in pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vggdeploy"
#: a tripwire for a module that has grown past one concept, high enough that nothing is split
#: only to pass it (issue 19): modules are split by concept, never by size alone
MAX_LINES = 800
#: the modules that talk to the terminal: the CLI (cli.py, commands/) and the report layer
TERMINAL = {"cli.py", "cli_options.py", "__main__.py"}

MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_module_is_over_the_size_limit(path: Path) -> None:
    lines = len(path.read_text("utf-8").splitlines())
    assert lines <= MAX_LINES, (
        f"{_rel(path)} has {lines} lines (limit {MAX_LINES}): does it hold more than one concept?"
    )


def _library(path: Path) -> bool:
    rel = _rel(path)
    return rel not in TERMINAL and not rel.startswith(("report/", "commands/"))


@pytest.mark.parametrize("path", [p for p in MODULES if _library(p)], ids=_rel)
def test_library_code_never_prints_or_exits(path: Path) -> None:
    """Stages and the layers below them return data or raise; only cli/report draw."""
    tree = ast.parse(path.read_text("utf-8"))
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            owner = (
                f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            )
            if name == "print" or (owner == "sys" and name == "exit") or owner == "click":
                offences.append(f"line {node.lineno}: {owner + '.' if owner else ''}{name}()")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if mod and mod.split(".")[0] == "click":
                offences.append(f"line {node.lineno}: imports click")
    assert not offences, f"{_rel(path)}: " + "; ".join(offences)
