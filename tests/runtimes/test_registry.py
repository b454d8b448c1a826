"""The one runtime spec grammar, `NAME[:VARIANT...][@PRECISION]`, and what each class declares."""

from __future__ import annotations

import pytest

from vggdeploy.bundle import Bundle
from vggdeploy.errors import InputError
from vggdeploy.runtimes.registry import (
    RuntimeSpec,
    default_validation_specs,
    expand,
    parse_spec,
    parse_specs,
    unavailable,
)


@pytest.mark.parametrize(
    "text, name, variants, precision, kwargs",
    [
        ("torch", "torch", (), None, {"device": "cpu"}),
        ("torch:cpu", "torch", (), None, {"device": "cpu"}),
        (
            "torch:channels-last",
            "torch",
            ("channels-last",),
            None,
            {"device": "cpu", "channels_last": True},
        ),
        (
            "torch:channels-last:cuda@fp16",
            "torch",
            ("cuda", "channels-last"),
            "fp16",
            {"device": "cuda", "channels_last": True, "precision": "fp16"},
        ),
        (
            "onnxruntime:cpu@fp32",
            "onnxruntime",
            (),
            "fp32",
            {"provider": "cpu", "precision": "fp32"},
        ),
        (
            "ort:tensorrt@int8",
            "onnxruntime",
            ("tensorrt",),
            "int8",
            {"provider": "tensorrt", "precision": "int8"},
        ),
        ("tensorrt@int8", "tensorrt", (), "int8", {"precision": "int8"}),
        ("trt:cuda-graphs", "tensorrt", ("cuda-graphs",), None, {"cuda_graphs": True}),
    ],
)
def test_parse_spec(text, name, variants, precision, kwargs) -> None:
    spec = parse_spec(text)
    assert (spec.name, spec.variants, spec.precision) == (name, variants, precision)
    assert spec.kwargs() == kwargs
    assert parse_spec(spec.text) == spec  # the canonical text parses back to itself


@pytest.mark.parametrize(
    "text, needle",
    [
        ("caffe", "unknown runtime 'caffe'"),
        ("torch:gpu", "torch has no variant 'gpu'"),
        ("torch:cpu:cuda", "choose one of cpu / cuda, not both"),
        ("onnxruntime:cpu:cpu", "repeats a variant"),
        (
            "torch@int8",
            "torch runs fp32, fp16, not int8 (INT8 runs in onnxruntime, openvino or tensorrt)",
        ),
        ("tensorrt@int8-u8", "unknown precision 'int8-u8'"),  # one INT8 file
        ("onnxruntime@fp64", "unknown precision 'fp64'"),
        ("onnxruntime@", "name a precision after '@'"),
        ("tensorrt:cuda", "tensorrt has no variant 'cuda'"),
    ],
)
def test_bad_specs_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(InputError, match=None) as exc:
        parse_spec(text)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_precision_argument_applies_only_without_at() -> None:
    assert parse_spec("onnxruntime", precision="int8").precision == "int8"
    assert parse_spec("onnxruntime@fp16", precision="int8").precision == "fp16"
    assert parse_specs(["torch,onnxruntime@fp32", "tensorrt@int8"]) == [
        RuntimeSpec("torch"),
        RuntimeSpec("onnxruntime", (), "fp32"),
        RuntimeSpec("tensorrt", (), "int8"),
    ]


def test_specs_against_a_bundle(tiny_bundle_ro) -> None:
    bundle = Bundle.load(tiny_bundle_ro)
    assert default_validation_specs(bundle) == [RuntimeSpec("onnxruntime", (), "fp32")]
    assert expand(bundle, [parse_spec("torch:channels-last")]) == [
        RuntimeSpec("torch", ("channels-last",), "fp32")
    ]
    assert unavailable(parse_spec("onnxruntime@fp32"), bundle) is None
    assert "no onnx.int8 artifact" in unavailable(parse_spec("onnxruntime@int8"), bundle)
    assert "vggdeploy calibrate" in unavailable(parse_spec("onnxruntime@int8"), bundle)
    assert "runs the PyTorch model in fp32 only" in unavailable(parse_spec("torch@fp16"), bundle)
    assert unavailable(parse_spec("torch:channels-last@fp32"), bundle) is None
