"""Issue 18's "How": every numeric option's parser, given any text, returns a value in its range
or refuses with an `InputError` (one line, exit 1), never another exception. Hypothesis draws
the text from digits (ASCII and others `int` and `float` read), signs, points, exponents,
units and huge numbers (a float that overflows to infinity)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vggdeploy import bench
from vggdeploy.bench.options import MAX_BATCH, MAX_ITERATIONS, MAX_SECONDS, MAX_STREAMS
from vggdeploy.bench.streams import parse_stream_threads
from vggdeploy.cli import main
from vggdeploy.cli_options import parse_export_batch, parse_floats, parse_int_list
from vggdeploy.errors import InputError

numberish = st.one_of(
    st.text(alphabet="0123456789.,-+eE%ms \u0663\uff15_", max_size=12),
    st.integers(min_value=-(10**30), max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.builds(
        lambda digits, unit: "9" * digits + unit,
        st.integers(300, 400),
        st.sampled_from(["", "s", "ms", "%"]),
    ),
)


def _parsed(parse, text):
    try:
        return parse(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return None


@given(numberish)
@settings(max_examples=300)
def test_an_amount_is_iterations_or_seconds_in_range_or_refused(text) -> None:
    got = _parsed(lambda t: bench.parse_amount(t, "--warmup"), text)
    if got is not None:
        kind, value = got
        assert math.isfinite(value) and value >= 0
        if kind == "iterations":
            assert value == int(value) and value <= MAX_ITERATIONS
        else:
            assert kind == "seconds" and value <= MAX_SECONDS


@given(numberish)
@settings(max_examples=300)
def test_a_threshold_is_a_finite_fraction_or_refused(text) -> None:
    got = _parsed(bench.parse_threshold, text)
    assert got is None or (math.isfinite(got) and 0 <= got < 10)


@given(numberish)
@settings(max_examples=300)
def test_counts_are_distinct_positive_integers_in_range_or_refused(text) -> None:
    for parse, limit in ((bench.parse_batches, MAX_BATCH), (bench.parse_streams, MAX_STREAMS)):
        got = _parsed(parse, text)
        if got is not None:
            assert got and all(isinstance(v, int) and 1 <= v <= limit for v in got)
            assert len(set(got)) == len(got)


@given(numberish)
@settings(max_examples=300)
def test_the_other_numeric_options_parse_in_range_or_refuse(text) -> None:
    ints = _parsed(lambda t: parse_int_list(t, "--opt-shapes"), text)
    assert ints is None or all(isinstance(v, int) and v >= 1 for v in ints)
    floats = _parsed(lambda t: parse_floats(t, "--mean"), text)
    assert floats is None or (len(floats) == 3 and all(math.isfinite(v) for v in floats))
    batch = _parsed(parse_export_batch, text)
    assert batch is None or isinstance(batch, int)  # its range is checked by the export
    threads = _parsed(parse_stream_threads, text)
    assert threads is None or 1 <= threads <= 1024


@pytest.mark.parametrize("option", ["--warmup", "--iterations", "--duration"])
def test_a_huge_bench_amount_is_one_line(tiny_bundle_ro, capsys, option) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(tiny_bundle_ro), "--runtime", "onnxruntime", option, "9" * 400])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith(f"error: {option} "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
