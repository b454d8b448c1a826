"""`vggdeploy pipeline` stage by stage, each stage next to its bare equivalent.

The pipeline runs in a fresh process (`vggdeploy pipeline MODEL --out OUT --force`); its
stage seconds come from OUT/report.json. Then every stage's bare equivalent runs in its own
fresh process on the bundle the pipeline made, timed inside that process (no interpreter start
or `import torch`, like the pipeline's stage seconds):

    export           build the seeded weights, torch.onnx.export(dynamo=True), save
    validate-export  PyTorch and one ONNX Runtime session on the same random inputs
    convert-fp16     onnx.load, onnxconverter-common's convert_float_to_float16, onnx.save
    calibrate-int8   onnxruntime.quantization.quantize_static (QDQ, per-channel, entropy) on
                     the calibration images: one file, the pipeline writes two
    validate         PyTorch on random inputs and the photographs, an ORT session per ONNX file
    bench            an ORT session per benchmarked file, 2 warm-up + N timed calls per batch

The bare side has none of vggdeploy's checks (checker, parity, activation ranges, held-out
figures, manifest); the ratio is what those and any waste cost. The machine's load is printed
before and after: on a shared machine compare the ratios, not the seconds.

    .venv/bin/python benchmarks/pipeline_bench.py                  # vgg16 (about 6 minutes, ~6 GB)
    .venv/bin/python benchmarks/pipeline_bench.py --model vgg11 --width-divisor 8 --hidden 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docs_section

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_bench import BARE as BARE_EXPORT  # noqa: E402

# Imports happen before the clock starts: the pipeline's stages run with them already loaded.
COMMON = r"""
import json, sys, time
import numpy as np
import onnx, onnxruntime, torch
import onnxruntime.quantization
from onnxconverter_common import float16
args = json.loads(sys.argv[1])
bundle = args["bundle"]
start = time.perf_counter()
"""

# The torch reference on validate's random inputs: 16 standard-normal images, batches of 8.
TORCH_RANDOM = r"""
import torch
from vggdeploy.models import resolve_spec
from vggdeploy.weights import WeightsSource, load_model
model, _ = load_model(resolve_spec(args["model"], **args["options"]), WeightsSource("random", seed=0))
rng = np.random.default_rng(0)
xs = [rng.standard_normal((8, 3, args["size"], args["size"]), dtype=np.float32) for _ in range(2)]
with torch.no_grad():
    refs = [model(torch.from_numpy(x)).numpy() for x in xs]
"""

BARE = {
    "validate-export": COMMON
    + TORCH_RANDOM
    + r"""
import onnxruntime as ort
s = ort.InferenceSession(f"{bundle}/model.onnx", providers=["CPUExecutionProvider"])
outs = [s.run(None, {"input": x})[0] for x in xs]
""",
    "convert-fp16": COMMON
    + r"""
import onnx
from onnxconverter_common.float16 import convert_float_to_float16
m = onnx.load(f"{bundle}/model.onnx")
m = convert_float_to_float16(m, keep_io_types=True, disable_shape_infer=True)
onnx.save(m, args["dest"])
""",
    "calibrate-int8": COMMON
    + r"""
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization import CalibrationDataReader
from vggdeploy.preprocess import Preprocessing, find_images, iter_batches
pre = Preprocessing.for_size(args["size"])
paths = find_images(args["images"])[: args["samples"]]
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter([{"input": b} for _, b in iter_batches(paths, pre, 8)])
    def get_next(self):
        return next(self.it, None)
quantize_static(f"{bundle}/model.onnx", args["dest"], Reader(), quant_format=QuantFormat.QDQ,
    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
    calibrate_method=CalibrationMethod.Entropy)
""",
    "validate": COMMON
    + TORCH_RANDOM
    + r"""
import onnxruntime as ort
from vggdeploy.inputs import default_images_dir
from vggdeploy.preprocess import Preprocessing, find_images, iter_batches
photos = [b for _, b in iter_batches(find_images(default_images_dir()), Preprocessing.for_size(args["size"]), 8)]
with torch.no_grad():
    photo_refs = [model(torch.from_numpy(x)).numpy() for x in photos]
for name in args["files"]:
    s = ort.InferenceSession(f"{bundle}/{name}", providers=["CPUExecutionProvider"])
    for x in (photos if "int8" in name else xs):
        s.run(None, {"input": x})
""",
    "bench": COMMON
    + r"""
import onnxruntime as ort
for name in args["bench_files"]:
    s = ort.InferenceSession(f"{bundle}/{name}", providers=["CPUExecutionProvider"])
    for batch in args["batches"]:
        x = np.random.default_rng(0).standard_normal((batch, 3, args["size"], args["size"]), dtype=np.float32)
        for _ in range(2 + args["iterations"]):
            s.run(None, {"input": x})
