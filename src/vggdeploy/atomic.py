"""Writing files and folders so an interruption never leaves half of one.

A file is written under a temporary name beside it (`.NAME.*.partial`) and renamed over it
(`atomic_path`); a finished folder takes the place of an old one by two renames that hold every
stop signal until both are done (`replace_folder`), and a swap killed outright between them is
finished or rolled back by the next command (`recover_swap`). The bundle (`bundle.py`) builds
its artifact+record pair on these.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vggdeploy.errors import InputError, os_error_message

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest`, on error it is removed.

    The temporary name starts with a dot and ends in `.partial`, so an interrupted write is
    recognisable and never mistaken for the artifact itself.
    """
    dest = Path(dest)
    tmp_path: Path | None = None
    try:
        # Creating the folder and the temporary file fail like the write itself (read-only
        # place, full disk, over-long name), so they are inside the `try` too.
        if len(dest.name.encode()) > _NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name keeps only the start of a long name, so it fits wherever `dest`'s
        # name fits.
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name[:64]}.", suffix=".partial", dir=dest.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp creates 0600; give the artifact the permissions an ordinary file would get, so
        # a bundle can be read by another user (a Triton server, a CI job) after it is copied.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        yield tmp_path
        os.replace(tmp_path, dest)
    except OSError as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        message = os_error_message(exc, dest, "write")
        if message is not None:
            raise InputError(message) from None
        raise
    except BaseException:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise


#: the longest file name (bytes) Linux file systems take
_NAME_MAX = 255


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C, SIGTERM or SIGHUP that arrives during a few renames, and deliver it once
    they are done (so a swap of two folders is never left half done): the handler in place
    before (the CLI's, which raises KeyboardInterrupt) then acts on it. Only the main thread
    receives signals."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {
        sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in stops
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])
        raise KeyboardInterrupt  # a handler that ignored it: still stop, as Ctrl-C would


#: the suffix of the folder `replace_folder` moves the old `dest` to, until the new one is in place
REPLACED_SUFFIX = ".replaced"


def _swap_hook(step: str) -> None:
    """Called between the steps of `replace_folder`; tests put an interrupt here to check that
    every window is recoverable. Does nothing otherwise."""


def replace_folder(staging: Path, dest: Path, *, replace: bool) -> None:
    """Move the finished folder `staging` to `dest` (same file system), stop signals deferred.

    Without `replace`, one rename: it also takes the place of an empty folder, and fails if
    `dest` is not empty. With `replace` (the caller has checked that `dest` may go), `dest` is
    renamed aside to `.<name>.<random>.replaced` first, put back if the second rename fails, and
    deleted once `staging` is in place. A process killed outright (SIGKILL, power loss) between
    the steps leaves the aside folder: `recover_swap` (run by the next command that writes or
    reads `dest`) puts it back when `dest` is missing and deletes it when `dest` is complete.
    """
    import shutil

    with interrupts_deferred():
        recover_swap(dest)
        if not replace or not dest.exists():
            os.rename(staging, dest)
            return
        aside = Path(
            tempfile.mkdtemp(prefix=f".{dest.name[:64]}.", suffix=REPLACED_SUFFIX, dir=dest.parent)
        )
        os.rename(dest, aside)  # onto the empty folder mkdtemp made
        _swap_hook("aside")
        try:
            os.rename(staging, dest)
        except BaseException:
            os.rename(aside, dest)  # the old folder back where it was
            raise
        _swap_hook("swapped")
        # Inside the deferred block too: an interrupt while deleting would leave the old bundle
        # behind while the CLI says nothing was left.
        shutil.rmtree(aside, ignore_errors=True)
    if aside.exists():
        log.warning("could not remove the replaced folder, now at %s", aside)


def recover_swap(dest: Path) -> None:
    """Finish or roll back a `replace_folder` that was killed between its steps: an aside
    folder goes back to `dest` when `dest` is missing, and is deleted when `dest` is there."""
    import shutil

    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    import re

    # exactly what mkdtemp made in `replace_folder` (8 random characters), not another folder's
    pattern = re.compile(
        re.escape(f".{dest.name[:64]}.") + r"[a-z0-9_]{8}" + re.escape(REPLACED_SUFFIX)
    )
    try:
        names = [n for n in os.listdir(dest.parent) if pattern.fullmatch(n)]
    except OSError:
        return
    for name in sorted(names):
        aside = dest.parent / name
        if not aside.is_dir() or aside.is_symlink():
            continue
        if not dest.exists() and any(aside.iterdir()):
            os.rename(aside, dest)
            log.warning("restored %s from an interrupted --force swap", dest)
        else:
            shutil.rmtree(aside, ignore_errors=True)
            log.warning("removed %s, left by an interrupted --force swap", aside)


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Strict JSON (NaN and infinities are refused, as every reader of ours refuses them)."""
    from vggdeploy.records import dumps

    atomic_write_text(dest, dumps(obj))
