"""Issue 18, cause 10: manifest parsing gaps, tried with generated input.

A NUL byte in any path, very deep nesting (in unknown fields too), absurd image sizes and
duplicate keys each end in one `BundleError` line; nothing reaches a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vggdeploy.errors import BundleError
from vggdeploy.records import MAX_IMAGE_SIDE, MAX_JSON_DEPTH, manifest_from_data, parse_json

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def good(tiny_bundle_ro: Path) -> dict:
    return json.loads((tiny_bundle_ro / "manifest.json").read_text())


def _load(text: str) -> None:
    manifest_from_data(parse_json(text, "manifest.json"), "manifest.json")


def _refused(text: str) -> str:
    with pytest.raises(BundleError) as exc:
        _load(text)
    message = str(exc.value)
    assert "\n" not in message
    return message


@SETTINGS
@given(
    before=st.text(max_size=8),
    after=st.text(max_size=8),
    field=st.sampled_from(["labels", "artifact"]),
)
def test_a_nul_byte_in_any_path_is_refused(good: dict, before: str, after: str, field: str) -> None:
    data = json.loads(json.dumps(good))
    path = f"{before}\0{after}"
    if field == "labels":
        data["labels"] = path
    else:
        data["artifacts"]["onnx.fp32"]["path"] = path
    assert "NUL byte" in _refused(json.dumps(data))


@SETTINGS
@given(depth=st.integers(MAX_JSON_DEPTH + 1, 200_000), kind=st.sampled_from(["[]", "{}"]))
def test_deep_nesting_in_an_unknown_field_is_refused(good: dict, depth: int, kind: str) -> None:
    body = json.dumps(good)[:-1]
    if kind == "[]":
        deep = "[" * depth + "]" * depth
    else:
        deep = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    message = _refused(body + f', "x_extra": {deep}}}')
    assert "nests" in message


def test_the_regression_case_of_a_million_brackets(good: dict) -> None:
    body = json.dumps(good)[:-1]
    assert "nests" in _refused(body + ', "x": ' + "[" * 1_000_000 + "]" * 1_000_000 + "}")


@SETTINGS
@given(
    field=st.sampled_from(
        [("preprocessing", "resize"), ("preprocessing", "crop"), ("model", "image_size")]
    ),
    size=st.integers(MAX_IMAGE_SIDE + 1, 2**62),
)
def test_absurd_image_sizes_are_refused(good: dict, field: tuple[str, str], size: int) -> None:
    data = json.loads(json.dumps(good))
    data[field[0]][field[1]] = size
    assert f"field {field[0]}.{field[1]}" in _refused(json.dumps(data))


@SETTINGS
@given(
    where=st.sampled_from(["", "model", "preprocessing", "weights"]),
    key=st.sampled_from(["name", "crop", "labels", "x_unknown"]),
)
def test_duplicate_keys_are_refused(good: dict, where: str, key: str) -> None:
    text = json.dumps(good)
    # repeat a key inside the chosen object: the first one would silently lose today
    anchor = f'"{where}": {{' if where else "{"
    text = text.replace(anchor, anchor + f'"{key}": 1, "{key}": 2, ', 1)
    assert "appears twice" in _refused(text)


def test_the_regression_case_two_names(good: dict) -> None:
    text = json.dumps(good).replace('"model": {', '"model": {"name": "evil", ', 1)
    assert "'name' appears twice" in _refused(text)


def test_brackets_inside_strings_do_not_count_as_nesting(good: dict) -> None:
    data = json.loads(json.dumps(good))
    data["note"] = "[" * 1000 + '\\"{' * 100
    _load(json.dumps(data))  # accepted


@SETTINGS
@given(name=st.text(max_size=40) | st.text(min_size=129, max_size=140))
def test_a_model_name_loads_only_when_it_is_printable(good: dict, name: str) -> None:
    # the name becomes file names, Triton model names and a DeepStream config line
    data = json.loads(json.dumps(good))
    data["model"]["name"] = name
    if 1 <= len(name) <= 128 and name.isprintable():
        _load(json.dumps(data))
    else:
        assert "model.name" in _refused(json.dumps(data))
