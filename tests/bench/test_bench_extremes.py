"""Numeric extremes in bench and pipeline options: one line each, refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from vggdeploy.cli import main


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


BENCH = {
    "--batch 100000000": (["--batch", "100000000"], "too large"),
    "--batch 0": (["--batch", "0"], "--batch"),
    "--duration nan": (["--duration", "nan"], "--duration"),
    "--duration inf": (["--duration", "inf"], "--duration"),
    "--duration -1": (["--duration", "-1"], "--duration"),
    "--warmup nan": (["--warmup", "nan"], "--warmup"),
    "--warmup inf": (["--warmup", "inf"], "--warmup"),
    "--warmup 1e9s": (["--warmup", "100000000000s"], "--warmup"),
    "--iterations 0": (["--iterations", "0"], "--iterations"),
    "--iterations huge": (["--iterations", "10000000000000"], "--iterations"),
    "--cv-threshold nan": (["--cv-threshold", "nan"], "--cv-threshold"),
    "--seed -1": (["--seed", "-1"], "--seed"),
    "--image-size 100000": (["--image-size", "100000"], "image size"),
}


@pytest.mark.parametrize("case", sorted(BENCH))
def test_bench_extreme_is_one_line(tiny_bundle_ro: Path, case: str, capsys) -> None:
    args, expected = BENCH[case]
    code, out, err = run_cli(["bench", tiny_bundle_ro, *args], capsys)
    assert code in (1, 2) and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_bench_compare_threshold_nan(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("{}")
    b.write_text("{}")
    code, out, err = run_cli(["bench", "--compare", a, b, "--threshold", "nan"], capsys)
    assert code in (1, 2) and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1 and "--threshold" in err


TINY = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10"]
PIPELINE = {
    "--batch 0": (["--batch", "0"], "--batch"),
    "--batch huge": (["--batch", "100000000"], "--batch"),
    "--bench-iterations 0": (["--bench-iterations", "0"], "--bench-iterations"),
    "--calib-samples 0": (["--calib-samples", "0"], "--calib-samples"),
    "--calib-samples -5": (["--calib-samples", "-5"], "--calib-samples"),
    "--seed -1": (["--seed", "-1"], "--seed"),
    "--image-size 100000": (["--image-size", "100000"], "image size"),
}


@pytest.mark.parametrize("case", sorted(PIPELINE))
def test_pipeline_extreme_is_refused_before_any_work(tmp_path: Path, case: str, capsys) -> None:
    args, expected = PIPELINE[case]
    out_dir = tmp_path / "out"
    code, out, err = run_cli(["pipeline", "vgg11", "--out", out_dir, *TINY, *args], capsys)
    assert code in (1, 2) and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not out_dir.exists()  # nothing was made
