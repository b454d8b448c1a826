"""One checksummed, reproducible archive of a bundle, and its safe extraction.

`pack_bundle` writes `FILE.tar.gz` (or `.tgz`, `.tar`): a copy of the manifest without
machine-specific paths, a `SHA256SUMS` file (`sha256sum -c` reads it) and every artifact. Each
artifact is found through the bundle's containment rule (`Bundle.artifact_path`, `resolve`),
opened without following a final symbolic link, and hashed while it is streamed into the archive,
so the bytes packed are exactly the bytes checked against the manifest. The archive is written
under a temporary name and renamed at the end: a mismatch, a full disk or Ctrl-C leaves none.
It is reproducible: sorted names, fixed mtime, uid/gid 0, no gzip timestamp. Engines can be left
out (`include_engines=False`), since an engine only runs on the GPU and TensorRT that built it.

`unpack_bundle` treats the archive as untrusted (`archive_checks`): it checks the whole member
list against the archive's SHA256SUMS and manifest before writing anything, writes each member
within its recorded size into a temporary folder beside the destination, checks every sha256,
loads the result as a bundle, and only then moves it into place.

Both take `progress(what, done_bytes, total_bytes)`, called as bytes move (at most every few
MiB); neither prints.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from vggdeploy.bundle import (
    MANIFEST_NAME,
    Bundle,
    atomic_path,
    current_umask,
    replace_folder,
    sha256_bytes,
)
from vggdeploy.errors import BundleError, InputError
from vggdeploy.inspection import SUMS_NAME
from vggdeploy.packaging.archive_checks import (
    CHUNK,
    SMALL_FILES_BUDGET,
    Budget,
    Meter,
    ProgressFn,
    check_members,
    check_unpacked,
    extract_planned,
    open_stream,
    plan_unpack,
    write_error,
)
from vggdeploy.packaging.sums import contents_digest, parse_sums, sums_text
from vggdeploy.records import EngineRecord, Manifest, dumps

__all__ = [
    "SUMS_NAME",
    "PackResult",
    "ProgressFn",
    "check_members",
    "pack_bundle",
    "portable_manifest",
    "unpack_bundle",
    "verify_unpacked",
]

# Reproducible archives: a fixed timestamp (SOURCE_DATE_EPOCH if set, as reproducible-builds
# tools expect) instead of each file's mtime.
DEFAULT_MTIME = 315532800  # 1980-01-01, the earliest time zip-based tools accept too
# -- pack -------------------------------------------------------------------------------------


def _is_abs_path(value: str) -> bool:
    return value.startswith(("/", "\\", "~")) or (
        len(value) > 2 and value[1] == ":" and value[2] in "/\\"
    )


def portable_manifest(manifest: Manifest, drop: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The manifest as JSON data without the artifacts in `drop` and without absolute paths.

    Returns the data and the JSON paths (`weights.path`, ...) whose absolute paths were
    replaced by the file's base name; a packed bundle never names the packing machine's folders.
    """
    data = manifest.to_json_dict()
    for key in drop:
        data["artifacts"].pop(key, None)
    removed: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and _is_abs_path(node):
            removed.append(where)
            return PurePosixPath(node.replace("\\", "/")).name
        return node

    data = walk(data, "")
    data["packed"] = {
        "excluded_artifacts": sorted(drop),
        "paths_made_relative": removed,
        "note": "absolute paths of the packing machine were replaced by file names",
    }
    return data, removed


@dataclass
class PackResult:
    archive: Path
    files: list[str]
    excluded: list[str]
    paths_made_relative: list[str]
    size: int
    sha256: str
    #: bytes of the files packed (before compression)
    content_bytes: int = 0


@dataclass
class _Source:
    rel: str
    path: Path
    size: int
    sha256: str
    key: str  # the artifact key, or files.PATH


