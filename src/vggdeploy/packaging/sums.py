"""`SHA256SUMS` of a packed bundle: its names, its exact form, and the rule that tells an archive
`vggdeploy pack` wrote from one re-made by hand (`packed_by_us_problem`).

The rule is a consistency check, not a signature: it refuses plain `tar` of a folder, a
SHA256SUMS written with `sha256sum`, or one member swapped and its line rewritten; whoever
rewrites the manifest, SHA256SUMS and the files together can still make an archive pass.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from vggdeploy.bundle import MANIFEST_NAME, sha256_bytes
from vggdeploy.inspection import SUMS_NAME
from vggdeploy.records import Manifest


def normal_name(name: str) -> str | None:
    """The plain relative form of an archive/SHA256SUMS name, or None if it is unsafe.

    Refused: absolute paths, drive letters, `..`, backslashes, `~`, control characters, names
    that are not UTF-8, and overlong names. `./a` and `a//b` become `a` and `a/b`.
    """
    if not name or len(name) > 1024 or name.startswith(("/", "~")) or "\\" in name:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in name) or (len(name) > 1 and name[1] == ":"):
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 header
        return None
    path = PurePosixPath(name)
    if ".." in path.parts or any(len(p.encode()) > 255 for p in path.parts):
        return None
    text = path.as_posix()
    return None if text in ("", ".") else text


def sums_text(sums: dict[str, str]) -> bytes:
    """SHA256SUMS as `vggdeploy pack` writes it: `sha256sum` lines, sorted by name."""
    return "".join(f"{sums[k]}  {k}\n" for k in sorted(sums)).encode("utf-8")


def contents_digest(sums: dict[str, str]) -> str:
    """The digest `pack` records in the manifest (`packed.sums_sha256`): of the SHA256SUMS
    lines of every file but the manifest itself (whose own line cannot be inside it)."""
    return sha256_bytes(sums_text({k: v for k, v in sums.items() if k != MANIFEST_NAME}))


def parse_sums(data: bytes) -> dict[str, str]:
    """SHA256SUMS as {name: sha256}; raises ValueError naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{SUMS_NAME} is not UTF-8 text") from None
    sums: dict[str, str] = {}
    seen: set[str] = set()
    for number, line in enumerate(text.split("\n"), 1):
        if not line and number == text.count("\n") + 1:
            break  # the text after the final newline
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{SUMS_NAME} line {number} is not 'SHA256  NAME'")
        norm = normal_name(name)
        if norm is None:
            raise ValueError(f"{SUMS_NAME} line {number} names {name!r}, outside the bundle")
        if norm.casefold() in seen:
            raise ValueError(f"{SUMS_NAME} lists {name!r} twice")
        seen.add(norm.casefold())
        sums[norm] = digest
    return sums


def packed_by_us_problem(sums_bytes: bytes, sums: dict[str, str], manifest: Manifest) -> str | None:
    """Why an archive's SHA256SUMS (`sums_bytes`, parsed as `sums`) and manifest are not as
    `vggdeploy pack` wrote them, or None. The rule for archives not re-made by hand: SHA256SUMS is
    byte for byte what pack writes, lists exactly the manifest and the files it names, and the
    manifest records the digest of its other lines (`packed.sums_sha256`)."""
    if sums_bytes != sums_text(sums):
        return f"its {SUMS_NAME} is not in the form `vggdeploy pack` writes"
    packed = (manifest.model_extra or {}).get("packed")
    want = packed.get("sums_sha256") if isinstance(packed, dict) else None
    if not want:
        return f"its {MANIFEST_NAME} records no digest of {SUMS_NAME}"
    if contents_digest(sums) != want:
        return f"its {SUMS_NAME} differs from the one its {MANIFEST_NAME} was packed with"
    named = {r.path for r in manifest.artifacts.values()} | set(manifest.files) | {MANIFEST_NAME}
    extra = sorted(set(sums) - {normal_name(n) or n for n in named})
    if extra:
        return f"{SUMS_NAME} lists {extra[0]!r}, a file its manifest does not name"
    return None
