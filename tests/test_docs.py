"""The reference pages against the commands (issue 19).

Each command has one section, `## vggdeploy NAME`, on one page of docs/; its option table (rows
whose first cell starts with a backticked option, e.g. "| `--out DIR` | ...") must name exactly
the options click declares for that command, read from the command objects in vggdeploy.cli,
so a page can neither miss a new option nor keep one that is gone. And the README stays a front
door: short, with links that lead somewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from vggdeploy.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 300

SECTION = re.compile(r"^## vggdeploy (\S+)[ \t]*$", re.M)
#: a table cell boundary: a `|` that Markdown does not read as an escaped pipe
CELL = re.compile(r"(?<!\\)\|")


def sections(docs: Path = DOCS) -> dict[str, list[tuple[str, str]]]:
    """command name -> [(page, section text)], the text running to the next `## ` heading."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in sorted(docs.glob("*.md")):
        text = page.read_text("utf-8")
        for match in SECTION.finditer(text):
            rest = text[match.end() :]
            following = re.search(r"^## ", rest, re.M)
            body = rest[: following.start()] if following else rest
            found.setdefault(match.group(1), []).append((page.name, body))
    return found


def documented_options(section: str) -> set[str]:
    """The option names in the first cell of the section's table rows (`-o`, `--output FILE`)."""
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = CELL.split(line)
        if len(cells) < 3:
            continue
        for token in re.findall(r"`([^`]+)`", cells[1]):
            name = token.split()[0]
            if name.startswith("-"):
                names.add(name)
    return names


def declared_options(command: click.Command) -> set[str]:
    """Every option string click accepts for `command` (aliases and `--x/--no-x` forms included;
    `--help` is click's own and documented once in the README)."""
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
    }


COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_one_section_in_docs(name: str) -> None:
    homes = sections().get(name, [])
    pages = [page for page, _ in homes]
    assert len(homes) == 1, (
        f"`vggdeploy {name}` needs exactly one `## vggdeploy {name}` section in docs/*.md, "
        f"found {len(homes)}{': ' + ', '.join(pages) if pages else ''}"
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_each_section_documents_exactly_the_declared_options(name: str) -> None:
    homes = sections().get(name)
    if not homes:
        pytest.fail(f"`vggdeploy {name}` has no `## vggdeploy {name}` section in docs/*.md")
    page, body = homes[0]
    declared = declared_options(cli.commands[name])
    documented = documented_options(body)
    problems = []
    for option in sorted(declared - documented):
        problems.append(
            f"docs/{page} is missing option {option} of `vggdeploy {name}` "
            f"(add a row to its option table)"
        )
    for option in sorted(documented - declared):
        problems.append(
            f"docs/{page} documents option {option}, which `vggdeploy {name} --help` does not "
            f"have (remove its row)"
        )
    assert not problems, "\n".join(problems)


def test_every_section_names_a_real_command() -> None:
    stale = {name: [p for p, _ in homes] for name, homes in sections().items()}
    stale = {name: pages for name, pages in stale.items() if name not in cli.commands}
    assert not stale, f"docs sections for commands vggdeploy does not have: {stale}"


def test_the_option_reader_reads_table_rows(tmp_path: Path) -> None:
    """The reader behind the two tests above: first-cell options only, aliases, escaped pipes."""
    (tmp_path / "x.md").write_text(
        "# x\n\n## vggdeploy pack\n\n"
        "| option | meaning |\n| --- | --- |\n"
        "| `-o`, `--output FILE` | see `--force` |\n"
        "| `--keep-fp32 OP\\|NODE,...` | a \\| b |\n"
        "| `BUNDLE` | not an option |\n"
        "`--not-in-a-table`\n\n"
        "## vggdeploy unpack\n\n| `--force` | x |\n"
    )
    found = sections(tmp_path)
    assert set(found) == {"pack", "unpack"}
    assert documented_options(found["pack"][0][1]) == {"-o", "--output", "--keep-fp32"}
    assert documented_options(found["unpack"][0][1]) == {"--force"}


def test_readme_is_a_front_door() -> None:
    lines = README.read_text("utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.md has {len(lines)} lines (keep it under {README_MAX_LINES}: "
        f"the reference belongs in docs/)"
    )


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_lead_to_files(page: Path) -> None:
    text = page.read_text("utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
