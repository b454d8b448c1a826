"""Causes 8 (absurd preprocessing) and 14 of issue 18: odd numbers, runtime specs, bench
comparison files and labels files are refused with one line; generated with Hypothesis."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vggdeploy.cli import main
from vggdeploy.errors import InputError


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code, capsys.readouterr().err


# -- preprocessing ------------------------------------------------------------------------------

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)


@given(st.tuples(finite_or_not, finite_or_not, finite_or_not), st.tuples(*[finite_or_not] * 3))
def test_preprocessing_keeps_normalised_pixels_finite_or_refuses(mean, std) -> None:
    from vggdeploy.preprocess import NORMALIZED_MAX, Preprocessing

    try:
        pre = Preprocessing(mean=mean, std=std)
    except InputError:
        return
    pixels = np.array([0.0, 1.0], np.float32)
    for m, s in zip(pre.mean, pre.std):
        values = (pixels - np.float32(m)) / np.float32(s)
        assert np.isfinite(values).all() and np.abs(values).max() <= NORMALIZED_MAX * 1.01


@pytest.mark.parametrize(
    "args", [["--mean", "-1e308,0,0"], ["--std", "0,1,1"], ["--std", "1e-300,1,1"]]
)
def test_export_refuses_absurd_preprocessing(tmp_path, capsys, args) -> None:
    code, err = _run(["export", "vgg11", "--out", tmp_path / "b", *args], capsys)
    assert code == 1 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


# -- numeric options and runtime specs ------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0.5", "1e309"])
def test_convert_headroom_must_be_a_sane_number(tiny_bundle_ro, capsys, value) -> None:
    code, err = _run(
        ["convert", tiny_bundle_ro, "--precision", "fp16", "--headroom", value], capsys
    )
    assert code in (1, 2) and err.startswith("error:") and "headroom" in err
    assert len(err.strip().splitlines()) == 1


@given(st.text(alphabet="torchnxuime:@pf1684cpu-lastg ", max_size=30))
@settings(max_examples=300)
def test_runtime_specs_parse_or_refuse_with_one_line(text) -> None:
    from vggdeploy.runtimes.registry import parse_spec

    try:
        spec = parse_spec(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    body = text.strip().partition("@")[0]
    assert all(part.strip() for part in body.split(":")), f"{text!r} parsed to {spec}"


@pytest.mark.parametrize("text", ["torch::cpu", "torch:", "onnxruntime::", "torch:cpu:"])
def test_empty_variants_are_refused(text) -> None:
    from vggdeploy.runtimes.registry import parse_spec

    with pytest.raises(InputError, match="no variant"):
        parse_spec(text)


# -- bench --compare files ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
case_like = st.fixed_dictionaries(
    {},
    optional={
        "runtime": json_values | st.just("onnxruntime[cpu]"),
        "precision": json_values | st.just("fp32"),
        "batch": json_values | st.just(1),
        "latency_ms": json_values
        | st.fixed_dictionaries({"median": json_values, "p99": json_values}),
        "throughput_ips": json_values | st.just(100.0),
    },
)


@given(st.lists(case_like | json_values, max_size=3), json_values)
@settings(max_examples=200, deadline=None)
def test_bench_compare_files_load_and_compare_or_refuse(tmp_path_factory, cases, method) -> None:
    from vggdeploy.bench.results import RESULT_SCHEMA, compare_results, load_result

    path = tmp_path_factory.mktemp("cmp") / "old.json"
    text = json.dumps({"schema": RESULT_SCHEMA, "cases": cases, "method": method})
    path.write_text(text.replace("Infinity", "1e999"))
    try:
        old = load_result(path)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    cmp = compare_results(old, old, 0.05)
    assert all(math.isfinite(r["latency_ratio"]) for r in cmp["rows"])


def test_bench_compare_with_a_wrong_type_is_one_line(tiny_bundle_ro, tmp_path, capsys) -> None:
    from vggdeploy.bench.results import RESULT_SCHEMA

    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"schema": RESULT_SCHEMA, "cases": [{"runtime": 1}], "method": {}}))
    code, err = _run(["bench", tiny_bundle_ro, "--compare", bad, bad], capsys)
    assert code == 1 and err.startswith("error:") and "Traceback" not in err


# -- labels files -------------------------------------------------------------------------------


def test_a_non_utf8_labels_file_is_refused_with_one_line(tmp_path, capsys) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"cat\n\xff\xfedog\n")
    code, err = _run(
        ["export", "vgg11", "--num-classes", "2", "--labels", labels, "--out", tmp_path / "b"],
        capsys,
    )
    assert code == 1 and "not UTF-8" in err and len(err.strip().splitlines()) == 1