def _open_regular(path: Path) -> BinaryIO:
    """Open a bundle file for reading, never through a final symbolic link or into a device."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def _read_error(bundle: Bundle, what: str, exc: OSError) -> BundleError:
    return BundleError(
        f"not packing {bundle.root}: cannot read {what} ({exc.strerror or exc}) - "
        "make it readable or re-create it"
    )


def _sources(bundle: Bundle, excluded: list[str]) -> list[_Source]:
    """Every file to pack, with the sha256 it must have; missing or escaping files refused."""
    sources: dict[str, _Source] = {}
    bad: list[str] = []
    for key, record in sorted(bundle.artifacts.items()):
        if key in excluded:
            continue
        try:
            path = bundle.artifact_path(key)  # containment: inside the bundle, no escaping link
        except BundleError as exc:
            bad.append(f"{key}: {exc}")
            continue
        size = path.stat().st_size
        if size != record.size:
            bad.append(
                f"{key}: {record.path} does not match its sha256 (modified or corrupt: "
                f"{size} bytes, the manifest says {record.size})"
            )
            continue
        sources[record.path] = _Source(record.path, path, size, record.sha256, key)
    if bad:
        raise BundleError(
            f"not packing {bundle.root}: {'; '.join(bad)} - re-create these artifacts "
            "(`vggdeploy inspect` lists them)"
        )
    # every other file the bundle ships (labels, weights), checked like an artifact; the labels
    # are also checked against the model (one name per class) before they travel
    bundle.labels()
    for rel, record in sorted(bundle.manifest.files.items()):
        path = bundle.resolve(rel, f"files.{rel}")
        try:
            with _open_regular(path) as f:
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise _read_error(bundle, rel, exc) from None
        if size != record.size:
            raise BundleError(
                f"not packing {bundle.root}: {rel} is {size} bytes, the manifest says "
                f"{record.size} (modified or corrupt) - re-export the bundle"
            )
        sources[rel] = _Source(rel, path, size, record.sha256, f"files.{rel}")
    return [sources[rel] for rel in sorted(sources)]


def _check_output(bundle: Bundle, out: Path) -> None:
    name = out.name.lower()
    if not name.endswith((".tar.gz", ".tgz", ".tar")):
        raise InputError(f"archive {out} must end in .tar.gz, .tgz or .tar")
    if out.is_dir():
        raise InputError(f"{out} is a folder: give a file name such as {out / 'bundle.tar.gz'}")
    where = out.parent.resolve() / out.name
    if where.is_relative_to(bundle.root.resolve()):
        raise InputError(
            f"{out} is inside the bundle {bundle.root}: write the archive outside the bundle"
        )


def pack_bundle(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    include_engines: bool = True,
    compresslevel: int = 6,
    progress: ProgressFn | None = None,
) -> PackResult:
    """Write the bundle at `root` as one archive at `out` (`.tar.gz`, `.tgz` or `.tar`)."""
    bundle = Bundle.load(root)
    out = Path(out)
    name = out.name.lower()
    _check_output(bundle, out)

    excluded = sorted(
        k
        for k, r in bundle.artifacts.items()
        if not include_engines and isinstance(r, EngineRecord)
    )
    sources = _sources(bundle, excluded)
    manifest, removed = portable_manifest(bundle.manifest, excluded)
    sums = {s.rel: s.sha256 for s in sources}
    # the rule that refuses hand re-made archives (`archive_checks._check_packed_by_us`)
    manifest["packed"]["sums_sha256"] = contents_digest(sums)
    manifest_bytes = dumps(manifest).encode("utf-8")
    sums[MANIFEST_NAME] = sha256_bytes(manifest_bytes)
    sums_bytes = sums_text(sums)
    small = len(manifest_bytes) + len(sums_bytes) + sum(s.size for s in sources if s.key is None)
    if small > SMALL_FILES_BUDGET:
        raise BundleError(
            f"not packing {bundle.root}: its manifest, labels and SHA256SUMS pass "
            f"{SMALL_FILES_BUDGET >> 20} MiB, more than `vggdeploy unpack` accepts"
        )
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_MTIME))
    meter = Meter(progress, sum(s.size for s in sources))
    meter.set("packing", 0, force=True)

    with atomic_path(out) as tmp, open(tmp, "wb") as raw:
        sink = _HashingWriter(raw)
        if name.endswith(".tar"):
            bad = _write_tar(sink, sources, manifest_bytes, sums_bytes, mtime, meter)
        else:
            # GzipFile with an explicit mtime and no file name keeps the archive reproducible.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=sink, mtime=mtime, compresslevel=compresslevel
            ) as gz:
                bad = _write_tar(gz, sources, manifest_bytes, sums_bytes, mtime, meter)
        if bad:  # raising here removes the partial archive
            raise BundleError(
                f"not packing {bundle.root}: {'; '.join(bad)} - re-create these artifacts "
                "(`vggdeploy inspect` lists them)"
            )
    meter.set("packed", meter.total, force=True)
    return PackResult(
        archive=out,
        files=sorted([*(s.rel for s in sources), MANIFEST_NAME, SUMS_NAME]),
        excluded=excluded,
        paths_made_relative=removed,
        size=sink.count,
        sha256=sink.digest.hexdigest(),
        content_bytes=meter.total,
    )


class _HashingWriter:
    """A write-only file that hashes and counts what passes through (the archive's sha256)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.count = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self.raw.flush()


class _HashingReader:
    """Reads a source file for tarfile, hashing it and moving the progress meter."""

    def __init__(self, f: BinaryIO, meter: Meter, what: str) -> None:
        self.f, self.meter, self.what, self.digest = f, meter, what, hashlib.sha256()
        self.short = False

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.f.read(n)
        except OSError:
            data = b""  # unreadable now: reported as a mismatch, the archive is not kept
        if n and not data:
            # the file shrank while packing: pad so tarfile writes a whole member, then refuse
            self.short = True
            data = b"\0" * n
        self.digest.update(data)
        self.meter.add(self.what, len(data))
        return data


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(
    fileobj: Any, sources: list[_Source], manifest: bytes, sums: bytes, mtime: int, meter: Meter
) -> list[str]:
    """Write the archive members; returns the files whose sha256 did not match."""
    bad: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = CHUNK
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest), mtime), io.BytesIO(manifest))
        tar.addfile(_tarinfo(SUMS_NAME, len(sums), mtime), io.BytesIO(sums))
        for source in sources:
            try:
                f = _open_regular(source.path)
            except OSError as exc:
                bad.append(f"{source.key or 'labels'}: cannot read {source.rel} ({exc})")
                continue
            with f:
                reader = _HashingReader(f, meter, f"packing {source.rel}")
                tar.addfile(_tarinfo(source.rel, source.size, mtime), reader)  # type: ignore[arg-type]
            if reader.short or reader.digest.hexdigest() != source.sha256:
                what = source.key or "labels"
                bad.append(f"{what}: {source.rel} does not match its sha256 (modified or corrupt)")
    return bad


