"""Peak memory and time of vggdeploy's INT8 calibration next to ONNX Runtime's quantize_static.

Each contender runs in its own child process, which reports its own peak RSS
(`ru_maxrss`) and wall time, so neither the parent nor the other run is counted:

- ours: `calibrate_bundle` (entropy) on a full VGG-16 bundle at 224x224 with
  `--samples` images (default 512): data pass, ranges, Q/DQ file, checks, held-out comparison;
- ort:  `onnxruntime.quantization.quantize_static` (QDQ, per-channel int8, Entropy calibration)
  on the same model with `--ort-samples` images (default 32; its calibrator keeps every
  intermediate tensor, so more images need proportionally more memory).

Images are real photographs if `--images DIR` is given; otherwise image-like JPEGs are made
from the 11 bundled photographs (random crops, scales, flips, colour and brightness changes).
Afterwards ONNX Runtime CPU latency at batch 1 is measured for fp32 and int8 (`model.int8.onnx`
in the integer form vggdeploy's ONNX Runtime CPU runtime loads it in, `onnxutil.cpu_int8_form`).

    .venv/bin/python benchmarks/calib_memory.py                 # exports VGG-16 (random weights)
    .venv/bin/python benchmarks/calib_memory.py --bundle bundles/vgg16 --images photos/

Heavy: several minutes and several GB (ORT's run); run it alone on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docs_section
import numpy as np


def make_images(dest: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs (about 320x256) derived from the bundled photographs."""
    from importlib import resources

    from PIL import Image, ImageEnhance, ImageOps

    src = Path(str(resources.files("vggdeploy").joinpath("data/calibration_images")))
    photos = [
        ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in sorted(src.glob("*.jpg"))
    ]
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = photos[i % len(photos)]
        w, h = img.size
        scale = rng.uniform(0.45, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((320, 256), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            out = ImageOps.mirror(out)
        out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
        out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.3))
        out.save(dest / f"img{i:04d}.jpg", quality=88)
    return dest


def export_vgg16(dest: Path) -> Path:
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.weights import WeightsSource

    export_bundle(resolve_spec("vgg16"), WeightsSource("random", seed=0), dest, ExportOptions())
    return dest


# -- children -----------------------------------------------------------------------------------


def child_ours(args: argparse.Namespace) -> dict:
    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration import CalibrationOptions, calibrate_bundle

    start = time.perf_counter()
    summary = calibrate_bundle(
        Bundle.load(args.bundle),
        args.images,
        CalibrationOptions(
            method="entropy",
            samples=args.samples,
            batch_size=args.batch_size,
            holdout=args.holdout,
            progress=False,
        ),
    )
    return {
        "seconds": time.perf_counter() - start,
        "data_pass_seconds": summary["data_pass_seconds"],
        "cache_reused": summary["cache_reused"],
        "holdout": summary["holdout"],
        "images": args.samples,
    }


def child_ort(args: argparse.Namespace) -> dict:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration import ImageBatchReader, split_images
    from vggdeploy.preprocess import Preprocessing

    bundle = Bundle.load(args.bundle)
    split = split_images(args.images, args.samples, seed=0, holdout=0)
    reader = ImageBatchReader(
        split.calibration,
        Preprocessing.from_dict(bundle.preprocessing),
        bundle.input_name,
        args.batch_size,
    )
    out = Path(args.workdir) / "ort.int8.onnx"
    start = time.perf_counter()
    quantize_static(
        str(bundle.root / "model.onnx"),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.Entropy,
    )
    return {"seconds": time.perf_counter() - start, "images": args.samples}