""",
}
for key in BARE:
    BARE[key] += '\nprint(f"INNER {time.perf_counter() - start:.3f}")\n'

STAGES = ("export", "validate-export", "convert-fp16", "calibrate-int8", "validate", "bench")


def run(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 2):  # 2: a check failed (random weights' INT8) - still timed
        sys.exit(
            f"error: {' '.join(argv[:6])}... failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return wall, proc.stdout


def inner(stdout: str) -> float:
    return next(float(line.split()[1]) for line in stdout.splitlines() if line.startswith("INNER"))


def run_pipeline(args: argparse.Namespace, options: dict, out: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "vggdeploy", "-q", "pipeline", args.model, "--out", str(out)]
    argv += ["--bench-iterations", str(args.iterations)]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    wall, _ = run([*argv, "--force"])
    report = json.loads((out / "report.json").read_text())
    seconds = {s["name"]: float(s.get("seconds") or 0.0) for s in report["stages"]}
    seconds["total (report wall_s)"] = float(report["wall_s"])
    seconds["process wall"] = wall
    # The same command again: every stage is up to date, so this is the cost of finding that out
    # (hashing every artifact against pipeline.json) plus starting Python.
    seconds["re-run, up to date"] = run(argv)[0]
    return seconds


def run_bare(args: argparse.Namespace, options: dict, bundle: Path, tmp: Path) -> dict[str, float]:
    from vggdeploy.pipeline.options import calibration_split

    manifest = json.loads((bundle / "manifest.json").read_text())
    files = [r["path"] for r in manifest["artifacts"].values() if r.get("kind") == "onnx"]
    from vggdeploy.inputs import default_images_dir
    from vggdeploy.preprocess import find_images

    images = default_images_dir()
    shared = {
        "bundle": str(bundle),
        "model": args.model,
        "options": options,
        "size": 224,
        "files": files,
        "bench_files": [f for f in files if f != "model.int8.onnx"],
        "batches": [1, 8],
        "iterations": args.iterations,
        "images": str(images),
        "samples": calibration_split(len(find_images(images)), None),
        "dest": str(tmp / "bare-out.onnx"),
    }
    seconds = {}
    for stage in STAGES:
        print(f"bare {stage} ...", file=sys.stderr)
        if stage == "export":
            argv = [sys.executable, "-c", BARE_EXPORT, args.model, "224", "18"]
            argv += [str(tmp / "bare.onnx"), json.dumps(options)]
        else:
            argv = [sys.executable, "-c", BARE[stage], json.dumps(shared)]
        seconds[stage] = inner(run(argv)[1])
    seconds["total (report wall_s)"] = sum(seconds[s] for s in STAGES)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--iterations", type=int, default=10, help="bench iterations (as pipeline)")
    parser.add_argument("--width-divisor", type=int, help="a narrower model (smoke runs)")
    parser.add_argument("--hidden", type=int, help="hidden FC width (smoke runs)")
    parser.add_argument("--out", type=Path, help="keep the pipeline's run folder here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    docs_section.add_option(parser)
    args = parser.parse_args()
    record = docs_section.Recorder(__file__, args.write_docs)
    options = {
        k: v
        for k, v in (("width_divisor", args.width_divisor), ("hidden", args.hidden))
        if v is not None
    }
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        out = args.out or tmp / "run"
        print("vggdeploy pipeline ...", file=sys.stderr)
        ours = run_pipeline(args, options, out)
        bare = run_bare(args, options, out / "bundle", tmp)
    load_after = os.getloadavg()[0]
    figures = {}
    with record:
        print(
            f"{args.model}{' ' + str(options) if options else ''}: load average {load_before:.1f} "
            f"-> {load_after:.1f} on {os.cpu_count()} CPUs (other work slows both sides)"
        )
        print(f"{'stage':24}  {'pipeline (s)':>12}  {'bare (s)':>9}  {'ratio':>6}")
        for stage in (*STAGES, "total (report wall_s)"):
            ratio = ours[stage] / bare[stage] if bare[stage] else float("nan")
            figures[stage] = {"pipeline": ours[stage], "bare": bare[stage], "ratio": ratio}
            print(f"{stage:24}  {ours[stage]:>12.1f}  {bare[stage]:>9.1f}  {ratio:>5.2f}x")
        print(f"{'build (skipped here)':24}  {ours.get('build', 0.0):>12.1f}")
        print(f"{'whole process':24}  {ours['process wall']:>12.1f}   (target <= 120 s)")
        print(f"{'re-run, up to date':24}  {ours['re-run, up to date']:>12.1f}   (whole process)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, **options, "figures": figures}))


if __name__ == "__main__":
    main()
