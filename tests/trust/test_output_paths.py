"""Cause 6 of issue 18: no output path is, or lies inside, an input the command reads. The
walk covers every command and every output option, so a new one cannot slip past."""

from __future__ import annotations

import click
import pytest

from vggdeploy.cli import cli, main
from vggdeploy.cli_options import INPUT_PARAMS, OUTPUT_PARAMS, READ_WRITE_PARAMS
from vggdeploy.errors import InputError


def _path_params(command: click.Command) -> list[click.Parameter]:
    return [p for p in command.params if isinstance(p.type, click.Path)]


def test_every_path_option_is_classified() -> None:
    known = INPUT_PARAMS | OUTPUT_PARAMS | READ_WRITE_PARAMS
    for name, command in cli.commands.items():
        for param in _path_params(command):
            assert param.name in known, f"{name} {param.name}: add it to cli_options"


CASES = [
    (name, out.name, source.name)
    for name, command in sorted(cli.commands.items())
    for out in command.params
    if out.name in OUTPUT_PARAMS
    for source in command.params
    if source.name in INPUT_PARAMS
]


def test_the_walk_covers_the_examples_of_the_issue() -> None:
    assert ("package", "out", "bundle") in CASES
    assert ("unpack", "json_path", "archive") in CASES
    assert ("validate", "json_path", "bundle") in CASES


@pytest.mark.parametrize(("command", "out", "source"), CASES)
@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_every_output_option_refuses_every_input(tmp_path, command, out, source, where) -> None:
    cmd = cli.commands[command]
    source_path = tmp_path / "input"
    out_path = {
        "same": source_path,
        "inside": source_path / "manifest.json",
        "holds": tmp_path,
    }[where]
    source_path.mkdir()
    params = {p.name: (() if p.nargs == -1 else None) for p in cmd.params}
    params[source] = (str(source_path),) if cmd_nargs(cmd, source) == -1 else str(source_path)
    params[out] = str(out_path)
    with pytest.raises(InputError, match="would overwrite what it reads"):
        cmd.callback(**params)


def cmd_nargs(cmd: click.Command, name: str) -> int:
    return next(p.nargs for p in cmd.params if p.name == name)


@pytest.mark.parametrize(
    "args",
    [
        ["package", "{b}", "--format", "deepstream", "--out", "{b}", "--force"],
        ["validate", "{b}", "--json", "{b}/manifest.json"],
        ["inspect", "{b}", "--json", "{b}/model.onnx"],
    ],
)
def test_the_cli_says_one_line_and_leaves_the_bundle(tiny_bundle, capsys, args) -> None:
    before = {p.name: p.read_bytes() for p in tiny_bundle.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as exc:
        main([a.format(b=tiny_bundle) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert len(err.strip().splitlines()) == 1 and "would overwrite" in err
    assert {p.name: p.read_bytes() for p in tiny_bundle.iterdir() if p.is_file()} == before


def test_unpack_json_onto_its_archive(tmp_path, capsys) -> None:
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(b"not touched")
    with pytest.raises(SystemExit) as exc:
        main(["unpack", str(archive), "--output", str(tmp_path / "o"), "--json", str(archive)])
    assert exc.value.code == 1
    assert archive.read_bytes() == b"not touched"