def run_child(kind: str, args: argparse.Namespace, samples: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--bundle",
        str(args.bundle),
        "--images",
        str(args.images),
        "--samples",
        str(samples),
        "--batch-size",
        str(args.batch_size),
        "--workdir",
        str(args.workdir),
    ]
    if args.holdout is not None:
        cmd += ["--holdout", str(args.holdout)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"error": "\n".join(tail), "wall_seconds": wall}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = wall
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries a forked
    parent's maxrss across exec, so a child of a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def latency(path: Path, runs: int = 10, cpu_form: bool = False) -> float:
    import onnx
    import onnxruntime as ort

    from vggdeploy.onnxutil import cpu_int8_form

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    source: str | bytes = str(path)
    if cpu_form:  # as vggdeploy's ONNX Runtime CPU runtime loads an int8 file
        model = onnx.load(str(path))
        cpu_int8_form(model)
        source = model.SerializeToString()
    session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(2):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="VGG-16 bundle (default: export one)")
    parser.add_argument("--images", type=Path, help="calibration images (default: generated)")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--ort-samples", type=int, default=32)
    parser.add_argument("--holdout", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-ort", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--child", choices=["ours", "ort"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    docs_section.add_option(parser)
    args = parser.parse_args()
    record = docs_section.Recorder(__file__, args.write_docs)

    if args.child:
        result = child_ours(args) if args.child == "ours" else child_ort(args)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="vggdeploy-calib-bench-"))
    args.workdir = work
    try:
        if args.bundle is None:
            print("exporting vgg16 (random weights, 224x224) ...", flush=True)
            args.bundle = export_vgg16(work / "vgg16")
        else:
            # Work on a copy so the bench never changes a real bundle's manifest or cache.
            copy = work / "bundle"
            copy.mkdir()
            for name in ("manifest.json", "model.onnx", "labels.txt"):
                if (args.bundle / name).exists():
                    shutil.copy2(args.bundle / name, copy / name)
            args.bundle = copy
        if args.images is None:
            needed = args.samples + (args.holdout if args.holdout is not None else 64)
            print(f"writing {needed} image-like JPEGs ...", flush=True)
            args.images = make_images(work / "images", needed)
        print(f"ours: {args.samples} images ...", flush=True)
        ours = run_child("ours", args, args.samples)
        ort = None
        if not args.skip_ort:
            print(f"onnxruntime quantize_static: {args.ort_samples} images ...", flush=True)
            ort = run_child("ort", args, args.ort_samples)
        lat = {}
        if not args.skip_latency and "error" not in ours:
            lat["fp32"] = latency(args.bundle / "model.onnx")
            lat["int8 (model.int8.onnx, ORT CPU integer form)"] = latency(
                args.bundle / "model.int8.onnx", cpu_form=True
            )
        with record:
            report(args, ours, ort, lat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, ours: dict, ort: dict | None, lat: dict) -> None:
    print()
    print(f"host: {os.cpu_count()} CPUs; batch size {args.batch_size}; VGG-16 at 224x224")
    rows = [("vggdeploy calibrate (entropy, streaming)", ours)]
    if ort is not None:
        rows.append(("onnxruntime quantize_static (Entropy)", ort))
    print(f"{'calibrator':42} {'images':>6} {'peak RSS':>10} {'wall':>8} {'s/image':>8}")
    for label, r in rows:
        if "error" in r:
            print(f"{label:42} failed: {r['error']}")
            continue
        print(
            f"{label:42} {r['images']:>6} {r['peak_rss_mb'] / 1024:>8.2f} GB "
            f"{r['wall_seconds']:>7.1f}s {r['wall_seconds'] / r['images']:>8.2f}"
        )
    if ort is not None and "error" not in ort and "error" not in ours:
        print(
            f"\nratios ours/ort: peak RSS {ours['peak_rss_mb'] / ort['peak_rss_mb']:.2f}x with "
            f"{ours['images'] / ort['images']:.0f}x the images; time per image "
            f"{(ours['wall_seconds'] / ours['images']) / (ort['wall_seconds'] / ort['images']):.2f}x"
        )
    if "error" not in ours:
        print(
            f"ours: data pass {ours['data_pass_seconds']:.1f} s; target 512 images < 4 GB peak: "
            + ("MET" if ours["peak_rss_mb"] < 4096 and ours["images"] >= 512 else "not met")
        )
        held = ours["holdout"]
        if held.get("images"):
            print(
                f"held-out int8 vs fp32 ({held['images']} images, random weights): cosine "
                f"{held['cosine']:.4f}, top-1 agreement {held['top1_agreement']:.3f}"
            )
    if lat:
        print("\nONNX Runtime CPU latency, batch 1 (median of 10):")
        base = lat.get("fp32")
        for name, ms in lat.items():
            print(f"  {name:40} {ms:8.1f} ms  ({base / ms:.2f}x vs fp32)")


if __name__ == "__main__":
    main()
