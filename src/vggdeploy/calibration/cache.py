"""The calibration cache: per-tensor histograms and ranges, tied to one model and one data set.

A JSON file holding each calibrated tensor's running min/max and sparse 2048-bin histogram,
with the fp32 model's sha256, a fingerprint of the calibration images (relative paths and
content hashes) and the settings that shape the histograms. Ranges for every method and target
are computed from the histograms, so changing `--method`, `--percentile` or `--target` reuses
the cache; a different model, image set or batch size does not match it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vggdeploy.bundle import atomic_write_json
from vggdeploy.calibration.calibrators import NUM_BINS, HistogramCollector
from vggdeploy.errors import InputError

log = logging.getLogger(__name__)

CACHE_FORMAT = "vggdeploy-calibration-cache"
CACHE_VERSION = 2
DEFAULT_CACHE_NAME = "calibration.cache.json"


def cache_key(
    *,
    model_sha256: str,
    data_sha256: str,
    samples: int,
    seed: int,
    batch_size: int,
    preprocessing: dict[str, Any],
    tensors: list[str],
) -> dict[str, Any]:
    """What a cache must match to be reused (histogram growth depends on the batch size)."""
    return {
        "model_sha256": model_sha256,
        "data_sha256": data_sha256,
        "settings": {
            "samples": samples,
            "seed": seed,
            "batch_size": batch_size,
            "num_bins": NUM_BINS,
            "preprocessing": preprocessing,
            "tensors": tensors,
        },
    }


def load_cache(
    path: Path, key: dict[str, Any], *, explicit: bool
) -> tuple[HistogramCollector, dict[str, Any]] | None:
    """(statistics, ranges computed so far) if `path` matches `key`; None if no usable cache.

    A cache the user named (`explicit`) that belongs to another model or data set is refused
    with `InputError`; the default cache inside the bundle is simply recomputed.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
        if data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
            raise ValueError("not a vggdeploy calibration cache of this version")
        stored_key = {k: data[k] for k in ("model_sha256", "data_sha256", "settings")}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        if not explicit:
            log.info("ignoring unreadable calibration cache %s (%s)", path, exc)
            return None
        raise InputError(
            f"calibration cache {path} cannot be read ({exc}): delete it or pass another --cache"
        ) from None
    mismatch = _mismatch(stored_key, key)
    if mismatch is None:
        try:
            return HistogramCollector.from_dict(data["tensors"]), dict(data.get("ranges") or {})
        except (KeyError, TypeError, ValueError) as exc:
            if not explicit:
                return None
            raise InputError(
                f"calibration cache {path} is damaged ({exc}): delete it or pass another --cache"
            ) from None
    if not explicit:
        log.info("calibration cache %s is for %s: recomputing it", path, mismatch)
        return None
    raise InputError(
        f"calibration cache {path} was made for {mismatch}: delete the file or pass a "
        "different --cache"
    )


def _mismatch(stored: dict[str, Any], key: dict[str, Any]) -> str | None:
    if stored["model_sha256"] != key["model_sha256"]:
        return (
            f"a different model (sha256 {str(stored['model_sha256'])[:12]}..., this bundle's "
            f"model.onnx is {key['model_sha256'][:12]}...)"
        )
    if stored["data_sha256"] != key["data_sha256"]:
        return "different calibration images (the files or their contents changed)"
    if stored["settings"] != key["settings"]:
        differ = sorted(
            k
            for k in set(stored["settings"]) | set(key["settings"])
            if stored["settings"].get(k) != key["settings"].get(k)
        )
        return f"other calibration settings ({', '.join(differ)} differ)"
    return None


def save_cache(
    path: Path,
    key: dict[str, Any],
    collector: HistogramCollector,
    ranges: dict[str, Any] | None = None,
    images: list[str] | None = None,
) -> None:
    """Write the cache atomically.

    `ranges` maps "method/target[/percentile]" to per-tensor ranges, for reading; only the
    histograms are reused.
    """
    atomic_write_json(
        path,
        {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            **key,
            "images": images or [],
            "ranges": ranges or {},
            "tensors": collector.to_dict(),
        },
    )
