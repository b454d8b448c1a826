"""`vggdeploy unpack` treats an archive as untrusted input.

Every hostile or damaged archive here is crafted with tarfile from a genuine `vggdeploy pack`
archive. Each case asserts the exit code, one `error:` line without a traceback, and that nothing
was left behind: not in the destination, not beside it, not outside the working folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from packaging_helpers import run_cli

from vggdeploy.packaging import pack_bundle
from vggdeploy.packaging.sums import contents_digest

Entry = tuple[str, bytes] | tarfile.TarInfo
BIG = 50 << 20  # a 50 MiB member of zeros: about 50 KiB once gzipped


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def genuine(tiny_bundle_ro: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Entry]:
    """The members of a real packed archive, in order: manifest.json, SHA256SUMS, model.onnx."""
    archive = tmp_path_factory.mktemp("packed") / "b.tar"
    pack_bundle(tiny_bundle_ro, archive)
    with tarfile.open(archive) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def write_tar(path: Path, entries: list[Entry], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            name, data = entry
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def rebuild(
    entries: list[Entry], manifest: dict | None = None, sums: dict[str, str] | None = None
) -> list[Entry]:
    """`entries` with a new manifest and SHA256SUMS, the sums listing the new manifest's sha."""
    files = {e[0]: e[1] for e in entries if not isinstance(e, tarfile.TarInfo)}
    listed = dict(sums) if sums is not None else parse(files["SHA256SUMS"])
    if manifest is None:
        try:
            manifest = json.loads(files["manifest.json"])
        except (ValueError, RecursionError):
            manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("packed"), dict):
        # forge what pack records, so the deeper checks are the ones tried (the re-made
        # archive rule has its own tests in test_archive_remade.py)
        manifest["packed"]["sums_sha256"] = contents_digest(listed)
    if manifest is not None:
        files["manifest.json"] = json.dumps(manifest).encode()
    listed["manifest.json"] = sha(files["manifest.json"])
    files["SHA256SUMS"] = "".join(f"{d}  {n}\n" for n, d in sorted(listed.items())).encode()
    return [e if isinstance(e, tarfile.TarInfo) else (e[0], files[e[0]]) for e in entries]


def parse(data: bytes) -> dict[str, str]:
    return {line[66:]: line[:64] for line in data.decode().splitlines()}


def manifest_of(entries: list[Entry]) -> dict:
    return json.loads(
        dict(e for e in entries if not isinstance(e, tarfile.TarInfo))["manifest.json"]
    )


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The folder that holds the archive and receives `out`; the test checks what is left."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def refused(archive: Path, capsys, *extra: str, code: int = 1) -> str:
    """Run unpack to WORK/out; assert one error line and nothing written anywhere."""
    work = archive.parent
    before = sorted(p.name for p in work.iterdir())
    got, out, err = run_cli(["unpack", str(archive), "-o", str(work / "out"), *extra], capsys)
    assert got == code, err
    assert "Traceback" not in err and "aborted" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert sorted(p.name for p in work.iterdir()) == before  # no out/, no .out.*.unpacking
    assert not any(work.parent.glob("evil*")) and not Path("/tmp/evil-vggdeploy").exists()
    return lines[0]


# -- the member list is checked against SHA256SUMS before anything is written -----------------


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_genuine_archive_unpacks(genuine: list[Entry], work: Path, capsys, mode: str) -> None:
    archive = write_tar(work / "b.tar.gz", genuine, mode)
    code, out, _ = run_cli(["unpack", str(archive), "-o", str(work / "out")], capsys)
    assert code == 0 and "every sha256 verified" in out
    assert sorted(p.name for p in (work / "out").iterdir()) == sorted(n for n, _ in genuine)


def test_an_archive_without_sha256sums(genuine: list[Entry], work: Path, capsys) -> None:
    archive = write_tar(work / "b.tar.gz", [e for e in genuine if e[0] != "SHA256SUMS"])
    assert "no SHA256SUMS" in refused(archive, capsys)


