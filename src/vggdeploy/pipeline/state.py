"""`pipeline.json`: per stage, the digest of its inputs and what it produced.

A stage whose recorded inputs digest matches, and whose recorded outputs (bundle artifacts by
sha256, files under OUT by sha256) are still intact, is "up to date" and not run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggdeploy.bundle import Bundle, atomic_write_json, sha256_file
from vggdeploy.errors import InputError, VggDeployError

log = logging.getLogger(__name__)

STATE_NAME = "pipeline.json"
LOCK_NAME = ".pipeline.lock"
STATE_SCHEMA = "vggdeploy.pipeline/1"
BUNDLE_DIR = "bundle"
STAGES = (
    "export",
    "validate-export",
    "convert-fp16",
    "calibrate-int8",
    "build",
    "validate",
    "evaluate",
    "bench",
)


def digest(obj: Any) -> str:
    """sha256 of `obj` as canonical JSON: the identity of a stage's inputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def host_key(*, gpu: bool = False) -> dict[str, Any]:
    """What makes timings (and, with `gpu`, engines) specific to this machine."""
    from vggdeploy import host

    key: dict[str, Any] = {"node": platform.node(), "cpu": host.cpu().to_dict()}
    if gpu:
        probe = host.probe()
        key["tensorrt"] = probe.tensorrt
        key["gpus"] = [[g.name, g.compute_capability] for g in probe.gpus]
    return key


