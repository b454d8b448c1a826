"""The bundle directory and its manifest.

A bundle is a directory that every stage reads and extends: `model.onnx`, later
`model.int8.onnx`, `model.fp16.onnx`, `model.<precision>.engine`, and `manifest.json`, which
records what was made, from what, with which versions, and the sha256 of every file. Stages
write files atomically (temporary name in the same directory, then `os.replace`) so an
interrupted run never leaves a half-written artifact behind (the writers live in `atomic.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggdeploy.atomic import (  # noqa: F401 - the bundle's writers, re-exported for stages
    REPLACED_SUFFIX,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    interrupts_deferred,
    recover_swap,
    replace_folder,
)
from vggdeploy.errors import BundleError

if TYPE_CHECKING:
    from vggdeploy.preprocess import Preprocessing
    from vggdeploy.records import ArtifactRecord, Manifest

log = logging.getLogger(__name__)

#: (path, sha256, manifest io) of ONNX files already checked in this process
_SELF_CONTAINED: set[tuple[str, str, str]] = set()

MANIFEST_NAME = "manifest.json"
#: a labels file larger than this is refused by its size, before it is read (ImageNet's 1000
#: names take 10 KiB; this leaves room for long names in any script)
MAX_LABELS_BYTES = 8 << 20
#: `.<artifact name>.pending`: held (flock) while a stage writes an artifact and records it
PENDING_SUFFIX = ".pending"
#: the lock file beside the manifest; every read-modify-write of the manifest holds it
LOCK_NAME = ".manifest.lock"
#: the folder of runtimes' compiled-model caches: not an artifact, never packed, safe to delete
CACHE_NAME = "cache"


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large engines need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    def cache_dir(self, *parts: str) -> Path:
        """`cache/<parts...>` in the bundle, for a runtime's compiled models (not created here).
        Deleting it costs only a recompile. Refused if it leads outside the bundle through a
        symbolic link."""
        path = self.root.joinpath(CACHE_NAME, *parts)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise BundleError(
                f"{path} leads outside the bundle through a symbolic link: remove the link "
                f"({self.root / CACHE_NAME} is rebuilt on the next run)"
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
        refused. The file's graph inputs and outputs must also be the manifest's `io` (names,
        dtypes, shapes with the class count), which every runtime and stage trusts. Checked once
        per file content in a process."""
        io = self.manifest.io.to_json_dict()
        if (str(path), sha256, repr(io)) in _SELF_CONTAINED:
            return
        import onnx

        from vggdeploy.onnxutil import external_tensors, io_mismatch

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # DecodeError and friends: not an ONNX protobuf
            raise BundleError(f"{path} ({key}) is not an ONNX model: re-create it") from None
        external = external_tensors(model)
        if external:
            raise BundleError(
                f"{path} ({key}) keeps tensor {external[0]!r}"
                + (f" and {len(external) - 1} more" if len(external) > 1 else "")
                + " in external data files; vggdeploy bundles hold self-contained ONNX files "
                "(nothing outside the file is read): re-create it"
            )
        mismatch = io_mismatch(io, model)
        if mismatch:
            raise BundleError(
                f"{path} ({key}) does not match the manifest's io: {mismatch} - re-create the "
                "bundle (the manifest and its ONNX files come from one export)"
            )
        _SELF_CONTAINED.add((str(path), sha256, repr(io)))

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

    def shipped_file(self, rel: str, field: str, *, max_size: int | None = None) -> Path:
        """A non-artifact file the manifest names (`labels`, `weights.path`): inside the bundle,
        listed in `files` with its size and sha256, and matching both (the size is checked
        first, so a huge file is refused before it is read)."""
        path = self.resolve(rel, field)
        record = self.manifest.files.get(rel)
        if record is None:
            raise BundleError(
                f"{self.root / MANIFEST_NAME}: {field} {rel!r} is not listed in `files` with a "
                "sha256 and size: re-export the bundle with this vggdeploy"
            )
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing: re-export the bundle")
        size = path.stat().st_size
        if max_size is not None and size > max_size:
            raise BundleError(
                f"{path} is {size} bytes, over the {max_size >> 20} MiB a {field} file may have: "
                "re-export the bundle"
            )
        if size != record.size or sha256_file(path) != record.sha256:
            raise BundleError(
                f"{path} does not match the sha256 and size in the manifest (modified or "
                "corrupt): re-export the bundle"
            )
        return path

    def add_file(self, rel: str) -> None:
        """Record a file written inside the bundle (labels, weights) with its size and sha256."""
        from vggdeploy.records import FileRecord

        path = self.resolve(rel)
        record = FileRecord(path=rel, sha256=sha256_file(path), size=path.stat().st_size)
        with self.update() as manifest:
            manifest.files[rel] = record

    def write_labels(self, names: list[str], rel: str = "labels.txt") -> None:
        """Write class names (one a line) into the bundle and record the file in the manifest."""
        atomic_write_text(self.root / rel, "".join(f"{name}\n" for name in names))
        with self.update() as manifest:
            manifest.labels = rel
        self.add_file(rel)

    def labels(self) -> list[str] | None:
        """Class names, one per output index, if the bundle carries them: exactly one UTF-8
        line per class of the model, in a file whose size and sha256 the manifest records."""
        rel = self.manifest.labels
        if not rel:
            return None
        path = self.shipped_file(rel, "labels", max_size=MAX_LABELS_BYTES)
        try:
            names = path.read_bytes().decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(
                f"{path} cannot be read as UTF-8 text ({exc}): re-export the bundle"
            ) from None
        classes = self.manifest.model.num_classes
        if len(names) != classes:
            raise BundleError(
                f"{path} has {len(names)} lines but the model has {classes} classes: give "
                "exactly one class name per line and re-export the bundle"
            )
        return names


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; every problem is one `BundleError` line."""
    from vggdeploy.records import manifest_from_data, parse_json

    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} cannot be read ({exc}): re-create the bundle") from None
    return manifest_from_data(parse_json(text, str(path)), str(path))