def test_an_unlisted_member(genuine: list[Entry], work: Path, capsys) -> None:
    archive = write_tar(work / "b.tar.gz", [*genuine, ("notes.txt", b"hello")])
    assert "'notes.txt' (5 bytes) is not listed in SHA256SUMS" in refused(archive, capsys)


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_big_unlisted_member_is_refused_before_any_write(
    genuine: list[Entry], work: Path, capsys, where: str
) -> None:
    big = ("big.bin", bytes(BIG))
    entries = [*genuine[:2], big, *genuine[2:]] if where == "before" else [*genuine, big]
    archive = write_tar(work / "b.tar.gz", entries)
    assert archive.stat().st_size < 1 << 20
    assert f"'big.bin' ({BIG} bytes) is not listed" in refused(archive, capsys)


def test_a_big_member_listed_but_not_an_artifact(genuine, work: Path, capsys) -> None:
    """SHA256SUMS may list small extras, never 50 MiB that the manifest does not account for."""
    sums = parse(genuine[1][1]) | {"big.bin": sha(bytes(BIG))}
    archive = write_tar(work / "b.tar.gz", [*rebuild(genuine, sums=sums), ("big.bin", bytes(BIG))])
    # since issue 18 (cause 13) SHA256SUMS may list only what the manifest names
    assert "'big.bin', a file its manifest does not name" in refused(archive, capsys)


def test_a_member_bigger_than_its_artifact_size(genuine, work: Path, capsys) -> None:
    """The manifest records each artifact's size: a 50 MiB member for a 1 KiB artifact is refused."""
    manifest = manifest_of(genuine)
    manifest["artifacts"]["onnx.fp32"]["size"] = 1024
    manifest["artifacts"]["onnx.fp32"]["sha256"] = sha(bytes(BIG))
    sums = parse(genuine[1][1]) | {"model.onnx": sha(bytes(BIG))}
    entries = [*rebuild(genuine[:2], manifest, sums), ("model.onnx", bytes(BIG))]
    archive = write_tar(work / "b.tar.gz", entries)
    assert f"model.onnx is {BIG} bytes in the archive but the manifest lists 1024" in refused(
        archive, capsys
    )


def test_a_manifest_size_that_lies_low(genuine, work: Path, capsys) -> None:
    manifest = manifest_of(genuine)
    manifest["artifacts"]["onnx.fp32"]["size"] -= 10
    archive = write_tar(work / "b.tar.gz", rebuild(genuine, manifest))
    assert "bytes in the archive but the manifest lists" in refused(archive, capsys)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("/tmp/evil-vggdeploy", "outside the bundle"),
        ("../evil.json", "outside the bundle"),
        ("a/../../evil.json", "outside the bundle"),
        ("C:/evil.json", "outside the bundle"),
        ("~/evil.json", "outside the bundle"),
        ("evil\nname", "is not 'SHA256  NAME'"),
    ],
)
def test_unsafe_names_listed_in_sha256sums(genuine, work: Path, capsys, name, says) -> None:
    entries = [*genuine, (name, b"x")]
    entries[1] = ("SHA256SUMS", genuine[1][1] + f"{sha(b'x')}  {name}\n".encode())
    archive = write_tar(work / "b.tar.gz", entries)
    assert says in refused(archive, capsys)


@pytest.mark.parametrize("name", ["/tmp/evil-vggdeploy", "../evil.json"])
def test_unsafe_member_names(genuine, work: Path, capsys, name: str) -> None:
    archive = write_tar(work / "b.tar.gz", [*genuine, (name, b"x")])
    assert "absolute path, '..' entry or unsafe name" in refused(archive, capsys)


