"""The precision check on NVIDIA's own recorded engine-inspector JSON (tests/data/
trt-engine-json, from the NVIDIA/TensorRT repository), in TensorRT 10's combined field form
and TensorRT 11's split form, and the double's inspector output against those shapes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vggdeploy.errors import CheckFailedError
from vggdeploy.exporter.engine_checks import check_precision, layer_precision, tensor_format

# precision_bundle(_ro)
pytest_plugins = ("trt_double.fixtures",)

DATA = Path(__file__).parent.parent / "data" / "trt-engine-json"
RECORDED = {
    "resnet-a100-fp32.json": "fp32",
    "resnet-a100-fp16.json": "fp16",
    "resnet-a100-qat.json": "int8",
    "resnet-a100-qat-residual.json": "int8",
    "mobilenet-qat.json": "int8",
}
_DTYPES = ("FP32", "FP16", "Int8", "Half", "Float")


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def split_form(info: dict) -> dict:
    """TensorRT 11's form: "Format/Datatype" becomes "Datatype" (the type token) and
    "Format" (the rest), the two fields Polygraphy 0.53.6 reads."""
    out = copy.deepcopy(info)
    for layer in out["Layers"]:
        for key in ("Inputs", "Outputs"):
            for entry in layer.get(key) or []:
                text = entry.pop("Format/Datatype")
                dtype = next((d for d in _DTYPES if d in text.split()), "")
                entry["Datatype"] = dtype
                entry["Format"] = " ".join(w for w in text.split() if w != dtype)
    return out


def convs_in(info: dict) -> int:
    return sum(
        1
        for layer in info["Layers"]
        if "conv" in layer.get("LayerType", "").lower()
        or layer.get("ParameterType") == "Convolution"
    )


@pytest.mark.parametrize("form", ["combined", "split"])
@pytest.mark.parametrize("name", sorted(RECORDED))
def test_precision_check_passes_nvidia_recorded_engines(name, form):
    info = load(name)
    if form == "split":
        info = split_form(info)
        assert "Format/Datatype" not in json.dumps(info)
    precision = RECORDED[name]
    summary = check_precision(json.dumps(info), precision)
    assert summary["passed"]
    assert summary["by_precision"].get(precision, 0) >= 1
    assert "unknown" not in summary["by_precision"]


@pytest.mark.parametrize("form", ["combined", "split"])
def test_precision_check_refuses_doctored_engine_with_fp32_convolutions(form):
    """resnet-a100-fp16.json with its convolutions' inputs rewritten to FP32: must refuse."""
    info = load("resnet-a100-fp16.json")
    for layer in info["Layers"]:
        if layer.get("ParameterType") == "Convolution":
            layer["Inputs"][0]["Format/Datatype"] = "Channel major FP32 format"
    if form == "split":
        info = split_form(info)
    with pytest.raises(CheckFailedError, match="runs .* in fp32"):
        check_precision(json.dumps(info), "fp16", {"by_precision": {"fp16": convs_in(info)}})


def test_precision_check_attributes_myelin_regions_instead_of_refusing():
    """A conv fused into a Myelin region is not listed: the check says so and passes; a
    listed conv in a type the graph does not give it still fails."""
    info = load("resnet-a100-fp16.json")
    convs = convs_in(info)
    info["Layers"].append({"Name": "{ForeignNode[/features/16/Conv...]}", "LayerType": "Myelin"})
    facts = {"by_precision": {"fp16": convs + 3}}
    summary = check_precision(json.dumps(info), "fp16", facts)
    assert summary["passed"] and summary["note"] == "cannot attribute 1 layers (Myelin)"
    info["Layers"][1]["Inputs"][0]["Format/Datatype"] = "Row major Int8 format"
    with pytest.raises(CheckFailedError, match="int8"):
        check_precision(json.dumps(info), "fp16", facts)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["FP32", "FP16", "Int8", "Half", "Float"]),
    fmt=st.text(alphabet="abcdefghijklmnopqrstuvwxyz %=0123456789", max_size=40),
)
def test_both_field_forms_read_the_same_type(dtype, fmt):
    """Any Format text beside a Datatype: the split form reads as the combined one."""
    combined = layer_precision(tensor_format({"Format/Datatype": f"{fmt} {dtype}"}))
    split = layer_precision(tensor_format({"Datatype": dtype, "Format": fmt}))
    if not any(t in fmt for t in ("int8", "fp8", "bf16", "fp16", "half", "fp32", "float")):
        assert split == combined != "unknown"


@pytest.mark.parametrize("generation", ["10.16", "11.4"])
def test_double_inspector_output_has_the_recorded_shape(generation, precision_bundle, monkeypatch):
    """Tests the double: its layer records carry the fields of NVIDIA's recorded ones, in the
    combined form for 10.x and the split form for 11.x."""
    from trt_double import install

    from vggdeploy.bundle import Bundle
    from vggdeploy.exporter.engine import BuildOptions, build_engine

    trt = install(monkeypatch, generation)
    record = build_engine(Bundle.load(precision_bundle), BuildOptions(precision="fp16"))
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(
        (precision_bundle / record.path).read_bytes()
    )
    ours = json.loads(
        engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    )
    real = load("resnet-a100-fp16.json")
    assert set(ours) == set(real)
    real_conv = next(x for x in real["Layers"] if x.get("ParameterType") == "Convolution")
    our_conv = next(x for x in ours["Layers"] if x.get("ParameterType") == "Convolution")
    shared = {"Name", "LayerType", "Inputs", "Outputs", "ParameterType", "Weights", "TacticName"}
    assert shared <= set(real_conv) and shared <= set(our_conv)
    tensor_keys = set(our_conv["Inputs"][0])
    if generation.startswith("11"):
        assert {"Datatype", "Format"} <= tensor_keys and "Format/Datatype" not in tensor_keys
    else:
        assert set(real_conv["Inputs"][0]) == tensor_keys
    assert record.precision_check["passed"]
