"""`vggdeploy pack`/`unpack`: round trips, reproducibility, refusals, and byte progress."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from packaging_helpers import add_engine, add_onnx_copy, run_cli

from vggdeploy.bundle import Bundle
from vggdeploy.cli import main
from vggdeploy.errors import BundleError, InputError
from vggdeploy.packaging import pack_bundle, unpack_bundle
from vggdeploy.records import WeightsRecord


def test_pack_unpack_round_trip(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(tiny_bundle)
    # A checkpoint path of this machine must not travel with the bundle.
    with bundle.update() as manifest:
        manifest.weights = WeightsRecord(
            source="file", path="/home/me/ckpt/vgg.pth", sha256="ab" * 32
        )
    add_engine(tiny_bundle, "engine.fp16", "8.6")

    archive = tmp_path / "b.tar.gz"
    result = pack_bundle(tiny_bundle, archive)
    assert "weights.path" in result.paths_made_relative
    again = pack_bundle(tiny_bundle, tmp_path / "again.tar.gz")
    assert again.sha256 == result.sha256  # reproducible archive
    from vggdeploy.bundle import sha256_file

    assert result.sha256 == sha256_file(archive) and result.size == archive.stat().st_size

    out = unpack_bundle(archive, tmp_path / "unpacked")
    assert set(out.artifacts) == {"onnx.fp32", "engine.fp16"}
    assert out.manifest.weights.path == "vgg.pth"
    assert "/home/me" not in (tmp_path / "unpacked" / "manifest.json").read_text()
    for key in out.artifacts:
        out.artifact_path(key, verify=True)
    assert (tmp_path / "unpacked" / "SHA256SUMS").is_file()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert all(m.mtime == members[0].mtime and m.uid == 0 for m in members)
    assert ".manifest.lock" not in {m.name for m in members}


def test_pack_and_unpack_report_byte_progress(tiny_bundle: Path, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    result = pack_bundle(tiny_bundle, tmp_path / "b.tar.gz", progress=lambda *c: calls.append(c))
    size = (tiny_bundle / "model.onnx").stat().st_size
    assert calls[0][1] == 0 and calls[-1][1:] == (size, size) == (result.content_bytes,) * 2
    assert all(0 <= done <= total for _, done, total in calls)
    assert any(what == "packing model.onnx" for what, _, _ in calls)

    calls.clear()
    unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "u", progress=lambda *c: calls.append(c))
    whats = [what for what, _, _ in calls]
    assert "unpacked" in whats and "verified" in whats
    archive_size = (tmp_path / "b.tar.gz").stat().st_size
    assert (archive_size, archive_size) in {(d, t) for w, d, t in calls if w == "unpacked"}
    assert all(0 <= done <= total for _, done, total in calls)


def test_pack_without_engines(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    add_engine(tiny_bundle, "engine.fp16", "8.6")
    code, out, _ = run_cli(
        ["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz"), "--no-engines"], capsys
    )
    assert code == 0 and "left out: engine.fp16" in out
    assert "MiB" in out or "KiB" in out  # sizes in the one unit family (report.tables.mib)
    assert " MB" not in out
    code, out, _ = run_cli(
        ["unpack", str(tmp_path / "b.tar.gz"), "-o", str(tmp_path / "u")], capsys
    )
    # The bundle has model.onnx only: build can make an fp32 engine from it, nothing else.
    assert code == 0 and f"vggdeploy build {tmp_path / 'u'} --precision fp32\n" in out + "\n"
    assert "fp16" not in out
    manifest = json.loads((tmp_path / "u" / "manifest.json").read_text())
    assert list(manifest["artifacts"]) == ["onnx.fp32"]
    assert manifest["packed"]["excluded_artifacts"] == ["engine.fp16"]


def test_unpack_suggests_only_the_builds_the_bundle_can_make(
    tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    add_onnx_copy(tiny_bundle, "int8")
    run_cli(["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz")], capsys)
    code, out, _ = run_cli(
        ["unpack", str(tmp_path / "b.tar.gz"), "-o", str(tmp_path / "u")], capsys
    )
    assert code == 0 and "--precision fp32|int8" in out and "fp16" not in out


def test_pack_refuses_tampered_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    with open(tiny_bundle / "model.onnx", "ab") as f:
        f.write(b"junk")
    with pytest.raises(BundleError, match="does not match its sha256"):
        pack_bundle(tiny_bundle, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()
    assert list(tmp_path.glob(".*partial")) == []


def test_pack_refuses_an_artifact_linked_out_of_the_bundle(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.onnx"
    (tiny_bundle / "model.onnx").rename(outside)
    (tiny_bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle"):
        pack_bundle(tiny_bundle, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_unpack_detects_corrupted_payload(tiny_bundle: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "b.tar"
    pack_bundle(tiny_bundle, archive)
    data = bytearray(archive.read_bytes())
    at = data.find(b"onnx") + 20000  # inside model.onnx's bytes, well past the headers
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        unpack_bundle(archive, work / "u")
    assert [p.name for p in work.iterdir()] == ["b.tar"]  # staging folder removed


def evil_archive(path: Path, kind: str) -> None:
    with tarfile.open(path, "w:gz") as tar:
        payload = b'{"schema_version": 1}'
        if kind == "symlink":
            info = tarfile.TarInfo("model.onnx")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
            return
        if kind == "hardlink":
            info = tarfile.TarInfo("model.onnx")
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
            tar.addfile(info)
            return
        if kind == "device":
            info = tarfile.TarInfo("model.onnx")
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
            return
        name = {"absolute": "/tmp/evil-vggdeploy.json", "dotdot": "../evil.json"}[kind]
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_unpack_refuses_malicious_archives(tmp_path: Path, kind: str, capsys) -> None:
    archive = tmp_path / "evil.tar.gz"
    evil_archive(archive, kind)
    code, _, err = run_cli(["unpack", str(archive), "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and err.startswith("error: refusing to unpack")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "evil.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_unpack_refuses_non_empty_destination(tiny_bundle: Path, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    pack_bundle(tiny_bundle, archive)
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        unpack_bundle(archive, tmp_path / "u")
    assert (tmp_path / "u" / "keep.txt").read_text() == "mine"
    # --force replaces a bundle only: a folder without manifest.json is never deleted
    with pytest.raises(InputError, match="not a vggdeploy bundle"):
        unpack_bundle(archive, tmp_path / "u", force=True)
    assert (tmp_path / "u" / "keep.txt").read_text() == "mine"
    unpack_bundle(archive, tmp_path / "b")
    (tmp_path / "b" / "stale.txt").write_text("old")
    unpack_bundle(archive, tmp_path / "b", force=True)
    assert not (tmp_path / "b" / "stale.txt").exists()
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_unpack_of_a_file_that_is_not_an_archive_is_one_line(tmp_path: Path, capsys) -> None:
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["unpack", str(not_tar), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "is truncated or corrupt" in err and "re-copy it" in err
    assert not (tmp_path / "out").exists()


# -- pack: containment, the output path, and no partial archive --------------------------------


def one_line_error(code: int, err: str, want: int = 1) -> str:
    assert code == want and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("inside", ["b.tar.gz", "sub/b.tar.gz", "./model.tar"])
def test_pack_refuses_an_output_inside_the_bundle(
    tiny_bundle: Path, capsys, inside: str, monkeypatch
) -> None:
    before = sorted(p.name for p in tiny_bundle.rglob("*"))
    monkeypatch.chdir(tiny_bundle.parent)
    out = f"{tiny_bundle.name}/{inside}"
    line = one_line_error(*run_cli(["pack", str(tiny_bundle), "-o", out], capsys)[::2])
    assert "is inside the bundle" in line
    assert sorted(p.name for p in tiny_bundle.rglob("*")) == before


def test_pack_interrupted_leaves_no_archive(tiny_bundle: Path, tmp_path: Path, capsys, monkeypatch):
    def interrupt(self, n=-1):
        raise KeyboardInterrupt

    monkeypatch.setattr("vggdeploy.packaging.archive._HashingReader.read", interrupt)
    code, _, err = run_cli(["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz")], capsys)
    assert code == 130 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_pack_on_a_full_disk_leaves_no_archive(
    tiny_bundle: Path, tmp_path: Path, capsys, monkeypatch
):
    import errno

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vggdeploy.packaging.archive._HashingWriter.write", full)
    code, _, err = run_cli(["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz")], capsys)
    assert "cannot write" in one_line_error(code, err) and "free some space" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_pack_refuses_labels_linked_out_of_the_bundle(
    tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    (tiny_bundle / "labels.txt").symlink_to(secret)
    with Bundle.load(tiny_bundle).update() as manifest:
        manifest.labels = "labels.txt"
    code, _, err = run_cli(["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz")], capsys)
    assert "outside the bundle" in one_line_error(code, err)
    assert not (tmp_path / "b.tar.gz").exists()


def test_pack_refuses_huge_labels(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    with open(tiny_bundle / "labels.txt", "wb") as f:
        f.truncate(100 << 20)  # sparse: no disk used
    from vggdeploy.records import FileRecord

    with Bundle.load(tiny_bundle).update() as manifest:
        manifest.labels = "labels.txt"
        # the manifest even vouches for the size: the limit still holds, before any read
        manifest.files["labels.txt"] = FileRecord(
            path="labels.txt", sha256="0" * 64, size=100 << 20
        )
    code, _, err = run_cli(["pack", str(tiny_bundle), "-o", str(tmp_path / "b.tar.gz")], capsys)
    assert "over the 8 MiB" in one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_pack_and_unpack_carry_labels(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / "labels.txt").write_text("".join(f"class {i}\n" for i in range(10)))
    with Bundle.load(tiny_bundle).update() as manifest:
        manifest.labels = "labels.txt"
    Bundle.load(tiny_bundle).add_file("labels.txt")
    pack_bundle(tiny_bundle, tmp_path / "b.tar.gz")
    out = unpack_bundle(tmp_path / "b.tar.gz", tmp_path / "u")
    assert out.labels() == [f"class {i}" for i in range(10)]
