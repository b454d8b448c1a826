"""The bundle directory and its manifest.

A bundle is a directory that every stage reads and extends: `model.onnx`, later
`model.int8.onnx`, `model.fp16.onnx`, `model.<precision>.engine`, and `manifest.json`, which
records what was made, from what, with which versions, and the sha256 of every file. Stages
write files atomically (temporary name in the same directory, then `os.replace`) so an
interrupted run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vggdeploy.errors import BundleError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the artifact the permissions an ordinary file would get, so a
    # bundle can be read by another user (a Triton server, a CI job) after it is copied.
    os.chmod(tmp_path, 0o666 & ~_current_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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
    """A bundle directory and its manifest.

    `manifest["artifacts"]` maps a key such as `onnx.fp32`, `onnx.int8` or `engine.fp16` to a
    record with at least `path` (relative to the bundle), `sha256`, `size`, `kind` and
    `precision`; stages add their own facts to the record.
    """

    def __init__(self, root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest

    # -- loading and saving -------------------------------------------------------------------

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Bundle:
        root = Path(root)
        path = root / MANIFEST_NAME
        if not root.is_dir():
            raise BundleError(f"bundle {root} does not exist: create it with `vggdeploy export`")
        if not path.is_file():
            raise BundleError(
                f"{root} has no {MANIFEST_NAME}: it is not a vggdeploy bundle "
                "(create one with `vggdeploy export`)"
            )
        try:
            manifest = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(
                f"{path} is not valid JSON ({exc}): re-run `vggdeploy export`"
            ) from None
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{path} has schema version {version!r}, this vggdeploy reads {SCHEMA_VERSION}: "
                "re-export the bundle with this version"
            )
        manifest.setdefault("artifacts", {})
        return cls(root, manifest)

    @classmethod
    def create(cls, root: str | os.PathLike[str], manifest: dict[str, Any]) -> Bundle:
        manifest = {"schema_version": SCHEMA_VERSION, **manifest}
        manifest.setdefault("artifacts", {})
        return cls(root, manifest)

    def save(self) -> None:
        atomic_write_json(self.root / MANIFEST_NAME, self.manifest)

    # -- artifacts ------------------------------------------------------------------------------

    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        return self.manifest["artifacts"]

    def has_artifact(self, key: str) -> bool:
        return key in self.artifacts and (self.root / self.artifacts[key]["path"]).is_file()

    def artifact(self, key: str) -> dict[str, Any]:
        if key not in self.artifacts:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise BundleError(f"bundle {self.root} has no artifact {key!r} (it has: {have})")
        return self.artifacts[key]

    def artifact_path(self, key: str, *, verify: bool = False) -> Path:
        """Absolute path of an artifact; with `verify`, check its sha256 against the manifest."""
        record = self.artifact(key)
        path = self.root / record["path"]
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing: re-create it")
        if verify and sha256_file(path) != record["sha256"]:
            raise BundleError(
                f"{path} does not match the sha256 in the manifest (modified or corrupt): "
                "re-create it"
            )
        return path

    def add_artifact(self, key: str, path: str | os.PathLike[str], **info: Any) -> dict[str, Any]:
        """Record a file already written inside the bundle, with its size and sha256."""
        path = Path(path)
        abs_path = path if path.is_absolute() else self.root / path
        record = {
            "path": Path(os.path.relpath(abs_path, self.root)).as_posix(),
            "sha256": sha256_file(abs_path),
            "size": abs_path.stat().st_size,
            **info,
        }
        self.artifacts[key] = record
        return record

    # -- convenience views ----------------------------------------------------------------------

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.manifest["preprocessing"]

    @property
    def input_name(self) -> str:
        return self.manifest["io"]["inputs"][0]["name"]

    @property
    def output_name(self) -> str:
        return self.manifest["io"]["outputs"][0]["name"]

    def labels(self) -> list[str] | None:
        """Class names, one per output index, if the bundle carries them."""
        rel = self.manifest.get("labels")
        if not rel:
            return None
        path = self.root / rel
        if not path.is_file():
            raise BundleError(f"{path} is listed in the manifest but missing: re-export the bundle")
        return [line.rstrip("\n") for line in path.read_text("utf-8").splitlines()]
