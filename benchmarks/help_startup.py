"""How long does `vggdeploy --help` take to start, against a bare `python -c 'import click'`?

`--help` must stay cheap: it imports no torch, ONNX Runtime, TensorRT or other heavy library
(tests/test_cli.py checks that through `sys.modules` in a subprocess, which does not depend on
the machine's load). This script measures the time itself, which does: each round runs both
commands as fresh processes, in alternating order, so drift and other load on the machine hit
both alike; it prints each one's median wall time and the median of the per-round ratios
(`vggdeploy --help` / bare click import) with a bootstrap 95% interval. The ratio is what to
compare between machines and commits; the seconds are this machine's, now.

    .venv/bin/python benchmarks/help_startup.py [--rounds 30] [--command "models --help"]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import docs_section
import numpy as np


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - start


def median_ci(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Median and its bootstrap 95% interval."""
    a = np.asarray(values)
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(a, size=(2000, a.size), replace=True), axis=1)
    return float(np.median(a)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--command", default="--help", help="vggdeploy arguments to time")
    docs_section.add_option(parser)
    args = parser.parse_args()
    record = docs_section.Recorder(__file__, args.write_docs)
    script = Path(sys.executable).with_name("vggdeploy")
    tool = [str(script)] if script.is_file() else [sys.executable, "-m", "vggdeploy"]
    tool += shlex.split(args.command)
    bare = [sys.executable, "-c", "import click"]
    wall(tool), wall(bare)  # one untimed run each: the file cache is warm for both
    times: dict[str, list[float]] = {"tool": [], "bare": []}
    ratios = []
    for i in range(args.rounds):
        order = [("tool", tool), ("bare", bare)]
        if i % 2:
            order.reverse()
        got = {name: wall(argv) for name, argv in order}
        for name, seconds in got.items():
            times[name].append(seconds)
        ratios.append(got["tool"] / got["bare"])
    ratio, low, high = median_ci(ratios)
    with record:
        _print(args, times, ratio, low, high)


def _print(args, times, ratio, low, high) -> None:
    print(f"vggdeploy {args.command}: median {statistics.median(times['tool']) * 1e3:.0f} ms")
    print(f"python -c 'import click': median {statistics.median(times['bare']) * 1e3:.0f} ms")
    print(
        f"ratio (per round, interleaved, {args.rounds} rounds): {ratio:.2f}x "
        f"(95% CI {low:.2f}-{high:.2f})"
    )


if __name__ == "__main__":
    main()
