"""`package --format kserve`: the manifests load into the KServe SDK's own models, the Triton
image is the one the table gives for the engines' TensorRT, and what cannot be served is
refused in one line. (No cluster and no Triton here: what is checked is the manifests.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging_helpers import run_cli

from vggdeploy.bundle import Bundle
from vggdeploy.errors import CheckFailedError
from vggdeploy.packaging.kserve import TRITON_RELEASES, sdk_check, triton_release

# Looked up, not imported: kserve and tritonclient.grpc cannot share a process (their gRPC
# messages clash in protobuf's default pool), and other tests here import tritonclient.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("the serve extra (kserve) is not installed", allow_module_level=True)

_PROBE = """
import json, sys
from vggdeploy.packaging.kserve_sdk import load
obj, _ = load(json.load(sys.stdin), sys.argv[1])
out = {"type": type(obj).__name__}
for expr in sys.argv[2:]:
    value = eval("obj." + expr)
    out[expr] = value if isinstance(value, (str, int, list, dict, type(None))) else repr(value)
print(json.dumps(out))
"""


def add_engine(root: Path, precision: str, trt: str, gpu: str | None, cc: str = "9.0") -> None:
    """An engine recorded the way `vggdeploy build` records one (the bytes are not a plan:
    nothing here runs it)."""
    name = f"model.{precision}.engine"
    (root / name).write_bytes(f"plan {precision} {trt} {gpu}".encode())
    shape = [[1, 3, 32, 32], [8, 3, 32, 32], [16, 3, 32, 32]]
    Bundle.load(root).add_artifact(
        f"engine.{precision}",
        name,
        kind="tensorrt-engine",
        precision=precision,
        tensorrt_version=trt,
        gpu={"name": gpu, "compute_capability": cc, "jetson": False},
        profiles=[{"input": dict(zip(("min", "opt", "max"), shape))}],
    )


def package(bundle: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        ["package", str(bundle), "--format", "kserve", "--out", str(out),
         "--storage-uri", "s3://models/vgg11", *extra],
        capsys,
    )  # fmt: skip


def load_sdk(path: Path, klass: str, *attrs: str) -> dict:
    """The written YAML loaded into the KServe SDK model `klass` (by the SDK's deserializer,
    in a child process): its type name and the attributes `attrs` of the typed object."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, klass, *attrs],
        input=json.dumps(yaml.safe_load(path.read_text())),
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)


