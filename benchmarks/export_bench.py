"""Export time and peak memory: `vggdeploy export` next to a bare `torch.onnx.export`.

Each side runs in its own fresh Python process, measured from outside: wall time around the
process, peak resident memory from `wait4`'s rusage (the child's own high-water mark). Both sides
build the same network with the same seeded random weights, so the difference is what
`vggdeploy export` adds: the checker, shape inference, the ONNX Runtime parity check at every
exported shape, the metadata and the manifest.

    .venv/bin/python benchmarks/export_bench.py                 # vgg16 at 224 (about a minute, ~4 GB)
    .venv/bin/python benchmarks/export_bench.py --model vgg11 --repeat 3 --json results.json
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

# The bare baseline: the same model, the same exporter settings (dynamo, opset, a dynamic batch
# axis, one self-contained file), and nothing else.
BARE = r"""
import json, sys, time
import torch
from vggdeploy.models import resolve_spec
from vggdeploy.weights import WeightsSource, load_model

model_name, size, opset, dest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
options = json.loads(sys.argv[5])
start = time.perf_counter()
model, _ = load_model(resolve_spec(model_name, **options), WeightsSource("random", seed=0))
program = torch.onnx.export(
    model,
    (torch.randn(2, 3, size, size),),
    dynamo=True,
    input_names=["input"],
    output_names=["logits"],
    dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
    opset_version=opset,
    external_data=False,
)
program.save(dest)
print(f"INNER {time.perf_counter() - start:.3f}")
"""


def run_measured(argv: list[str]) -> dict[str, float | str]:
    """Run `argv` to completion; wall seconds, the child's peak RSS (MiB) and its stdout."""
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(argv[:4])}... failed ({proc.returncode}):\n{stderr[-2000:]}")
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss_mib = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return {"wall_s": wall, "peak_rss_mib": rss_mib, "stdout": stdout}


def measure_ours(model: str, size: int, opset: int, options: dict, out: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "vggdeploy", "-q", "export", model, "--out", str(out)]
    argv += ["--image-size", str(size), "--opset", str(opset), "--force"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    result = run_measured(argv)
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "wall_s": result["wall_s"],
        "peak_rss_mib": result["peak_rss_mib"],
        # Weights, export, checks and parity, timed inside the command (no interpreter start).
        "inner_s": manifest["export"]["seconds"],
        "onnx_mib": (out / "model.onnx").stat().st_size / 2**20,
        "parity_checks": len(manifest["parity"]["checks"]),
        "worst_max_rel": manifest["parity"]["worst_max_rel"],
    }


def measure_bare(model: str, size: int, opset: int, options: dict, dest: Path) -> dict[str, float]:
    argv = [sys.executable, "-c", BARE, model, str(size), str(opset), str(dest)]
    result = run_measured([*argv, json.dumps(options)])
    inner = next(
        float(line.split()[1]) for line in result["stdout"].splitlines() if line.startswith("INNER")
    )
    return {
        "wall_s": result["wall_s"],
        "peak_rss_mib": result["peak_rss_mib"],
        "inner_s": inner,  # building the weights, the torch.onnx.export call and save
        "onnx_mib": dest.stat().st_size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the best is kept")
    parser.add_argument("--width-divisor", type=int, help="a narrower model (smoke runs)")
    parser.add_argument("--hidden", type=int, help="hidden FC width (smoke runs)")
    parser.add_argument("--num-classes", type=int, help="classes (smoke runs)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    docs_section.add_option(parser)
    args = parser.parse_args()
    record = docs_section.Recorder(__file__, args.write_docs)

    options = {
        k: v
        for k, v in (
            ("width_divisor", args.width_divisor),
            ("hidden", args.hidden),
            ("num_classes", args.num_classes),
        )
        if v is not None
    }
    ours_runs, bare_runs = [], []
    load_before = os.getloadavg()[0]  # other work on the machine makes both sides slower
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        for i in range(args.repeat):
            print(f"run {i + 1}/{args.repeat}: bare torch.onnx.export ...", file=sys.stderr)
            bare_runs.append(
                measure_bare(
                    args.model, args.image_size, args.opset, options, Path(tmp) / "bare.onnx"
                )
            )
            print(f"run {i + 1}/{args.repeat}: vggdeploy export ...", file=sys.stderr)
            ours_runs.append(
                measure_ours(args.model, args.image_size, args.opset, options, Path(tmp) / "ours")
            )

    def best(runs: list[dict[str, float]], key: str) -> float:
        return min(r[key] for r in runs)

    rows = [
        ("wall time, whole process (s)", "wall_s", "{:.1f}"),
        ("export work, inside the process (s)", "inner_s", "{:.1f}"),
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
        ("model.onnx (MiB)", "onnx_mib", "{:.1f}"),
    ]
    head = f"{args.model} at {args.image_size}x{args.image_size}, opset {args.opset}, best of {args.repeat}"
    head += f", load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    if options:
        head += f", {options}"
    figures = {}
    with record:
        print(head)
        print(f"{'':38}  {'vggdeploy export':>16}  {'bare export':>12}  {'ratio':>6}")
        for label, key, fmt in rows:
            ours, bare = best(ours_runs, key), best(bare_runs, key)
            figures[key] = {"vggdeploy": ours, "bare": bare, "ratio": ours / bare}
            print(
                f"{label:38}  {fmt.format(ours):>16}  {fmt.format(bare):>12}  {ours / bare:>5.2f}x"
            )
        print(
            "\nvggdeploy's export work includes building the weights, the export, onnx.checker,"
            f" shape inference, {ours_runs[0]['parity_checks']} ONNX Runtime parity checks (worst"
            f" max rel diff {max(r['worst_max_rel'] for r in ours_runs):.1e}) and metadata; the"
            " bare side's is the weights, the torch.onnx.export call and save. Both wall times"
            " include starting Python and importing torch."
        )
    if args.json:
        meta = {"model": args.model, "image_size": args.image_size, "opset": args.opset, **options}
        args.json.write_text(
            json.dumps({**meta, "repeat": args.repeat, "figures": figures}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