class State:
    """`pipeline.json`: per stage, its input digest, what it produced, and how it went."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, out: Path, *, force: bool = False) -> State:
        """OUT's `pipeline.json`, or a fresh state when there is none.

        The file is untrusted: strict JSON (no NaN), an object with this schema, and every stage
        record of the right types, its `files` relative paths inside OUT. Anything else is one
        `InputError` line naming the file and the fix; with `force` (every stage runs again
        anyway) a damaged file is replaced by a fresh state instead, with a warning.
        """
        path = out / STATE_NAME
        fresh: dict[str, Any] = {"schema": STATE_SCHEMA, "stages": {}}
        if not path.exists():
            return cls(path, fresh)
        try:
            data = _read_state(path)
        except InputError as exc:
            if not force:
                raise
            log.warning("warning: %s: starting afresh (--force)", exc)
            return cls(path, fresh)
        return cls(path, data)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def up_to_date(self, name: str, inputs_sha256: str, bundle_root: Path) -> dict[str, Any] | None:
        """The record of stage `name` if it finished with these inputs and its outputs are intact."""
        previous = self.stages.get(name)
        if (
            previous
            and previous.get("status") == "done"
            and previous.get("inputs_sha256") == inputs_sha256
            and outputs_intact(bundle_root, previous.get("outputs", {}), previous.get("files", {}))
        ):
            return previous
        return None

    def why_again(self, name: str, inputs: dict[str, Any], bundle_root: Path) -> str | None:
        """Why stage `name`, done before, runs again: which of its inputs changed, each named as
        a file (an artifact or the images, by sha256), the machine, or a setting; or that its
        outputs changed. None when it did not finish before (nothing to compare with)."""
        previous = self.stages.get(name)
        if not previous or previous.get("status") != "done":
            return None
        before = previous.get("inputs") if isinstance(previous.get("inputs"), dict) else {}
        changed = sorted(k for k in set(before) | set(inputs) if before.get(k) != inputs.get(k))
        if changed:
            return "changed since the last run: " + ", ".join(
                f"{k} ({_input_kind(k)})" for k in changed
            )
        if not outputs_intact(bundle_root, previous.get("outputs", {}), previous.get("files", {})):
            return "what it made last time changed or is missing"
        return None


#: what each stage input that is not a setting stands for (artifact keys such as `onnx.fp32`
#: are file contents too)
INPUT_KINDS = {
    "artifacts": "file contents",
    "images": "image files",
    "photographs": "image files",
    "weights": "the weights: file or seed",
    "host": "this machine",
}


def _input_kind(key: str) -> str:
    return INPUT_KINDS.get(key) or ("file contents" if "." in key else "setting")


@dataclass
class StageRun:
    """One stage in this run: what it did, for the report."""

    name: str
    status: str  # "done" | "up to date" | "skipped" | "failed"
    seconds: float = 0.0
    detail: str = ""
    reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return self.detail if self.status in ("done", "up to date") else (self.reason or "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def outputs_intact(bundle_root: Path, outputs: dict[str, str], files: dict[str, str]) -> bool:
    """Every artifact a stage recorded is still in the manifest with the same sha256, and every
    file it wrote (relative to OUT) still exists with the same sha256."""
    if outputs:
        try:
            bundle = Bundle.load(bundle_root)
        except VggDeployError:
            return False
        for key, sha in outputs.items():
            record = bundle.artifacts.get(key)
            if record is None or record.sha256 != sha or not bundle.has_artifact(key):
                return False
            if sha256_file(bundle.resolve(record.path)) != sha:
                return False
    out = bundle_root.parent
    return all(
        (out / rel).is_file() and sha256_file(out / rel) == sha for rel, sha in files.items()
    )


# -- reading pipeline.json (untrusted) -------------------------------------------------------

#: A real pipeline.json is a few tens of kilobytes.
MAX_STATE_BYTES = 16 << 20
_STR_FIELDS = ("status", "inputs_sha256", "detail", "reason")
_DICT_FIELDS = ("outputs", "files", "result")


def _damaged(path: Path, why: str) -> InputError:
    return InputError(f"{path} is damaged ({why}): delete it or run with --force")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_state(path: Path) -> dict[str, Any]:
    """`pipeline.json` parsed and checked; any problem is one `InputError` line."""
    from vggdeploy.records import check_relative

    if not path.is_file():
        raise _damaged(path, "not a regular file")
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise _damaged(path, f"larger than {MAX_STATE_BYTES >> 20} MB")
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(
            f"cannot read {path} ({exc.strerror or exc}): fix its permissions, or delete it or "
            "run with --force"
        ) from None
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    except RecursionError:
        raise _damaged(path, "nested too deeply") from None
    except ValueError as exc:
        raise _damaged(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _damaged(path, f"a JSON {type(data).__name__}, not an object")
    if data.get("schema") != STATE_SCHEMA:
        raise _damaged(
            path, f"schema {data.get('schema')!r}, this vggdeploy reads {STATE_SCHEMA!r}"
        )
    stages = data.get("stages")
    if not isinstance(stages, dict):
        raise _damaged(path, "field stages is missing or not an object")
    for name, record in stages.items():
        where = f"stages.{name}"
        if name not in STAGES:
            raise _damaged(path, f"unknown stage {name!r}")
        if not isinstance(record, dict):
            raise _damaged(path, f"{where} is not an object")
        for name_ in _STR_FIELDS:
            if name_ in record and not isinstance(record[name_], (str, type(None))):
                raise _damaged(path, f"{where}.{name_} is not a string")
        for name_ in _DICT_FIELDS:
            if name_ in record and not isinstance(record[name_], dict):
                raise _damaged(path, f"{where}.{name_} is not an object")
        seconds = record.get("seconds", 0.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise _damaged(path, f"{where}.seconds is not a number")
        if not math.isfinite(seconds) or seconds < 0:
            raise _damaged(path, f"{where}.seconds is {seconds}")
        for name_ in ("outputs", "files"):
            for key, sha in record.get(name_, {}).items():
                if not isinstance(sha, str):
                    raise _damaged(path, f"{where}.{name_}.{key} is not a sha256 string")
        for rel in record.get("files", {}):
            try:
                check_relative(rel, f"{where}.files")
            except ValueError:
                raise _damaged(
                    path, f"{where}.files names {rel!r}, which is not inside OUT"
                ) from None
    return data


@contextmanager
def pipeline_lock(out: Path) -> Iterator[None]:
    """Hold `OUT/.pipeline.lock` (flock) for one pipeline run.

    A second pipeline on the same OUT is refused at once with one line rather than left
    waiting: it would redo or overwrite the same stages, and a wait of unknown length
    (a full run takes minutes to hours) looks like a hang. Where flock does not exist (Windows)
    no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(
            f"cannot create {lock_path} ({exc.strerror or exc}): choose a writable --out"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another vggdeploy pipeline is running on {out} (it holds {lock_path}): wait "
                "for it to finish, or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def prepare_out(out: Path) -> None:
    """Create OUT, or accept it if it holds an earlier pipeline run; refuse any other folder."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder: choose another --out")
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):
        known = (out / STATE_NAME).is_file() or (out / BUNDLE_DIR / "manifest.json").is_file()
        if not known:
            raise InputError(
                f"--out {out} is not empty and holds no earlier pipeline run: choose "
                "another --out (a pipeline folder is resumed, any other folder is left alone)"
            )
    out.mkdir(parents=True, exist_ok=True)
