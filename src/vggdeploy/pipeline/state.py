"""`pipeline.json`: per stage, the digest of its inputs and what it produced.

A stage whose recorded inputs digest matches, and whose recorded outputs (bundle artifacts by
sha256, files under OUT by sha256) are still intact, is "up to date" and not run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggdeploy.bundle import Bundle, atomic_write_json, sha256_file
from vggdeploy.errors import InputError, VggDeployError

log = logging.getLogger(__name__)

STATE_NAME = "pipeline.json"
STATE_SCHEMA = "vggdeploy.pipeline/1"
BUNDLE_DIR = "bundle"
STAGES = (
    "export",
    "validate-export",
    "convert-fp16",
    "calibrate-int8",
    "build",
    "validate",
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
    def load(cls, out: Path) -> State:
        path = out / STATE_NAME
        data: dict[str, Any] = {"schema": STATE_SCHEMA, "stages": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text("utf-8"))
                if loaded.get("schema") == STATE_SCHEMA:
                    data = loaded
            except (OSError, ValueError):
                log.warning("ignoring unreadable %s: every stage runs again", path)
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


def prepare_out(out: Path) -> None:
    """Create OUT, or accept it if it holds an earlier pipeline run; refuse any other folder."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()):
        known = (out / STATE_NAME).is_file() or (out / BUNDLE_DIR / "manifest.json").is_file()
        if not known:
            raise InputError(
                f"--out {out} is not empty and holds no earlier pipeline run: choose "
                "another --out (a pipeline folder is resumed, any other folder is left alone)"
            )
    out.mkdir(parents=True, exist_ok=True)
