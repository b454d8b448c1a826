"""One checksummed, reproducible archive of a bundle, and its safe extraction.

`pack_bundle` writes `FILE.tar.gz` (or `.tgz`, `.tar`): a copy of the manifest without
machine-specific paths, a `SHA256SUMS` file (`sha256sum -c` reads it) and every artifact. Each
artifact is hashed while it is streamed into the archive, so the bytes packed are exactly the
bytes checked against the manifest; a mismatch removes the partial archive. The archive is
reproducible: sorted names, fixed mtime, uid/gid 0, no gzip timestamp. Engines can be left out
(`include_engines=False`), since an engine only runs on the GPU and TensorRT that built it; on
the target, `vggdeploy build` makes that device's engine.

`unpack_bundle` refuses absolute names, `..` entries, links and device files before writing
anything, extracts into a temporary folder beside the destination (with tarfile's `data`
filter where Python has it), checks every sha256, and only then moves the bundle into place.

Both take `progress(what, done_bytes, total_bytes)`, called as bytes move (at most every few
MiB); neither prints.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from vggdeploy.bundle import MANIFEST_NAME, Bundle, atomic_path, sha256_bytes
from vggdeploy.errors import BundleError, InputError
from vggdeploy.inspect import SUMS_NAME
from vggdeploy.records import EngineRecord, Manifest, check_relative, dumps

#: progress(what, done bytes, total bytes)
ProgressFn = Callable[[str, int, int], None]

# Reproducible archives: a fixed timestamp (SOURCE_DATE_EPOCH if set, as reproducible-builds
# tools expect) instead of each file's mtime.
DEFAULT_MTIME = 315532800  # 1980-01-01, the earliest time zip-based tools accept too
CHUNK = 1 << 20
#: report progress at most once per this many bytes (and always at the end)
REPORT_EVERY = 4 << 20


class _Meter:
    """Counts bytes of one operation and calls `progress` now and then."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        self._last, self._what = -REPORT_EVERY, ""

    def set(self, what: str, done: int, *, force: bool = False) -> None:
        """Move to `done` bytes; reported when `what` changes, every few MiB, or if `force`."""
        self.done = min(done, self.total)
        if self.progress is None:
            return
        if force or what != self._what or self.done - self._last >= REPORT_EVERY:
            self._last, self._what = self.done, what
            self.progress(what, self.done, self.total)

    def add(self, what: str, n: int) -> None:
        self.set(what, self.done + n)


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
    key: str | None  # the artifact key, None for the labels file


def _sources(bundle: Bundle, excluded: list[str]) -> list[_Source]:
    """Every file to pack, with the sha256 it must have; missing or escaping files refused."""
    sources: dict[str, _Source] = {}
    bad: list[str] = []
    for key, record in sorted(bundle.artifacts.items()):
        if key in excluded:
            continue
        try:
            path = bundle.resolve(record.path, f"artifacts.{key}.path")
        except BundleError as exc:
            bad.append(f"{key}: {exc}")
            continue
        if not path.is_file():
            bad.append(f"{key}: {record.path} is missing")
            continue
        sources[record.path] = _Source(record.path, path, path.stat().st_size, record.sha256, key)
    if bad:
        raise BundleError(
            f"not packing {bundle.root}: {'; '.join(bad)} - re-create these artifacts "
            "(`vggdeploy inspect` lists them)"
        )
    labels = bundle.manifest.labels
    if labels:
        path = bundle.resolve(labels, "labels")
        if not path.is_file():
            raise BundleError(f"labels file {labels!r} of {bundle.root} is missing: re-export")
        data = path.read_bytes()
        sources[labels] = _Source(labels, path, len(data), sha256_bytes(data), None)
    return [sources[rel] for rel in sorted(sources)]


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
    if not name.endswith((".tar.gz", ".tgz", ".tar")):
        raise InputError(f"archive {out} must end in .tar.gz, .tgz or .tar")
    if out.is_dir():
        raise InputError(f"{out} is a folder: give a file name such as {out / 'bundle.tar.gz'}")

    excluded = sorted(
        k
        for k, r in bundle.artifacts.items()
        if not include_engines and isinstance(r, EngineRecord)
    )
    sources = _sources(bundle, excluded)
    manifest, removed = portable_manifest(bundle.manifest, excluded)
    manifest_bytes = dumps(manifest).encode("utf-8")
    sums = {s.rel: s.sha256 for s in sources}
    sums[MANIFEST_NAME] = sha256_bytes(manifest_bytes)
    sums_bytes = "".join(f"{sums[k]}  {k}\n" for k in sorted(sums)).encode("utf-8")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_MTIME))
    meter = _Meter(progress, sum(s.size for s in sources))
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

    def __init__(self, f: BinaryIO, meter: _Meter, what: str) -> None:
        self.f, self.meter, self.what, self.digest = f, meter, what, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
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
    fileobj: Any, sources: list[_Source], manifest: bytes, sums: bytes, mtime: int, meter: _Meter
) -> list[str]:
    """Write the archive members; returns the files whose sha256 did not match."""
    bad: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = CHUNK
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest), mtime), io.BytesIO(manifest))
        tar.addfile(_tarinfo(SUMS_NAME, len(sums), mtime), io.BytesIO(sums))
        for source in sources:
            with open(source.path, "rb") as f:
                reader = _HashingReader(f, meter, f"packing {source.rel}")
                tar.addfile(_tarinfo(source.rel, source.size, mtime), reader)  # type: ignore[arg-type]
            if reader.digest.hexdigest() != source.sha256:
                what = source.key or "labels"
                bad.append(f"{what}: {source.rel} does not match its sha256 (modified or corrupt)")
    return bad


