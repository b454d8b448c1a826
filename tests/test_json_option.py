"""`--json FILE` in every command, `-` for standard output (JSON only, no table)."""

from __future__ import annotations

import json

import pytest

from vggdeploy.cli import cli, main

#: commands with no result to write: `serve` runs until it is stopped
NO_RESULT = {"serve"}
COMMANDS = sorted(set(cli.commands) - NO_RESULT)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_json_file(name):
    params = {p.name: p for p in cli.commands[name].params}
    assert "json_path" in params, f"{name} has no --json FILE"
    assert params["json_path"].opts == ["--json"]
    assert not getattr(params["json_path"], "is_flag", False)


def test_export_pack_unpack_package_write_json(tmp_path, capsys, tiny_bundle):
    def run(args):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert exc.value.code == 0, err
        return out

    data = json.loads(run(["pack", tiny_bundle, "-o", tmp_path / "b.tgz", "--json", "-"]))
    assert data["archive"] == str(tmp_path / "b.tgz") and "manifest.json" in data["files"]
    run(["unpack", tmp_path / "b.tgz", "-o", tmp_path / "u", "--json", tmp_path / "u.json"])
    assert json.loads((tmp_path / "u.json").read_text())["manifest"]["schema_version"] == 1
    data = json.loads(run(["package", tiny_bundle, "--out", tmp_path / "r", "--json", "-"]))
    assert [m["name"] for m in data["models"]] == ["vgg11_bn_onnx_fp32"]
