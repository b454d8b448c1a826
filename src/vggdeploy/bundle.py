"""The bundle directory and its manifest.

A bundle is a directory that every stage reads and extends: `model.onnx`, later
`model.int8.onnx`, `model.fp16.onnx`, `model.<precision>.engine`, and `manifest.json`, which
records what was made, from what, with which versions, and the sha256 of every file. Stages
write files atomically (temporary name in the same directory, then `os.replace`) so an
interrupted run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggdeploy.errors import BundleError, InputError, os_error_message

if TYPE_CHECKING:
    from vggdeploy.preprocess import Preprocessing
    from vggdeploy.records import ArtifactRecord, Manifest

log = logging.getLogger(__name__)

#: (path, sha256) of ONNX files already checked to be self-contained in this process
_SELF_CONTAINED: set[tuple[str, str]] = set()

MANIFEST_NAME = "manifest.json"
#: `.<artifact name>.pending`: held (flock) while a stage writes an artifact and records it
PENDING_SUFFIX = ".pending"
#: the lock file beside the manifest; every read-modify-write of the manifest holds it
LOCK_NAME = ".manifest.lock"


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large engines need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def library_versions(*names: str) -> dict[str, str]:
    """Versions of installed distributions, without importing them (cheap, no torch import)."""
    from importlib import metadata

    from vggdeploy import __version__

    versions = {"vggdeploy": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Bundle:
    """A bundle directory and its typed manifest (`vggdeploy.records.Manifest`).

    The bundle is a trust boundary: every path the manifest names is resolved through
    `resolve`, which refuses absolute paths, `..` and symbolic links that leave the folder.
    `add_artifact` and `update` hold the bundle's lock while they re-read, change and write the
    manifest, so stages running at once on one bundle all keep their records.
    """

    def __init__(self, root: str | os.PathLike[str], manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest

    # -- loading and saving -------------------------------------------------------------------

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Bundle:
        root = Path(root)
        recover_swap(root)
        if not root.is_dir():
            raise BundleError(f"bundle {root} does not exist: create it with `vggdeploy export`")
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise BundleError(
                f"{root} has no {MANIFEST_NAME}: it is not a vggdeploy bundle "
                "(create one with `vggdeploy export`)"
            )
        bundle = cls(root, read_manifest(path))
        bundle.recover_pending()
        return bundle

    @classmethod
    def create(cls, root: str | os.PathLike[str], manifest: Manifest) -> Bundle:
        return cls(root, manifest)

    def save(self) -> None:
        """Write the whole manifest (for a new bundle; stages use `add_artifact`/`update`)."""
        with self.lock():
            atomic_write_json(self.root / MANIFEST_NAME, self.manifest.to_json_dict())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the bundle's manifest lock (released by the OS if the process dies)."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("waiting for another vggdeploy process to finish with %s", self.root)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def update(self) -> Iterator[Manifest]:
        """Re-read the manifest under the lock, let the caller change it, write it back."""
        with self.lock():
            path = self.root / MANIFEST_NAME
            manifest = read_manifest(path) if path.is_file() else self.manifest
            yield manifest
            atomic_write_json(path, manifest.to_json_dict())
            self.manifest = manifest

    # -- an artifact and its record, together ---------------------------------------------------

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """Yield the path of artifact `name` in the bundle, for a block that writes it (with
        `atomic_path`) and records it (`add_artifact`). Until the block ends, the marker
        `.<name>.pending` is held; if the process dies in between (the file replaced, its record
        not yet written), the next `Bundle.load` finds the marker unheld and rolls back: a file
        whose record does not match is deleted with its record. An exception in the block rolls
        back at once."""
        import fcntl

        marker = self.root / f".{name}{PENDING_SUFFIX}"
        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield self.root / name
            except BaseException:
                with interrupts_deferred():
                    self._roll_back(name)
                raise
        finally:
            marker.unlink(missing_ok=True)
            os.close(fd)

    def recover_pending(self) -> None:
        """Roll back every artifact whose writer died between the file and its record."""
        import fcntl

        try:
            names = [n for n in os.listdir(self.root) if n.endswith(PENDING_SUFFIX)]
        except OSError:
            return
        for marker_name in names:
            marker = self.root / marker_name
            try:
                fd = os.open(marker, os.O_RDWR)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is still at work
                self._roll_back(marker_name[1 : -len(PENDING_SUFFIX)])
                marker.unlink(missing_ok=True)
            except OSError as exc:  # a read-only copy of a bundle: report, do not fail reading
                log.warning("could not finish the interrupted write of %s: %s", marker, exc)
            finally:
                os.close(fd)

    def _roll_back(self, name: str) -> None:
        """Keep artifact `name` only if a record lists it with its current sha256."""
        path = self.root / name
        with self.lock():
            manifest_path = self.root / MANIFEST_NAME
            manifest = read_manifest(manifest_path) if manifest_path.is_file() else self.manifest
            keys = [k for k, rec in manifest.artifacts.items() if rec.path == name]
            if path.is_file() and not path.is_symlink():
                digest = sha256_file(path)
                if any(manifest.artifacts[k].sha256 == digest for k in keys):
                    return
            removed = path.is_file() or path.is_symlink()
            if removed:
                path.unlink()
            for key in keys:
                del manifest.artifacts[key]
            if keys:
                atomic_write_json(manifest_path, manifest.to_json_dict())
            self.manifest = manifest
            if not removed and not keys:
                return
            log.warning(
                "removed %s%s: it was written without its manifest record (interrupted)",
                path,
                f" and the record of {', '.join(keys)}" if keys else "",
            )

    # -- containment ----------------------------------------------------------------------------

    def resolve(self, rel: str, field: str = "path") -> Path:
        """The file a manifest path names, refused unless it stays inside the bundle."""
        from vggdeploy.records import check_relative

        try:
            check_relative(rel, field)
        except ValueError as exc:
            raise BundleError(f"{self.root / MANIFEST_NAME}: {exc}") from None
        path = self.root / rel
        root_real = self.root.resolve()
        if not path.resolve().is_relative_to(root_real):
            raise BundleError(
                f"{self.root / MANIFEST_NAME}: {field} {rel!r} leads outside the bundle through "
                "a symbolic link: replace the link with the file itself"
            )
        return path

    # -- artifacts ------------------------------------------------------------------------------

    @property
    def artifacts(self) -> dict[str, ArtifactRecord]:
        return self.manifest.artifacts

    def has_artifact(self, key: str) -> bool:
        if key not in self.artifacts:
            return False
        return self.resolve(self.artifacts[key].path, f"artifacts.{key}.path").is_file()

    def artifact(self, key: str) -> ArtifactRecord:
        if key not in self.artifacts:
            from vggdeploy.precision import make_command

            have = ", ".join(sorted(self.artifacts)) or "none"
            raise BundleError(
                f"bundle {self.root} has no artifact {key!r} (it has: {have}); create it with "
                f"`{make_command(key, str(self.root))}`"
            )
        return self.artifacts[key]

    def artifact_path(self, key: str, *, verify: bool = False) -> Path:
        """Path of an artifact inside the bundle; with `verify`, check its sha256."""
        record = self.artifact(key)
        path = self.resolve(record.path, f"artifacts.{key}.path")
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing: re-create it")
        if verify and sha256_file(path) != record.sha256:
            raise BundleError(
                f"{path} does not match the sha256 in the manifest (modified or corrupt): "
                "re-create it"
            )
        if verify and record.kind == "onnx":
            self._refuse_external_data(key, path, record.sha256)
        return path

    def _refuse_external_data(self, key: str, path: Path, sha256: str) -> None:
        """vggdeploy bundles hold self-contained ONNX files: a file that points at external data
        could make a runtime read outside the bundle (or data no checksum covers), so it is
        refused. Checked once per file content in a process."""
        if (str(path), sha256) in _SELF_CONTAINED:
            return
        from vggdeploy.onnxutil import external_data_tensors

        try:
            external = external_data_tensors(path)
        except ValueError as exc:
            raise BundleError(f"{path} ({key}) is {exc}: re-create it") from None
        if external:
            raise BundleError(
                f"{path} ({key}) keeps tensor {external[0]!r}"
                + (f" and {len(external) - 1} more" if len(external) > 1 else "")
                + " in external data files; vggdeploy bundles hold self-contained ONNX files "
                "(nothing outside the file is read): re-create it"
            )
        _SELF_CONTAINED.add((str(path), sha256))

    def add_artifact(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        known_sha256: str | None = None,
        **facts: Any,
    ) -> ArtifactRecord:
        """Record a file already written inside the bundle, with its size and sha256.

        `facts` are the record's fields (`kind`, `precision`, and the stage's own); the record is
        validated, then written under the lock so a concurrent stage's record is kept too.
        `known_sha256`: the digest of the bytes the caller itself just wrote there (hashed while
        they were written), instead of reading the file again.
        """
        from vggdeploy.records import EngineRecord, OnnxArtifact

        path = Path(path)
        abs_path = path if path.is_absolute() else self.root / path
        rel = Path(os.path.relpath(abs_path, self.root)).as_posix()
        digest = known_sha256 or sha256_file(abs_path)
        data = {"path": rel, "sha256": digest, "size": abs_path.stat().st_size}
        data.update(facts)
        cls = EngineRecord if data.get("kind") == "tensorrt-engine" else OnnxArtifact
        record = cls.model_validate(data)
        with self.update() as manifest:
            manifest.artifacts[key] = record
        return record

    # -- convenience views ----------------------------------------------------------------------

    @property
    def model(self) -> Any:
        return self.manifest.model

    @property
    def preprocessing(self) -> Preprocessing:
        """The bundle's preprocessing, as the object every image loader takes."""
        from vggdeploy.preprocess import Preprocessing

        return Preprocessing.from_dict(self.manifest.preprocessing.to_json_dict())

    @property
    def input_name(self) -> str:
        return self.manifest.input.name

    @property
    def output_name(self) -> str:
        return self.manifest.output.name

    def labels(self) -> list[str] | None:
        """Class names, one per output index, if the bundle carries them."""
        rel = self.manifest.labels
        if not rel:
            return None
        path = self.resolve(rel, "labels")
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing: re-export the bundle")
        try:
            return [line.rstrip("\n") for line in path.read_text("utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(
                f"{path} cannot be read as UTF-8 text ({exc}): re-export the bundle"
            ) from None


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; every problem is one `BundleError` line."""
    from vggdeploy.records import manifest_from_data, parse_json

    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}): re-create the bundle") from None
    return manifest_from_data(parse_json(text, str(path)), str(path))