# -- unpack -----------------------------------------------------------------------------------


def _safe_member_name(name: str) -> bool:
    """An archive member name that stays inside the destination (the manifest's own rule)."""
    if not name or "\\" in name or "\x00" in name or name.startswith("~"):
        return False
    try:
        check_relative(name, "member")
    except ValueError:
        return False
    return True


def check_members(members: list[tarfile.TarInfo]) -> list[str]:
    """Every reason to refuse this archive (empty if it is safe to extract)."""
    problems: list[str] = []
    seen: set[str] = set()
    for m in members:
        name = m.name
        if not _safe_member_name(name.rstrip("/")):
            problems.append(f"{name!r}: absolute path or '..' entry")
        elif m.issym() or m.islnk():
            problems.append(
                f"{name!r}: a {'symbolic' if m.issym() else 'hard'} link to {m.linkname!r}"
            )
        elif not (m.isfile() or m.isdir()):
            problems.append(f"{name!r}: a device, FIFO or other special file")
        elif name.rstrip("/") in seen:
            problems.append(f"{name!r}: appears twice")
        seen.add(name.rstrip("/"))
    return problems


class _ReadMeter:
    """The archive file as tarfile reads it: reports how far into the file reading has got."""

    def __init__(self, raw: BinaryIO, meter: _Meter) -> None:
        self.raw, self.meter, self.active = raw, meter, False
        self.name = getattr(raw, "name", None)

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.active:
            self.meter.set("unpacking", self.raw.tell())
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()


def unpack_bundle(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Bundle:
    """Extract a packed bundle to `dest` after checking names and kinds, then verify sha256s."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise InputError(f"archive {archive} does not exist")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise InputError(
            f"{dest} exists and is not empty: choose another -o, or add --force to replace it"
        )
    raw = open(archive, "rb")  # noqa: SIM115 - closed with the tar below
    reader = _ReadMeter(raw, _Meter(progress, archive.stat().st_size))
    try:
        tar = tarfile.open(fileobj=reader, mode="r:*")  # type: ignore[call-overload]  # noqa: SIM115
    except (tarfile.TarError, OSError) as exc:
        raw.close()
        # tarfile's own message lists every compression it tried, one per line: keep the gist.
        reason = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        raise BundleError(
            f"{archive} is not a readable tar archive ({reason}): give a file made by `vggdeploy pack`"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
    try:
        with tar, raw:
            members = tar.getmembers()
            problems = check_members(members)
            if problems:
                raise BundleError(
                    f"refusing to unpack {archive}: {'; '.join(problems[:5])}"
                    + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                    + " - this is not an archive written by `vggdeploy pack`"
                )
            reader.active = True
            if hasattr(tarfile, "data_filter"):
                # Python's own guard too (3.12, backported to 3.8.17+): rejects what we missed.
                tar.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; our checks above already ran
                tar.extractall(staging, members=members)
            reader.meter.set("unpacked", reader.meter.total, force=True)
        verify_unpacked(staging, progress=progress)
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(staging, dest)
    except tarfile.TarError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"refusing to unpack {archive}: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(dest)


def _hash(path: Path, meter: _Meter, what: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            meter.add(what, len(block))
    return digest.hexdigest()


def verify_unpacked(root: Path, *, progress: ProgressFn | None = None) -> None:
    """Check SHA256SUMS (if present) and every artifact's sha256 from the manifest.

    Each file is read once, however many of the two lists name it.
    """
    bundle = Bundle.load(root)
    expected: dict[str, list[tuple[str, str]]] = {}  # rel -> [(sha256, who says so)]
    bad: list[str] = []
    sums = root / SUMS_NAME
    if sums.is_file():
        for line in sums.read_text("utf-8").splitlines():
            digest, _, rel = line.partition("  ")
            expected.setdefault(rel, []).append((digest, SUMS_NAME))
    for key, record in bundle.artifacts.items():
        expected.setdefault(record.path, []).append((record.sha256, key))
    paths: dict[str, Path] = {}
    for rel, claims in sorted(expected.items()):
        try:
            path = bundle.resolve(rel, claims[0][1])
        except BundleError:
            bad.append(f"{rel}: named by {claims[0][1]} but outside the bundle")
            continue
        if path.is_file():
            paths[rel] = path
        else:
            who = claims[0][1]
            bad.append(
                f"{rel}: listed in {SUMS_NAME} but missing"
                if who == SUMS_NAME
                else f"{who}: {rel} is missing from the archive"
            )
    meter = _Meter(progress, sum(p.stat().st_size for p in paths.values()))
    meter.set("verifying", 0, force=True)
    for rel, path in paths.items():
        actual = _hash(path, meter, f"verifying {rel}")
        for digest, who in expected[rel]:
            if actual != digest:
                bad.append(
                    f"{rel}: sha256 differs from {SUMS_NAME}"
                    if who == SUMS_NAME
                    else f"{who}: {rel} does not match the manifest's sha256"
                )
    meter.set("verified", meter.total, force=True)
    if bad:
        raise BundleError(
            f"the unpacked bundle is corrupt: {'; '.join(bad)} - copy the archive again"
        )