@pytest.mark.parametrize(
    ("member", "says"),
    [
        (special("model.onnx", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link to '/etc/passwd'"),
        (special("model.onnx", tarfile.LNKTYPE, "/etc/passwd"), "hard link to '/etc/passwd'"),
        (special("model.onnx", tarfile.LNKTYPE, "manifest.json"), "hard link"),
        (special("model.onnx", tarfile.CHRTYPE), "device, FIFO"),
        (special("model.onnx", tarfile.BLKTYPE), "device, FIFO"),
        (special("model.onnx", tarfile.FIFOTYPE), "device, FIFO"),
        (special("sub", tarfile.DIRTYPE), "a folder entry"),
    ],
)
def test_links_devices_and_fifos(genuine, work: Path, capsys, member, says: str) -> None:
    archive = write_tar(work / "b.tar.gz", [*genuine[:2], member])
    assert says in refused(archive, capsys)


def test_a_link_as_the_first_member(work: Path, capsys) -> None:
    archive = write_tar(work / "b.tar.gz", [special("manifest.json", tarfile.SYMTYPE, "/etc")])
    assert "symbolic link" in refused(archive, capsys)


@pytest.mark.parametrize("twice", ["model.onnx", "Model.onnx", "manifest.json", "./model.onnx"])
def test_duplicate_members(genuine, work: Path, capsys, twice: str) -> None:
    data = dict(genuine)[twice.removeprefix("./").lower()]
    archive = write_tar(work / "b.tar.gz", [*genuine, (twice, data)])
    assert "appears twice" in refused(archive, capsys)


def test_duplicate_sha256sums_entries(genuine, work: Path, capsys) -> None:
    entries = list(genuine)
    line = next(x for x in genuine[1][1].splitlines(keepends=True) if x.endswith(b"model.onnx\n"))
    entries[1] = ("SHA256SUMS", genuine[1][1] + line)
    archive = write_tar(work / "b.tar.gz", entries)
    assert "lists 'model.onnx' twice" in refused(archive, capsys)


def test_a_member_under_another_file(genuine, work: Path, capsys) -> None:
    manifest = manifest_of(genuine)
    manifest["files"] = {"model.onnx/x": {"path": "model.onnx/x", "sha256": sha(b"x"), "size": 1}}
    sums = parse(genuine[1][1]) | {"model.onnx/x": sha(b"x")}
    entries = [*rebuild(genuine, manifest, sums), ("model.onnx/x", b"x")]
    assert "lies under another file" in refused(write_tar(work / "b.tar.gz", entries), capsys)


def pax_header(size: int) -> tarfile.TarInfo:
    """A member whose pax header alone is `size` bytes (zeros: tiny once gzipped)."""
    info = tarfile.TarInfo("model.onnx")
    info.pax_headers = {"comment": "0" * size}
    return info


@pytest.mark.parametrize("where", ["first", "after the manifest"])
def test_a_huge_tar_header_is_not_read_into_memory(genuine, work: Path, capsys, where) -> None:
    big = pax_header(BIG)
    entries = [big, *genuine] if where == "first" else [*genuine[:2], big]
    archive = write_tar(work / "b.tar.gz", entries)
    line = refused(archive, capsys)
    assert "more bytes than its files account for" in line or "a tar header of" in line


def test_a_chain_of_pax_headers(genuine, work: Path, capsys) -> None:
    archive = work / "b.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for _ in range(5000):
            info = tarfile.TarInfo("x")
            info.type, record = tarfile.XHDTYPE, b"19 comment=aaaaaaa\n"
            info.size = len(record)
            tar.addfile(info, io.BytesIO(record))
    assert "truncated or corrupt" in refused(archive, capsys)


# -- the manifest inside the archive is validated like any bundle's -----------------------------


def with_manifest(genuine: list[Entry], change) -> list[Entry]:
    manifest = manifest_of(genuine)
    change(manifest)
    return rebuild(genuine, manifest)


def test_labels_outside_the_bundle(genuine, work: Path, capsys) -> None:
    entries = with_manifest(genuine, lambda m: m.update(labels="/etc/passwd"))
    line = refused(write_tar(work / "b.tar.gz", entries), capsys)
    assert "field labels" in line and "leaves the bundle" in line


def test_labels_not_in_the_archive(genuine, work: Path, capsys) -> None:
    listed = {"labels.txt": {"path": "labels.txt", "sha256": sha(b"a\n"), "size": 2}}
    entries = with_manifest(genuine, lambda m: m.update(labels="labels.txt", files=listed))
    assert "does not list labels.txt" in refused(write_tar(work / "b.tar.gz", entries), capsys)


def test_labels_that_are_not_text(genuine, work: Path, capsys) -> None:
    manifest = manifest_of(genuine)
    manifest["labels"] = "labels.txt"
    manifest["files"] = {
        "labels.txt": {"path": "labels.txt", "sha256": sha(b"\xff\xfe"), "size": 2}
    }
    sums = parse(genuine[1][1]) | {"labels.txt": sha(b"\xff\xfe")}
    entries = [*rebuild(genuine, manifest, sums), ("labels.txt", b"\xff\xfe")]
    assert "UTF-8" in refused(write_tar(work / "b.tar.gz", entries), capsys)


def test_an_artifact_path_leaving_the_bundle_with_a_matching_sha(genuine, work, capsys) -> None:
    model = dict(genuine)["model.onnx"]

    def escape(m: dict) -> None:
        m["artifacts"]["onnx.fp32"]["path"] = "../../x.onnx"

    manifest = manifest_of(with_manifest(genuine, escape))
    # SHA256SUMS consistent with the manifest: refused for its '..' line ...
    sums = {"../../x.onnx": sha(model)}
    entries = [*rebuild(genuine[:2], manifest, sums), ("../../x.onnx", model)]
    assert "outside the bundle" in refused(write_tar(work / "a.tar.gz", entries), capsys)
    # ... and with SHA256SUMS as packed, by the manifest's own validation
    entries = [*rebuild(genuine[:2], manifest), ("model.onnx", model)]
    line = refused(write_tar(work / "b.tar.gz", entries), capsys)
    assert "artifacts.onnx.fp32.path" in line and "leaves the bundle" in line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (lambda t: t.replace('"image_size": 32', '"image_size": NaN', 1), "not valid JSON"),
        (lambda t: t.replace('"seed": 0', '"seed": Infinity', 1), "not valid JSON"),
        (lambda t: "[" * 100000 + "]" * 100000, "nests objects or lists"),
        (lambda t: t[: len(t) // 2], "not valid JSON"),
        (lambda t: '{"schema_version": 99}', "schema version 99"),
        (lambda t: "[]", "must be a JSON object"),
    ],
)
def test_a_manifest_that_fails_validation(genuine, work: Path, capsys, text, says) -> None:
    entries = list(genuine)
    data = text(genuine[0][1].decode()).encode()
    entries[0] = ("manifest.json", data)
    entries = rebuild(entries)
    assert says in refused(write_tar(work / "b.tar.gz", entries), capsys)


def test_a_manifest_not_matching_sha256sums(genuine, work: Path, capsys) -> None:
    entries = list(genuine)
    entries[0] = ("manifest.json", genuine[0][1].replace(b'"seed": 0', b'"seed": 1'))
    line = refused(write_tar(work / "b.tar.gz", entries), capsys)
    assert "truncated or corrupt" in line and "manifest.json does not match" in line


# -- damaged archives: one line, never a blank line and "aborted" -----------------------------


def test_a_flipped_byte_in_an_artifact(genuine, work: Path, capsys) -> None:
    entries = list(genuine)
    model = bytearray(dict(genuine)["model.onnx"])
    model[len(model) // 2] ^= 0xFF
    entries[2] = ("model.onnx", bytes(model))
    line = refused(write_tar(work / "b.tar.gz", entries), capsys)
    assert "model.onnx: sha256 differs from SHA256SUMS" in line and "re-copy it" in line


@pytest.mark.parametrize("suffix", ["tar.gz", "tar"])
@pytest.mark.parametrize("cut", [0, 1, 10, 300, 700, 1500, 0.3, 0.6, 0.9, -600])
def test_truncated_archives(genuine, work: Path, capsys, suffix: str, cut) -> None:
    whole = work / f"whole.{suffix}"
    write_tar(whole, genuine, "w:gz" if suffix == "tar.gz" else "w")
    data = whole.read_bytes()
    whole.unlink()
    end = len(data.rstrip(b"\0"))  # a plain tar ends in zero padding: cut what precedes it
    at = int(end * cut) if isinstance(cut, float) else cut % end
    archive = work / f"b.{suffix}"
    archive.write_bytes(data[:at])
    line = refused(archive, capsys)
    assert f"archive {archive} is truncated or corrupt (" in line and line.endswith("re-copy it")


@pytest.mark.parametrize(
    "content",
    [
        b"hello\n",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)) * 8,  # garbage gzip
        b"BZh91AY&SY" + b"\x00" * 100,  # garbage bzip2
        b"\xfd7zXZ\x00" + b"\x01" * 100,  # garbage xz
        os.urandom(4096),
        bytes(10240),  # an empty tar: end-of-archive blocks only
    ],
    ids=["text", "gzip", "bzip2", "xz", "random", "empty-tar"],
)
def test_files_that_are_not_archives(work: Path, capsys, content: bytes) -> None:
    archive = work / "b.tar.gz"
    archive.write_bytes(content)
    line = refused(archive, capsys)
    assert "truncated or corrupt" in line or "refusing to unpack" in line


def test_garbage_inside_a_valid_gzip_stream(genuine, work: Path, capsys) -> None:
    import gzip

    raw = bytearray(write_tar(work / "x.tar", genuine, "w").read_bytes())
    (work / "x.tar").unlink()
    raw[600:700] = os.urandom(100)  # the manifest's bytes: header and sums no longer agree
    archive = work / "b.tar.gz"
    archive.write_bytes(gzip.compress(bytes(raw)))
    assert "truncated or corrupt" in refused(archive, capsys)


# -- the destination: temp folder, --force, modes ----------------------------------------------


def test_force_refuses_a_folder_that_is_not_a_bundle(genuine, work: Path, capsys) -> None:
    archive = write_tar(work / "b.tar.gz", genuine)
    (work / "out").mkdir()
    (work / "out" / "thesis.tex").write_text("years of work")
    line = refused(archive, capsys, "--force")
    assert "not a vggdeploy bundle (no manifest.json)" in line
    assert (work / "out" / "thesis.tex").read_text() == "years of work"


def test_a_failed_force_unpack_keeps_the_old_bundle(genuine, work: Path, capsys) -> None:
    good = write_tar(work / "good.tar.gz", genuine)
    run_cli(["unpack", str(good), "-o", str(work / "out")], capsys)
    before = {p.name: p.read_bytes() for p in (work / "out").iterdir()}
    entries = list(genuine)
    entries[2] = ("model.onnx", bytes(len(genuine[2][1])))  # right size, wrong bytes
    bad = write_tar(work / "bad.tar.gz", entries)
    assert "sha256 differs" in refused(bad, capsys, "--force")
    assert {p.name: p.read_bytes() for p in (work / "out").iterdir()} == before
    # and a good archive replaces it, leaving nothing aside
    (work / "out" / "stale.onnx").write_bytes(b"old")
    code, _, _ = run_cli(["unpack", str(good), "-o", str(work / "out"), "--force"], capsys)
    assert code == 0 and not (work / "out" / "stale.onnx").exists()
    assert sorted(p.name for p in work.iterdir()) == ["bad.tar.gz", "good.tar.gz", "out"]


def test_ctrl_c_leaves_nothing_and_the_old_bundle(genuine, work: Path, capsys, monkeypatch) -> None:
    archive = write_tar(work / "b.tar.gz", genuine)
    run_cli(["unpack", str(archive), "-o", str(work / "out")], capsys)
    before = {p.name: p.read_bytes() for p in (work / "out").iterdir()}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("vggdeploy.packaging.archive.check_unpacked", interrupt)
    code, _, err = run_cli(["unpack", str(archive), "-o", str(work / "out"), "--force"], capsys)
    assert code == 130 and "Traceback" not in err
    assert sorted(p.name for p in work.iterdir()) == ["b.tar.gz", "out"]
    assert {p.name: p.read_bytes() for p in (work / "out").iterdir()} == before


@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_destinations_that_are_not_folders(genuine, work: Path, capsys, kind: str) -> None:
    archive = write_tar(work / "b.tar.gz", genuine)
    target = work.parent / "elsewhere"
    target.mkdir()
    if kind == "symlink":
        (work / "out").symlink_to(target)
    else:
        (work / "out").write_text("mine")
    if kind == "symlink":
        assert "is a symbolic link" in refused(archive, capsys, "--force")
    else:  # click's own check of -o: a usage error, one line too
        assert "is a file" in refused(archive, capsys, "--force", code=2)
        assert (work / "out").read_text() == "mine"
    assert list(target.iterdir()) == []


def test_not_enough_space(genuine, work: Path, capsys, monkeypatch) -> None:
    import shutil

    archive = write_tar(work / "b.tar.gz", genuine)
    usage = shutil.disk_usage(work)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    assert "free some space" in refused(archive, capsys)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_the_unpacked_folder_follows_the_umask(genuine, work: Path, capsys, umask: int) -> None:
    archive = write_tar(work / "b.tar.gz", genuine)
    old = os.umask(umask)
    try:
        code, _, _ = run_cli(["unpack", str(archive), "-o", str(work / "out")], capsys)
    finally:
        os.umask(old)
    assert code == 0
    assert (work / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    for f in (work / "out").iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
