"""Reading an untrusted bundle archive: what `unpack_bundle` checks before and while it writes.

An archive is untrusted input, so nothing in it is written before the whole member list has been
checked against the archive's own `SHA256SUMS` and `manifest.json` (`plan_unpack`, which reads
only the archive's headers and those two small files), and `extract_planned` then writes each
member with a byte budget, hashing it as it goes:

* `manifest.json` and `SHA256SUMS` come first, as `vggdeploy pack` writes them; the manifest is
  validated (strict JSON, paths inside the bundle) and must match its sha256 in `SHA256SUMS`;
* every other member must be a regular file that `SHA256SUMS` lists, once, under a plain relative
  name; an artifact's member must have exactly the size the manifest records, and everything that
  is not an artifact (manifest, sums, labels) shares `SMALL_FILES_BUDGET`;
* what is written is counted, so no member exceeds the size checked, and hashed, so a member
  whose bytes differ from `SHA256SUMS` is reported.

A truncated or corrupt archive (cut short, garbage gzip, not a tar) is one `BundleError` line.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from vggdeploy.bundle import MANIFEST_NAME, Bundle, sha256_bytes
from vggdeploy.errors import BundleError, InputError
from vggdeploy.inspection import SUMS_NAME
from vggdeploy.packaging.sums import normal_name, packed_by_us_problem, parse_sums
from vggdeploy.records import Manifest, manifest_from_data, parse_json

#: manifest.json, SHA256SUMS, the labels file and any other non-artifact file, all together
SMALL_FILES_BUDGET = 16 << 20
CHUNK = 1 << 20
#: errors reading a damaged archive raises (gzip.BadGzipFile and bz2's errors are OSErrors)
READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    ValueError,
    RecursionError,  # a chain of pax headers: tarfile reads them recursively
)
NOT_PACKED = "it was not written by `vggdeploy pack` (re-pack the bundle with it)"


#: progress(what, done bytes, total bytes)
ProgressFn = Callable[[str, int, int], None]

#: report progress at most once per this many bytes (and always at the end)
REPORT_EVERY = 4 << 20


class Meter:
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


def corrupt(archive: Path, reason: str) -> BundleError:
    return BundleError(f"archive {archive} is truncated or corrupt ({reason}): re-copy it")


def refuse(archive: Path, reason: str, fix: str | None = NOT_PACKED) -> BundleError:
    """`fix` None: the reason already says what to do (a manifest or bundle error)."""
    return BundleError(f"refusing to unpack {archive}: {reason}" + (f" - {fix}" if fix else ""))


def _reason(exc: BaseException) -> str:
    """The gist of a reading error (tarfile lists every compression it tried, one per line)."""
    text = str(exc).splitlines()[0].rstrip(": ") if str(exc) else ""
    return text or type(exc).__name__


@contextmanager
def reading(archive: Path) -> Iterator[None]:
    """Turn any error from reading the archive into one 'truncated or corrupt' line."""
    try:
        yield
    except READ_ERRORS as exc:
        reason = "too many chained tar headers" if isinstance(exc, RecursionError) else None
        raise corrupt(archive, reason or _reason(exc)) from None


def check_members(members: list[tarfile.TarInfo]) -> list[str]:
    """Every reason to refuse these members by name and kind alone (empty if none)."""
    problems: list[str] = []
    seen: set[str] = set()
    for m in members:
        norm = normal_name(m.name)
        if norm is None:
            problems.append(f"{m.name!r}: absolute path, '..' entry or unsafe name")
        elif m.issym() or m.islnk():
            kind = "symbolic" if m.issym() else "hard"
            problems.append(f"{m.name!r}: a {kind} link to {m.linkname!r}")
        elif not m.isreg() or m.issparse():
            what = "a folder entry" if m.isdir() else "a device, FIFO or other special file"
            problems.append(f"{m.name!r}: {what}")
        elif norm.casefold() in seen:
            problems.append(f"{m.name!r}: appears twice")
        if norm is not None:
            seen.add(norm.casefold())
    return problems


@dataclass
class Plan:
    """What an archive may write, checked before anything is written."""

    sums: dict[str, str]
    manifest: Manifest
    #: normalized name -> (size, sha256), in archive order, SHA256SUMS itself included
    members: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(size for size, _ in self.members.values())

    def budget(self, archive: Path) -> Budget:
        budget = Budget(archive)
        budget.allow(self.total, len(self.members))
        return budget


class ArchiveReader:
    """The archive file as read, telling `on_read` how far reading has got."""

    def __init__(self, path: Path, on_read: Callable[[int], None] | None = None) -> None:
        self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.on_read, self.name = on_read, str(path)

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.on_read is not None:
            self.on_read(self.raw.tell())
        return data

    def close(self) -> None:
        self.raw.close()


#: tar overhead allowed per member (header, padding, a small pax header), and at the end
PER_MEMBER, AT_END = 16 << 10, 64 << 10
COMPRESSIONS: tuple[tuple[bytes, Callable[[Any], Any]], ...] = (
    (b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", lambda f: bz2.BZ2File(f, "rb")),
    (b"\xfd7zXZ\x00", lambda f: lzma.LZMAFile(f, "rb")),  # noqa: SIM115
)


class Budget:
    """How many decompressed bytes tarfile may read: a compression bomb stops at the limit."""

    def __init__(self, archive: Path, limit: int = 2 * SMALL_FILES_BUDGET + AT_END) -> None:
        self.archive, self.limit, self.used = archive, limit, 0

    def allow(self, content: int, members: int) -> None:
        self.limit = self.used + content + PER_MEMBER * members + AT_END


class _Decompressed:
    """The tar bytes (decompressed here, not by tarfile), counted against the budget."""

    def __init__(self, source: Any, budget: Budget) -> None:
        self.source, self.budget = source, budget

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.budget.used += len(data)
        if self.budget.used > self.budget.limit:
            raise refuse(self.budget.archive, "it unpacks to more bytes than its files account for")
        return data

    def close(self) -> None:
        self.source.close()


class _NoBigReads:
    """tarfile's stream, refusing a header (pax, GNU long name) that would fill memory."""

    def __init__(self, stream: Any, archive: Path) -> None:
        self._stream, self._archive = stream, archive

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > SMALL_FILES_BUDGET + AT_END:
            raise refuse(self._archive, f"a tar header of {n} bytes")
        return self._stream.read(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def open_stream(
    archive: Path, on_read: Callable[[int], None] | None = None, budget: Budget | None = None
) -> Iterator[Any]:
    """The archive as a forward-only tar stream (gzip, bzip2, xz or plain detected)."""
    budget = budget or Budget(archive)
    reader = ArchiveReader(archive, on_read)
    try:
        with reading(archive):
            magic = reader.raw.read(6)
            reader.raw.seek(0)
            opener = next((o for m, o in COMPRESSIONS if magic.startswith(m)), None)
            source = opener(reader) if opener else reader
            stream = _Decompressed(source, budget)
            tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
            tar.fileobj = _NoBigReads(tar.fileobj, archive)
        with tar:
            yield tar
    finally:
        reader.close()


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> bytes:
    if member.size > SMALL_FILES_BUDGET:
        raise refuse(archive, f"{member.name} is {member.size} bytes, far more than it can be")
    f = tar.extractfile(member)
    data = f.read(member.size + 1) if f is not None else b""
    if len(data) != member.size:
        raise corrupt(archive, f"{member.name} is cut short")
    return data


def _load_manifest(data: bytes, sums: dict[str, str], archive: Path) -> Manifest:
    if MANIFEST_NAME not in sums:
        raise refuse(archive, f"{SUMS_NAME} does not list {MANIFEST_NAME}")
    if sha256_bytes(data) != sums[MANIFEST_NAME]:
        raise corrupt(archive, f"{MANIFEST_NAME} does not match its sha256 in {SUMS_NAME}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse(archive, f"{MANIFEST_NAME} is not UTF-8 text") from None
    try:
        return manifest_from_data(parse_json(text, MANIFEST_NAME), MANIFEST_NAME)
    except BundleError as exc:
        raise refuse(archive, str(exc), fix=None) from None
    except RecursionError:
        raise refuse(archive, f"{MANIFEST_NAME} is nested too deeply") from None


def _artifact_sizes(manifest: Manifest, sums: dict[str, str], archive: Path) -> dict[str, int]:
    """{normalized path: size} of every artifact, each listed in SHA256SUMS with its sha256."""
    sizes: dict[str, int] = {}
    named = [(f"artifacts.{k}", r.path, r.size, r.sha256) for k, r in manifest.artifacts.items()]
    named += [(f"files.{rel}", rel, r.size, r.sha256) for rel, r in manifest.files.items()]
    if manifest.labels and manifest.labels not in manifest.files:
        raise refuse(archive, f"{MANIFEST_NAME}: labels {manifest.labels!r} is not in `files`")
    for who, path, size, digest in named:
        norm = normal_name(path)
        if norm is None:
            raise refuse(archive, f"{MANIFEST_NAME}: {who} {path!r} is outside the bundle")
        if norm not in sums:
            raise refuse(archive, f"{SUMS_NAME} does not list {path}, which {who} names")
        if digest and sums[norm] != digest:
            raise corrupt(archive, f"{MANIFEST_NAME} and {SUMS_NAME} differ on {path}'s sha256")
        if size >= 0:
            if sizes.get(norm, size) != size:
                raise refuse(archive, f"{MANIFEST_NAME} gives {path} two different sizes")
            sizes[norm] = size
    return sizes


def _next(tar: tarfile.TarFile, archive: Path) -> tarfile.TarInfo | None:
    with reading(archive):
        return tar.next()  # skipping a member reads (decompresses) its data


def _heads(tar: tarfile.TarFile, archive: Path) -> dict[str, bytes]:
    """manifest.json and SHA256SUMS, the two members `vggdeploy pack` writes first."""
    heads: dict[str, bytes] = {}
    for index in range(2):
        m = _next(tar, archive)
        if m is None:
            if index == 0:
                raise corrupt(archive, "it holds no files")
            break
        problems = check_members([m])
        if problems:
            raise refuse(archive, problems[0])
        if m.name in (MANIFEST_NAME, SUMS_NAME) and m.name not in heads:
            with reading(archive):
                heads[m.name] = _read_small(tar, m, archive)
    if SUMS_NAME not in heads:
        raise refuse(archive, f"it has no {SUMS_NAME} at its start")
    if MANIFEST_NAME not in heads:
        raise refuse(archive, f"it has no {MANIFEST_NAME} at its start")
    return heads


def plan_unpack(tar: tarfile.TarFile, archive: Path, budget: Budget | None = None) -> Plan:
    """Read the member list (headers only) and refuse anything the archive may not write."""
    heads = _heads(tar, archive)
    try:
        sums = parse_sums(heads[SUMS_NAME])
    except ValueError as exc:
        raise refuse(archive, str(exc)) from None
    plan = Plan(sums=sums, manifest=_load_manifest(heads[MANIFEST_NAME], sums, archive))
    sizes = _artifact_sizes(plan.manifest, sums, archive)
    problem = packed_by_us_problem(heads[SUMS_NAME], sums, plan.manifest)
    if problem:
        raise refuse(archive, problem)
    if budget is not None:
        budget.allow(sum(sizes.values()) + SMALL_FILES_BUDGET, len(sums) + 2)
    for name, data in heads.items():  # in archive order
        plan.members[name] = (len(data), sha256_bytes(data))
    small = sum(len(d) for d in heads.values())
    seen = {MANIFEST_NAME.casefold(), SUMS_NAME.casefold()}
    while (m := _next(tar, archive)) is not None:
        problems = check_members([m])
        norm = normal_name(m.name) or m.name
        if not problems and norm.casefold() in seen:
            problems = [f"{m.name!r}: appears twice"]
        if problems:
            raise refuse(archive, problems[0])
        seen.add(norm.casefold())
        if norm not in sums:
            raise refuse(archive, f"{m.name!r} ({m.size} bytes) is not listed in {SUMS_NAME}")
        if norm in sizes and m.size != sizes[norm]:
            raise refuse(
                archive,
                f"{m.name} is {m.size} bytes in the archive but the manifest lists {sizes[norm]}",
            )
        if norm not in sizes:
            small += m.size
            if small > SMALL_FILES_BUDGET:
                raise refuse(
                    archive,
                    f"its files other than artifacts (manifest, {SUMS_NAME}, labels) pass "
                    f"{SMALL_FILES_BUDGET >> 20} MiB ({small} bytes)",
                )
        plan.members[norm] = (m.size, sums[norm])
    missing = sorted(set(sums) - set(plan.members))
    if missing:
        raise corrupt(archive, f"{SUMS_NAME} lists {missing[0]} but the archive ends before it")
    names = set(plan.members)
    nested = sorted(
        n for n in names if any(p.as_posix() in names for p in PurePosixPath(n).parents)
    )
    if nested:
        raise refuse(archive, f"{nested[0]!r} lies under another file of the archive")
    return plan


def _create(path: Path) -> int:
    """A new file inside the staging folder; never follows or replaces anything."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)


def write_error(dest: Path, exc: OSError) -> InputError:
    return InputError(
        f"cannot write {dest} ({exc.strerror or exc}): free some space or choose a writable place"
    )


def extract_planned(
    tar: tarfile.TarFile,
    plan: Plan,
    staging: Path,
    archive: Path,
    dest: Path,
) -> None:
    """Write the planned members into `staging`, each within its checked size; check sha256s."""
    order = list(plan.members)
    bad: list[str] = []
    written = 0
    for index in range(len(order) + 1):
        with reading(archive):
            m = tar.next()
        if index == len(order):
            if m is not None:
                raise corrupt(archive, "it changed while it was being unpacked")
            break
        name = order[index]
        size, expected = plan.members[name]
        if m is None or normal_name(m.name) != name or m.size != size or not m.isreg():
            raise corrupt(archive, "it changed while it was being unpacked")
        digest = hashlib.sha256()
        done = 0
        try:
            fd = _create(staging / name)
        except OSError as exc:
            raise write_error(dest, exc) from None
        with os.fdopen(fd, "wb") as out:
            with reading(archive):
                src = tar.extractfile(m)
            while done < size:
                with reading(archive):
                    block = src.read(min(CHUNK, size - done)) if src is not None else b""
                if not block:
                    raise corrupt(archive, f"{m.name} is cut short")
                done += len(block)
                if done > size or written + done > plan.total:  # never past the checked size
                    raise refuse(archive, f"{m.name} holds more than its {size} bytes")
                digest.update(block)
                try:
                    out.write(block)
                except OSError as exc:
                    raise write_error(dest, exc) from None
        written += done
        if digest.hexdigest() != expected:
            bad.append(name)
    if bad:
        raise corrupt(archive, f"{', '.join(bad)}: sha256 differs from {SUMS_NAME}")


def check_unpacked(staging: Path, archive: Path) -> Bundle:
    """The extracted bundle, loaded and every artifact resolved inside it (one-line errors)."""
    try:
        bundle = Bundle.load(staging)
        for key, record in bundle.artifacts.items():
            path = bundle.artifact_path(key)
            if path.stat().st_size != record.size:
                raise BundleError(f"{record.path} is not {record.size} bytes")
        if bundle.manifest.labels:
            bundle.labels()
    except BundleError as exc:
        text = str(exc).replace(f"{staging}{os.sep}", "").replace(str(staging), "the bundle")
        raise refuse(archive, text, fix=None) from None
    return bundle
