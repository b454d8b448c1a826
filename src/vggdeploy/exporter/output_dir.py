"""Where `vggdeploy export` writes: refusing an output it may not touch, building the bundle in
a hidden staging folder, and moving it into place (or swapping it for the old bundle) only
once it is complete."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from vggdeploy.bundle import (
    MANIFEST_NAME,
    interrupts_deferred,
    read_manifest,
    replace_folder,
)
from vggdeploy.errors import BundleError, InputError


def check_output_dir(out: Path, force: bool) -> bool:
    """Refuse an output we may not write, without changing anything; True: replace a bundle.

    A file is refused; so is a non-empty folder without --force, and with --force one that is
    not a vggdeploy bundle (no valid manifest.json): --force replaces bundles, never other files.
    """
    if out == out.parent or (out.exists() and not out.is_dir()):
        raise InputError(f"output {out} is a file (or /), not a directory: choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not force:
        raise InputError(
            f"output folder {out} is not empty: choose another --out, or add --force to replace its contents"
        )
    manifest = out / MANIFEST_NAME
    try:
        if manifest.is_symlink() or not manifest.is_file():
            raise BundleError(f"it has no {MANIFEST_NAME}")
        read_manifest(manifest)
    except BundleError as exc:
        raise InputError(
            f"output folder {out} is not a vggdeploy bundle ({str(exc).removeprefix(str(manifest) + ': ')}), "
            "so --force will not replace it: choose another --out, or empty it yourself"
        ) from None
    return True


@contextlib.contextmanager
def staging(out: Path, replace: bool) -> Iterator[Path]:
    """A hidden folder to build the new bundle in, removed on leaving (moved-out files stay).

    Beside OUT (same parent: the final rename stays on one filesystem), or inside OUT when it is
    an existing empty folder (a mount point, or a folder in an unwritable parent, keeps working).
    Parent folders this run created are removed again if they end up empty."""
    created = [p for p in out.parents if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = _hidden_name(out if out.is_dir() and not replace else out.parent, out, "export")
        stage.mkdir()  # mode 0777 less the umask, like any folder the user makes
    except OSError as exc:
        _remove_empty(created)
        where = f"{out.parent}, where the new bundle is built before it replaces" if replace else ""
        raise InputError(
            f"cannot write to {where or 'output folder'} {out} ({exc.strerror}): choose a "
            "writable --out" + (" (the old bundle is untouched)" if replace else "")
        ) from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_empty(created)


def _hidden_name(folder: Path, out: Path, what: str) -> Path:
    return folder / f".{out.name}.{what}-{secrets.token_hex(4)}.partial"


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        with contextlib.suppress(OSError):
            folder.rmdir()  # only ever succeeds on an empty folder


def move_into_place(stage: Path, out: Path, replace: bool) -> None:
    """Make the staged bundle OUT, Ctrl-C deferred: one rename, or a swap of two."""
    moved: list[Path] = []
    try:
        if stage.parent == out:  # OUT was an empty folder: move entries up, manifest last
            with interrupts_deferred():
                for entry in sorted(stage.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
                    os.rename(entry, out / entry.name)
                    moved.append(out / entry.name)
        else:
            # without replace the rename fails if someone filled OUT meanwhile
            replace_folder(stage, out, replace=replace)
    except OSError as exc:
        for path in moved:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise InputError(
            f"cannot move the new bundle into {out} ({exc.strerror}): {out} was left as it "
            "was; choose another --out"
        ) from None
