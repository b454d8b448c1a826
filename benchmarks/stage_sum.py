"""Is `vggdeploy bench --end-to-end` honest? Stage medians vs the total, and harness overhead.

Loads a bundle with the real `OrtRuntime` (ONNX Runtime, CPU) - by default a small VGG
(vgg11_bn, conv widths / 16, 64-wide FCs, 32x32 input) exported to a temporary folder, or the
bundle given with `--bundle` (e.g. runs/vgg16/bundle) - and builds the end-to-end stages
bench times (`bench.endtoend.pipeline_stages`: decode, preprocess, infer, top-k) over the
images of `--images` (default: the shipped calibration photographs). Then, alternating in
rotating order for `--repeats` rounds on the same runtime and the same files:

- harness: `endtoend.time_stages(stages, iterations=n)` timed as a whole (its clock reads
  after every stage and its bookkeeping count);
- bare:    `for i in range(n): x = i; for fn in stages: x = fn(x)` timed as a whole.

It prints (1) sum of the stage medians / total median over every harness call (the stages of
one call add up to its total exactly; medians add up only within noise), and (2) harness /
bare per call, the overhead (target < 2%), median of per-round ratios with a bootstrap 95%
interval.

    .venv/bin/python benchmarks/stage_sum.py [--bundle runs/vgg16/bundle] [--repeats 40]
        [--iterations 10] [--batch 1] [--threads 1] [--images DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docs_section
import numpy as np

TARGET = 0.02
IMAGES = Path(__file__).resolve().parents[1] / "src/vggdeploy/data/calibration_images"


def median_ci(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(values, size=(2000, len(values))), axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return statistics.median(values), float(lo), float(hi)


def measure(bundle_root: Path, args: argparse.Namespace) -> int:
    from vggdeploy.bench import endtoend
    from vggdeploy.bundle import Bundle
    from vggdeploy.runtimes.onnxrt import OrtRuntime

    record = docs_section.Recorder(__file__, args.write_docs)
    bundle = Bundle.load(bundle_root)
    paths = endtoend.image_set(args.images, bundle.preprocessing.resize)
    n = args.iterations
    with OrtRuntime(bundle, precision="fp32", provider="cpu", threads=args.threads) as rt:
        stages = endtoend.pipeline_stages(bundle, rt, args.batch, paths, 5)
        fns = [fn for _, fn in stages]

        def bare() -> float:
            t0 = time.perf_counter_ns()
            for i in range(n):
                x = i
                for fn in fns:
                    x = fn(x)
            return (time.perf_counter_ns() - t0) / n

        samples: dict[str, list[int]] = {name: [] for name in (*[s for s, _ in stages], "total")}

        def harness() -> float:
            t0 = time.perf_counter_ns()
            got = endtoend.time_stages(stages, iterations=n, clock=time.perf_counter_ns)
            per_call = (time.perf_counter_ns() - t0) / n
            for name, values in got.items():
                samples[name] += values
            return per_call

        loops = {"harness": harness, "bare": bare}
        for name in list(loops) * 2:  # warm up both paths
            loops[name]()
        for values in samples.values():
            values.clear()
        ratios: list[float] = []
        per_call: dict[str, list[float]] = {"harness": [], "bare": []}
        for r in range(args.repeats):
            order = ["harness", "bare"] if r % 2 == 0 else ["bare", "harness"]
            got = {name: loops[name]() for name in order}
            for name in got:
                per_call[name].append(got[name])
            ratios.append(got["harness"] / got["bare"])

    medians = {name: statistics.median(v) / 1e6 for name, v in samples.items()}
    stage_sum = sum(m for name, m in medians.items() if name != "total")
    med, lo, hi = median_ci(ratios)
    ok = med - 1 < TARGET
    with record:
        print(
            f"{bundle.model.name} at {bundle.preprocessing.crop}px, ONNX Runtime CPU fp32, batch "
            f"{args.batch}, {args.threads} thread(s), {len(paths)} images, {args.repeats} rounds x "
            f"{n} calls"
        )
        print("  stage medians (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
        print(
            f"  sum of stage medians / total median: {stage_sum / medians['total']:.4f} "
            f"({stage_sum:.3f} / {medians['total']:.3f} ms)"
        )
        for name, values in per_call.items():
            print(f"  {name:8s} median {statistics.median(values) / 1e6:8.3f} ms/call")
        print(
            f"  harness / bare: {med:.4f} (95% CI {lo:.4f}-{hi:.4f}), overhead {med - 1:+.2%}  "
            f"target < {TARGET:.0%}: " + ("PASS" if ok else "FAIL")
        )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle (default: a small one, exported)")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--repeats", type=int, default=40, help="alternating rounds")
    parser.add_argument("--iterations", type=int, default=10, help="calls per loop and round")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    docs_section.add_option(parser)
    args = parser.parse_args()
    if args.bundle:
        return measure(args.bundle, args)
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.weights import WeightsSource

    with tempfile.TemporaryDirectory() as tmp:
        spec = resolve_spec("vgg11_bn", width_divisor=16, hidden=64, num_classes=10)
        root = Path(tmp) / "b"
        export_bundle(spec, WeightsSource("random", seed=0), root, ExportOptions(image_size=32))
        return measure(root, args)


if __name__ == "__main__":
    sys.exit(main())
