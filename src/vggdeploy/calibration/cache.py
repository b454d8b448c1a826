"""The calibration cache: per-tensor histograms and ranges, tied to one model and one data set.

A JSON file holding each calibrated tensor's running min/max and sparse 2048-bin histogram,
with the fp32 model's sha256, a fingerprint of the calibration images (relative paths and
content hashes) and the settings that shape the histograms. Ranges for every method are
computed from the histograms, so changing `--method` or `--percentile` reuses the cache; a different model, image set or batch size does not match it.
"""

from __future__ import annotations

import json
import logging
import math
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

    The file is untrusted: it is parsed as strict JSON (never pickle; NaN and infinities are
    refused) and every field is checked before use. A cache the user named (`explicit`) that
    is damaged or belongs to another model or data set is refused with one `InputError` line
    naming the file and the fix; the default cache inside the bundle is recomputed instead
    (with a warning when damaged), and one that leads outside the bundle through a symbolic
    link is not read.
    """
    where = f"calibration cache {path}"
    if explicit and path.exists() and not path.is_file():
        raise InputError(f"{where} is not a regular file: pass another --cache")
    if not path.is_file():
        return None
    if not explicit and not path.resolve().is_relative_to(path.parent.resolve()):
        log.warning("warning: ignoring %s: it leads outside the bundle (a symbolic link)", where)
        return None
    try:
        data = _read(path)
        stored_key = {k: data[k] for k in ("model_sha256", "data_sha256", "settings")}
    except _Damaged as exc:
        if not explicit:
            log.warning("warning: %s is damaged (%s): recomputing it", where, exc)
            return None
        raise InputError(f"{where} is damaged ({exc}): delete it or pass another --cache") from None
    except OSError as exc:
        if not explicit:
            log.warning("warning: cannot read %s (%s): recomputing it", where, exc.strerror or exc)
            return None
        raise InputError(
            f"{where} cannot be read ({exc.strerror or exc}): fix its permissions or pass "
            "another --cache"
        ) from None
    mismatch = _mismatch(stored_key, key)
    if mismatch is None:
        try:
            tensors = _check_tensors(data["tensors"], key["settings"]["tensors"])
            ranges = data.get("ranges")
            kept = dict(ranges) if isinstance(ranges, dict) else {}  # for reading only
            return HistogramCollector.from_dict(tensors), kept
        except (_Damaged, KeyError, TypeError, ValueError, OverflowError, IndexError) as exc:
            if not explicit:
                log.warning("warning: %s is damaged (%s): recomputing it", where, exc)
                return None
            raise InputError(
                f"{where} is damaged ({exc}): delete it or pass another --cache"
            ) from None
    if not explicit:
        log.info("%s is for %s: recomputing it", where, mismatch)
        return None
    raise InputError(
        f"{where} was made for {mismatch}: delete the file or pass a different --cache"
    )


#: A real cache is a few hundred kilobytes (2048 bins per tensor, stored sparsely).
MAX_CACHE_BYTES = 64 << 20
_MAX_COUNT = 1 << 62  # histogram counts are int64


class _Damaged(ValueError):
    """Why a cache file cannot be used (becomes part of one error line)."""


def _reject_constant(name: str) -> Any:
    raise _Damaged(f"{name} is not JSON")


def _read(path: Path) -> dict[str, Any]:
    """The cache's top level, checked for shape (format, version, key fields)."""
    size = path.stat().st_size
    if size > MAX_CACHE_BYTES:
        raise _Damaged(f"{size:,} bytes, more than any calibration cache")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise _Damaged("not UTF-8 text") from None
    except RecursionError:
        raise _Damaged("nested too deeply") from None
    except ValueError as exc:
        raise _Damaged(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Damaged(f"a JSON {type(data).__name__}, not an object")
    if data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
        raise _Damaged(f"not a {CACHE_FORMAT} of version {CACHE_VERSION}")
    for field in ("model_sha256", "data_sha256"):
        if not isinstance(data.get(field), str):
            raise _Damaged(f"field {field} is missing or not a string")
    if not isinstance(data.get("settings"), dict):
        raise _Damaged("field settings is missing or not an object")
    return data


def _int(value: Any, what: str, low: int = 0, high: int = _MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Damaged(f"{what} is {value!r}, not a whole number in [{low}, {high}]")
    return value


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Damaged(f"{what} is {value!r}, not a finite number")
    return float(value)


def _check_tensors(tensors: Any, names: Any) -> dict[str, Any]:
    """Every statistic of every expected tensor, checked: right bin count, indices in range,
    non-negative counts that add up, finite ranges."""
    if not isinstance(tensors, dict):
        raise _Damaged("field tensors is missing or not an object")
    if not isinstance(names, list) or set(tensors) != set(names):
        raise _Damaged("its tensors are not the model's calibration tensors")
    for name, stats in tensors.items():
        where = f"tensors.{name}"
        if not isinstance(stats, dict):
            raise _Damaged(f"{where} is not an object")
        bins = _int(stats.get("num_bins"), f"{where}.num_bins", NUM_BINS, NUM_BINS)
        count = _int(stats.get("count"), f"{where}.count")
        zeros = _int(stats.get("zeros"), f"{where}.zeros", 0, count)
        if _float(stats.get("hist_max"), f"{where}.hist_max") < 0:
            raise _Damaged(f"{where}.hist_max is negative")
        if count:
            low = _float(stats.get("min"), f"{where}.min")
            if low > _float(stats.get("max"), f"{where}.max"):
                raise _Damaged(f"{where}.min is above its max")
        hist = stats.get("hist")
        if not isinstance(hist, list):
            raise _Damaged(f"{where}.hist is not a list")
        seen: set[int] = set()
        total = zeros
        for pair in hist:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _Damaged(f"{where}.hist holds {pair!r}, not a [bin, count] pair")
            index = _int(pair[0], f"{where}.hist bin", 0, bins - 1)
            if index in seen:
                raise _Damaged(f"{where}.hist lists bin {index} twice")
            seen.add(index)
            total += _int(pair[1], f"{where}.hist count")
        if total != count:
            raise _Damaged(f"{where}: its histogram holds {total} values, its count says {count}")
    return tensors


#: settings that are options of `vggdeploy calibrate` (the rest come from the bundle)
_OPTION_NAMES = {"samples": "--samples", "seed": "--seed", "batch_size": "--batch"}
#: settings that choose which images are drawn: a change draws other images
_DRAW_SETTINGS = ("samples", "seed")


def _mismatch(stored: dict[str, Any], key: dict[str, Any]) -> str | None:
    """What differs between a stored cache and this run, naming options by their flag and
    files as files; None when it matches."""
    if stored["model_sha256"] != key["model_sha256"]:
        return (
            f"a different model (sha256 {str(stored['model_sha256'])[:12]}..., this bundle's "
            f"model.onnx is {key['model_sha256'][:12]}...)"
        )
    old, new = stored["settings"], key["settings"]
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    options = [k for k in differ if k in _OPTION_NAMES]
    others = [k for k in differ if k not in _OPTION_NAMES]
    reasons = [
        f"{_OPTION_NAMES[k]} {old.get(k)!r}" + f" (this run: {new.get(k)!r})" for k in options
    ]
    if others:
        reasons.append(f"other calibration settings ({', '.join(others)} differ)")
    if stored["data_sha256"] != key["data_sha256"] and not any(k in differ for k in _DRAW_SETTINGS):
        # Same draw settings, other bytes: the image files themselves differ.
        reasons.append("different calibration images (the files or their contents changed)")
    return "; ".join(reasons) or None


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
