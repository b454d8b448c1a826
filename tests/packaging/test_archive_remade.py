"""Issue 18, cause 13: an archive re-made by hand (plain `tar`, no SHA256SUMS, or a SHA256SUMS
written by hand) is refused. The rule: SHA256SUMS is byte for byte what `pack` writes, lists
exactly the manifest and the files it names, and the manifest's `packed.sums_sha256` is the
digest of its other lines. (A consistency rule, not a signature: see docs/ship.md, `vggdeploy unpack`.)"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy.bundle import Bundle
from vggdeploy.errors import BundleError
from vggdeploy.packaging.archive import pack_bundle, unpack_bundle


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def packed(tiny_bundle_ro: Path, tmp_path_factory) -> dict[str, bytes]:
    """The members of a genuine archive of a bundle with labels, by name, in archive order."""
    root = tmp_path_factory.mktemp("src") / "b"
    shutil.copytree(tiny_bundle_ro, root)
    Bundle.load(root).write_labels([f"class {i}" for i in range(10)])
    archive = root.parent / "b.tar"
    pack_bundle(root, archive)
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _hand_sums(members: dict[str, bytes]) -> bytes:
    """What `sha256sum * > SHA256SUMS` writes (sorted names, two spaces)."""
    return "".join(
        f"{sha(d)}  {n}\n" for n, d in sorted(members.items()) if n != "SHA256SUMS"
    ).encode()


def _refused(archive: Path, tmp_path: Path) -> str:
    with pytest.raises(BundleError) as exc:
        unpack_bundle(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_the_genuine_archive_unpacks(packed, tmp_path: Path) -> None:
    assert unpack_bundle(_tar(tmp_path / "a.tar.gz", packed), tmp_path / "out").labels()


def test_plain_tar_of_a_bundle_folder_is_refused(tiny_bundle_ro: Path, tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar program on this machine")
    archive = tmp_path / "plain.tar.gz"
    files = sorted(p.name for p in tiny_bundle_ro.iterdir() if not p.name.startswith("."))
    subprocess.run(["tar", "-czf", archive, "-C", tiny_bundle_ro, *files], check=True)
    assert "SHA256SUMS" in _refused(archive, tmp_path)


def test_a_hand_written_sha256sums_on_an_unpacked_bundle_is_refused(
    tiny_bundle_ro: Path, tmp_path: Path
) -> None:
    """The bundle folder's own files, with a SHA256SUMS as `sha256sum` writes it, in pack's
    order: every line is right, but no vggdeploy pack recorded it."""
    members = {"manifest.json": (tiny_bundle_ro / "manifest.json").read_bytes()}
    members["model.onnx"] = (tiny_bundle_ro / "model.onnx").read_bytes()
    archive = _tar(
        tmp_path / "h.tar.gz",
        {"manifest.json": members["manifest.json"], "SHA256SUMS": _hand_sums(members), **members},
    )
    assert "records no digest of SHA256SUMS" in _refused(archive, tmp_path)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    target=st.sampled_from(["labels.txt", "model.onnx"]),
    new=st.binary(min_size=1, max_size=64),
    fix_manifest=st.booleans(),
)
def test_an_edited_member_with_rewritten_sums_is_refused(
    packed, tmp_path_factory, target: str, new: bytes, fix_manifest: bool
) -> None:
    """Replace one file, rewrite SHA256SUMS by hand (and, if asked, the manifest's record of
    the file too): the manifest's digest of SHA256SUMS no longer matches."""
    work = tmp_path_factory.mktemp("edit")
    members = dict(packed)
    members[target] = new
    manifest = json.loads(members["manifest.json"])
    if fix_manifest:
        record = manifest["files"].get(target) or manifest["artifacts"]["onnx.fp32"]
        record.update(sha256=sha(new), size=len(new))
        members["manifest.json"] = json.dumps(manifest, indent=2).encode() + b"\n"
    members["SHA256SUMS"] = _hand_sums(members)
    with pytest.raises(BundleError) as exc:
        unpack_bundle(_tar(work / "e.tar.gz", members), work / "out")
    message = str(exc.value)
    assert "\n" not in message and not (work / "out").exists()
    assert "packed with" in message or "sha256" in message


def test_sha256sums_not_in_packs_form_is_refused(packed, tmp_path: Path) -> None:
    members = dict(packed)
    lines = members["SHA256SUMS"].decode().splitlines()
    members["SHA256SUMS"] = ("\n".join(reversed(lines)) + "\n").encode()  # same lines, unsorted
    assert "not in the form `vggdeploy pack` writes" in _refused(
        _tar(tmp_path / "u.tar.gz", members), tmp_path
    )