def test_manifests_load_into_the_sdk_models_with_the_image_the_table_gives(
    tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    add_engine(tiny_bundle, "fp16", "10.8.0.43", "NVIDIA H200")
    code, out, err = package(tiny_bundle, tmp_path / "k", capsys)
    assert code == 0, err
    runtime = load_sdk(
        tmp_path / "k" / "servingruntime.yaml", "V1alpha1ServingRuntime",
        "spec.containers[0].image", "spec.containers[0].resources.limits", "metadata.name",
    )  # fmt: skip
    isvc = load_sdk(
        tmp_path / "k" / "inferenceservice.yaml", "V1beta1InferenceService",
        "spec.predictor.node_selector", "spec.predictor.model.runtime",
        "spec.predictor.model.storage_uri", "spec.predictor.model.resources.limits",
    )  # fmt: skip
    assert runtime["type"] == "V1alpha1ServingRuntime"
    assert isvc["type"] == "V1beta1InferenceService"
    assert runtime["spec.containers[0].image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
    assert runtime["spec.containers[0].resources.limits"] == {"nvidia.com/gpu": "1"}
    assert isvc["spec.predictor.node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert isvc["spec.predictor.model.runtime"] == runtime["metadata.name"]
    assert isvc["spec.predictor.model.storage_uri"] == "s3://models/vgg11"
    assert isvc["spec.predictor.model.resources.limits"] == {"nvidia.com/gpu": "1"}
    assert (tmp_path / "k" / "repository" / "vgg11_bn_trt_fp16" / "config.pbtxt").is_file()
    assert not (tmp_path / "k" / "repository" / "vgg11_bn_onnx_fp32").exists()
    assert "nvcr.io/nvidia/tritonserver:25.01-py3 (TensorRT 10.8.0.43" in out


@settings(max_examples=40, deadline=None)
@given(row=st.sampled_from(TRITON_RELEASES), build=st.integers(0, 999))
def test_every_tensorrt_of_the_table_maps_to_its_release(row: tuple[str, str], build: int) -> None:
    version, release = row
    assert triton_release(f"{version}.{build}") == release
    major, minor, patch = version.split(".")
    assert triton_release(f"{major}.{minor}.{int(patch) + 1}.{build}") is None


def test_json_says_what_was_written(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    add_engine(tiny_bundle, "fp16", "10.7.0.23", "NVIDIA A100-SXM4-80GB")
    code, out, _ = package(tiny_bundle, tmp_path / "k", capsys, "--json", "-", "--gpus", "2")
    assert code == 0
    data = json.loads(out)
    assert data["triton_image"] == "nvcr.io/nvidia/tritonserver:24.12-py3"
    assert data["scheduling"] == {
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    }
    isvc = yaml.safe_load((tmp_path / "k" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_engines_of_two_gpus_get_node_affinity_on_both(
    tiny_bundle: Path, tmp_path: Path, capsys
) -> None:
    add_engine(tiny_bundle, "fp16", "10.5.0.18", "NVIDIA L4", "8.9")
    add_engine(tiny_bundle, "int8", "10.5.0.18", "NVIDIA H100 80GB HBM3", "9.0")
    code, _, err = package(tiny_bundle, tmp_path / "k", capsys)
    assert code == 0, err
    expr = (
        "spec.predictor.affinity.node_affinity.required_during_scheduling_ignored_during_execution"
        ".node_selector_terms[0].match_expressions[0]"
    )
    isvc = load_sdk(
        tmp_path / "k" / "inferenceservice.yaml", "V1beta1InferenceService",
        f"{expr}.key", f"{expr}.operator", f"{expr}.values",
    )  # fmt: skip
    assert (isvc[f"{expr}.key"], isvc[f"{expr}.operator"]) == ("nvidia.com/gpu.product", "In")
    assert isvc[f"{expr}.values"] == ["NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"]


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        (lambda b: None, "has no TensorRT engine: --format kserve serves engines"),
        (lambda b: add_engine(b, "fp16", "10.16.1.11", "NVIDIA H200"),
         "no Triton release in vggdeploy's table ships TensorRT 10.16.1.11"),
        (lambda b: (add_engine(b, "fp16", "10.8.0.43", "NVIDIA H200"),
                    add_engine(b, "int8", "10.7.0.23", "NVIDIA H200")),
         "one Triton image runs one TensorRT"),
    ],
)  # fmt: skip
def test_what_cannot_be_served_is_refused_in_one_line(
    tiny_bundle: Path, tmp_path: Path, capsys, setup, says: str
) -> None:
    setup(tiny_bundle)
    code, _, err = package(tiny_bundle, tmp_path / "k", capsys)
    assert code != 0
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "k").exists()


def test_kserve_flags_are_refused_for_other_formats(tiny_bundle: Path, tmp_path: Path, capsys):
    code, _, err = run_cli(
        ["package", str(tiny_bundle), "--out", str(tmp_path / "t"), "--storage-uri", "s3://x/y"],
        capsys,
    )
    assert code != 0 and "--storage-uri: only for --format kserve" in err


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("spec", "predictor", "modle"), {"runtime": "x"}, "does not keep spec.predictor.modle"),
        (("spec", "containers"), "not a list", "refuses the InferenceService"),
    ],
)
def test_the_sdk_round_trip_catches_a_field_the_models_do_not_have(path, value, says) -> None:
    """The check itself: a misspelt field or a wrong type does not pass."""
    doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
           "metadata": {"name": "x"}, "spec": {"predictor": {}}}  # fmt: skip
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    klass = "V1beta1InferenceService" if path[1] == "predictor" else "V1alpha1ServingRuntime"
    with pytest.raises(CheckFailedError, match=says):
        sdk_check(doc, klass)
