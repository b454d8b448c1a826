"""Cause 7 of issue 18: OS errors the user fixes are one line. CI runs as root, where a chmod
cannot make a folder read-only, so EROFS/EACCES/ENOSPC are injected."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest

from vggdeploy.bundle import atomic_write_bytes
from vggdeploy.cli import main
from vggdeploy.errors import InputError


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_creating_the_temporary_file_fails_as_one_line(tmp_path, monkeypatch, code) -> None:
    monkeypatch.setattr(tempfile, "mkstemp", _raise(code))
    with pytest.raises(InputError, match=os.strerror(code)):
        atomic_write_bytes(tmp_path / "out.json", b"{}")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_writing_leaves_nothing(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    monkeypatch.setattr(Path, "write_bytes", _raise(errno.ENOSPC))
    with pytest.raises(InputError, match="free some space"):
        atomic_write_bytes(tmp_path / "out.json", b"{}")
    assert os.listdir(tmp_path) == []


def test_a_read_only_folder_that_cannot_be_created(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    monkeypatch.setattr(Path, "mkdir", _raise(errno.EROFS))
    with pytest.raises(InputError, match="writable"):
        atomic_write_bytes(tmp_path / "new" / "out.json", b"{}")


@pytest.mark.parametrize("name", ["n" * 250, "n" * 300])
def test_long_names_are_one_line_or_written(tmp_path, capsys, name) -> None:
    dest = tmp_path / f"{name}.json"
    with pytest.raises(SystemExit) as exc:
        main(["models", "--json", str(dest)])
    err = capsys.readouterr().err
    if len(dest.name) <= 255:  # fits: the temporary name must fit too
        assert exc.value.code == 0, err
        assert dest.is_file()
    else:
        assert exc.value.code == 1
        assert err.startswith("error: cannot write") and len(err.strip().splitlines()) == 1
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]


def test_an_os_error_in_a_command_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import vggdeploy.commands.check as check

    monkeypatch.setattr(check, "emit_json", _raise(errno.EACCES))
    with pytest.raises(SystemExit) as exc:
        main(["models", "--json", str(tmp_path / "z.json")])
    err = capsys.readouterr().err
    assert exc.value.code == 1
    assert err.startswith("error: cannot use") and "Traceback" not in err
