"""pipeline.json is untrusted: a damaged one is one line naming it and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.pipeline.state import STATE_SCHEMA, State, pipeline_lock, prepare_out

GOOD = {"schema": STATE_SCHEMA, "stages": {"export": {"status": "done", "seconds": 1.5,
        "inputs_sha256": "x", "outputs": {"onnx.fp32": "y"}, "files": {"bundle/a": "z"}}}}  # fmt: skip

DAMAGE = {
    "not json": "{oops",
    "truncated": json.dumps(GOOD)[:40],
    "list at root": "[]",
    "NaN": json.dumps(GOOD).replace("1.5", "NaN"),
    "huge float": json.dumps(GOOD).replace("1.5", "1e999"),
    "other schema": json.dumps({**GOOD, "schema": "other/9"}),
    "stages a list": json.dumps({**GOOD, "stages": []}),
    "unknown stage": json.dumps({**GOOD, "stages": {"rm -rf": {}}}),
    "stage a string": json.dumps({**GOOD, "stages": {"export": "done"}}),
    "status a number": json.dumps({**GOOD, "stages": {"export": {"status": 1}}}),
    "files outside": json.dumps({**GOOD, "stages": {"export": {"files": {"../../etc/x": "a"}}}}),
    "files absolute": json.dumps({**GOOD, "stages": {"export": {"files": {"/etc/x": "a"}}}}),
    "sha not a string": json.dumps({**GOOD, "stages": {"export": {"outputs": {"k": 5}}}}),
    "negative seconds": json.dumps(GOOD).replace("1.5", "-1"),
    "binary": "\udcff",
}


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def test_good_state_loads(tmp_path: Path) -> None:
    (tmp_path / "pipeline.json").write_text(json.dumps(GOOD))
    assert State.load(tmp_path).stages["export"]["status"] == "done"


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_state_is_one_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "pipeline.json"
    _write(path, DAMAGE[case])
    with pytest.raises(InputError) as exc:
        State.load(tmp_path)
    message = str(exc.value)
    assert str(path) in message and "\n" not in message
    assert "delete it or run with --force" in message
    # --force starts afresh instead
    assert State.load(tmp_path, force=True).stages == {}


def test_pipeline_cli_with_damaged_state(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "pipeline.json").write_text("[1, 2, 3]")
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "vgg11", "--out", str(out), "--width-divisor", "16", "--hidden", "64",
              "--num-classes", "10", "--image-size", "32"])  # fmt: skip
    printed = capsys.readouterr()
    assert exc.value.code == 1 and "Traceback" not in printed.out + printed.err
    line = printed.err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "pipeline.json" in line and "--force" in line
    assert (out / "pipeline.json").read_text() == "[1, 2, 3]"  # left as it was
    assert not (out / "bundle").exists()


def test_save_is_strict_json(tmp_path: Path) -> None:
    state = State.load(tmp_path)
    state.stages["export"] = {"seconds": float("nan")}
    with pytest.raises((ValueError, InputError)):
        state.save()
    assert not (tmp_path / "pipeline.json").exists()


def test_second_pipeline_on_one_out_is_refused(tmp_path: Path) -> None:
    refused = pytest.raises(InputError, match="another vggdeploy pipeline is running")
    with pipeline_lock(tmp_path), refused, pipeline_lock(tmp_path):
        pass
    with pipeline_lock(tmp_path):  # released afterwards
        pass
    prepare_out(tmp_path)  # the lock file alone does not make OUT "someone else's folder"