# -- unpack -----------------------------------------------------------------------------------


def _check_destination(dest: Path, force: bool) -> bool:
    """Refuse a destination unpack may not write; True if an existing bundle is to be replaced."""
    if dest.is_symlink():
        raise InputError(f"{dest} is a symbolic link: give the folder itself as -o")
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise InputError(f"{dest} exists and is not a folder: choose another -o")
    if not any(dest.iterdir()):
        return False
    if not force:
        raise InputError(
            f"{dest} exists and is not empty: choose another -o, or add --force to replace it"
        )
    if not (dest / MANIFEST_NAME).is_file():
        raise InputError(
            f"{dest} is not a vggdeploy bundle (no {MANIFEST_NAME}): --force only replaces a "
            "bundle, so choose another -o (nothing was deleted)"
        )
    return True


def unpack_bundle(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Bundle:
    """Extract a packed bundle to `dest`: every member checked against SHA256SUMS and the
    manifest before anything is written, written within its size into a temporary folder beside
    `dest`, hashed, loaded as a bundle, and only then moved into place.

    `force` replaces an existing bundle (a folder with a manifest.json), and only on success.
    """
    archive, shown = Path(archive), Path(dest)
    if not archive.is_file():
        raise InputError(f"archive {archive} does not exist or is not a file")
    replace = _check_destination(shown, force)
    dest = shown.resolve()
    if dest == Path(dest.anchor):
        raise InputError(f"{shown} is the root folder: give a folder for the bundle as -o")
    size = archive.stat().st_size
    meter = Meter(progress, size)  # each pass reads the archive once: checking, then unpacking
    meter.set("checking", 0, force=True)
    budget = Budget(archive)
    with open_stream(archive, lambda pos: meter.set("checking", pos), budget) as tar:
        plan = plan_unpack(tar, archive, budget)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest.parent).free
    except OSError as exc:
        raise write_error(shown, exc) from None
    if plan.total > free:
        raise InputError(
            f"cannot unpack {archive} to {shown}: it needs {plan.total} bytes, "
            f"{dest.parent} has {free} free - free some space or choose another -o"
        )
    try:
        staging = Path(
            tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent)
        )
    except OSError as exc:
        raise write_error(shown, exc) from None
    try:
        with open_stream(
            archive, lambda pos: meter.set("unpacking", pos), plan.budget(archive)
        ) as tar:
            extract_planned(tar, plan, staging, archive, shown)
        meter.set("unpacked", meter.total, force=True)
        check_unpacked(staging, archive)
        meter.set("verified", meter.total, force=True)
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp made it 0700
        replace_folder(staging, dest, replace=replace)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(shown, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(shown)


def verify_unpacked(root: Path, *, progress: ProgressFn | None = None) -> None:
    """Check an unpacked bundle again: every file SHA256SUMS lists and every artifact's sha256.

    Each file is read once, however many of the two lists name it.
    """
    bundle = Bundle.load(root)
    expected: dict[str, list[tuple[str, str]]] = {}  # rel -> [(sha256, who says so)]
    bad: list[str] = []
    sums = root / SUMS_NAME
    if sums.is_file():
        try:
            listed = parse_sums(sums.read_bytes())
        except ValueError as exc:
            raise BundleError(f"{root}: {exc} - copy the archive again") from None
        for rel, digest in listed.items():
            expected.setdefault(rel, []).append((digest, SUMS_NAME))
    for key, record in bundle.artifacts.items():
        expected.setdefault(record.path, []).append((record.sha256, key))
    paths: dict[str, Path] = {}
    for rel, claims in sorted(expected.items()):
        who = claims[0][1]
        try:
            path = bundle.resolve(rel, who)
        except BundleError:
            bad.append(f"{rel}: named by {who} but outside the bundle")
            continue
        if path.is_file():
            paths[rel] = path
        else:
            bad.append(f"{rel}: listed by {who} but missing")
    meter = Meter(progress, sum(p.stat().st_size for p in paths.values()))
    meter.set("verifying", 0, force=True)
    for rel, path in paths.items():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                meter.add(f"verifying {rel}", len(block))
        for want, who in expected[rel]:
            if digest.hexdigest() != want:
                bad.append(f"{rel}: sha256 differs from {who}")
    meter.set("verified", meter.total, force=True)
    if bad:
        raise BundleError(
            f"the bundle {root} is corrupt: {'; '.join(bad)} - copy the archive again"
        )
