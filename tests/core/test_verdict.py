"""One INT8 verdict: `validate` and `calibrate`'s held-out check judge by `metrics.verdict`, and
neither judges a sample too small to mean anything."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vggdeploy.calibration.stage import compare_logits, int8_tolerance, judge_holdout
from vggdeploy.metrics import TOLERANCES, compare_outputs, images_needed, passes, verdict
from vggdeploy.validate import judge_on


def _validate_verdict(ref: np.ndarray, got: np.ndarray) -> bool | None:
    checks, unjudged = judge_on("t", compare_outputs(ref, got), TOLERANCES["int8"], len(ref))
    return None if unjudged else all(c.passed for c in checks)


def _calibrate_verdict(ref: np.ndarray, got: np.ndarray) -> bool | None:
    return judge_holdout(compare_logits(ref, got), int8_tolerance())["passed"]


@st.composite
def output_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) logits: a candidate near the reference (INT8-like noise), some
    rows replaced outright (decisions flipped), on 1 to 40 images."""
    n = draw(st.integers(1, 40))
    classes = draw(st.integers(2, 12))
    values = st.floats(-20, 20, allow_nan=False, width=32)
    ref = draw(arrays(np.float32, (n, classes), elements=values))
    noise = draw(arrays(np.float32, (n, classes), elements=st.floats(-1, 1, width=32)))
    scale = draw(st.sampled_from([0.0, 0.01, 0.1, 1.0, 5.0]))
    got = ref + scale * noise
    flips = draw(st.lists(st.integers(0, n - 1), max_size=n))
    for i in flips:
        got[i] = np.roll(got[i], 1)
    return ref, got.astype(np.float32)


@settings(max_examples=300, deadline=None)
@given(output_pairs())
def test_validate_and_calibrate_reach_the_same_int8_verdict(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    ref, got = pair
    assert _validate_verdict(ref, got) == _calibrate_verdict(ref, got)


def test_both_places_judge_by_the_validate_table() -> None:
    assert int8_tolerance() == TOLERANCES["int8"]


def test_images_needed_is_computed_from_the_limits() -> None:
    # top-1 agreement 0.9: on 9 images one disagreeing image gives 8/9 = 0.889 < 0.9 (a
    # coin-flip image decides the verdict); on 10 it gives 0.9, which passes.
    assert images_needed(TOLERANCES["int8"]) == 10
    assert not passes("top1", 8 / 9, 0.9) and passes("top1", 9 / 10, 0.9)
    assert images_needed({"top1": 0.95}) == 20
    assert images_needed({"top1": 0.95, "top5": 0.8}) == 20
    assert images_needed({"cosine": 0.98}) == 1  # no per-image metric: any sample
    assert images_needed({"top1": 1.0}) == 1  # no disagreement tolerated at any size


@given(st.floats(0, 0.999999, allow_nan=False))
def test_images_needed_is_the_fewest_that_tolerate_one_disagreement(limit: float) -> None:
    n = images_needed({"top1": limit})
    assert passes("top1", (n - 1) / n, limit)
    assert n == 1 or not passes("top1", (n - 2) / (n - 1), limit)


def test_too_few_images_give_no_verdict_and_say_how_many_are_needed() -> None:
    metrics = {"cosine": 0.5, "top1": 0.0, "top5": 0.0}  # far below every limit
    small = verdict(metrics, TOLERANCES["int8"], 9)
    assert small.passed is None and not small.judged
    assert "9 images cannot judge this: a verdict needs at least 10" in small.too_few()
    assert verdict(metrics, TOLERANCES["int8"], 10).passed is False


def test_validate_help_states_the_computed_number() -> None:
    from vggdeploy.commands.check import validate

    needed = images_needed(TOLERANCES["int8"])
    limit = TOLERANCES["int8"]["top1"]
    help_text = " ".join((validate.help or "").split())
    assert f"on at least {needed} of them" in help_text
    assert f"top-1 agreement {limit:g} on its own" in help_text


def test_calibrate_holdout_help_states_the_computed_number() -> None:
    from vggdeploy.commands.make import calibrate

    [holdout] = [p for p in calibrate.params if p.name == "holdout"]
    assert f"a verdict needs {images_needed(TOLERANCES['int8'])})" in (holdout.help or "")


def test_the_pipeline_report_says_not_judged_not_below_tolerance() -> None:
    from vggdeploy.report.pipeline import _holdout_text

    figures = {"images": 3, "cosine": 0.9, "cosine_min": 0.8, "top1_agreement": 0.67}
    held = {
        **figures,
        "top5_overlap": 0.9,
        **judge_holdout({**figures, "top5_overlap": 0.9}, int8_tolerance()),
    }
    text = _holdout_text(held)
    assert "BELOW TOLERANCE" not in text
    assert "not judged: 3 images cannot judge this: a verdict needs at least 10" in text
