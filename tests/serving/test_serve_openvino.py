"""`vggdeploy serve --runtime openvino@...`: KServe's real model server with OpenVINO (for real,
on the CPU) behind it, checked by `vggdeploy verify-endpoint` with OpenVINO as the local
runtime too."""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from pathlib import Path

import pytest

if importlib.util.find_spec("kserve") is None:
    pytest.skip("the serve extra (kserve) is not installed", allow_module_level=True)
if importlib.util.find_spec("openvino") is None:
    pytest.skip("OpenVINO is not installed", allow_module_level=True)
pytest.importorskip("tritonclient.http", reason="tritonclient[http,grpc] is not installed")

from serving_helpers import running_server  # noqa: E402

from vggdeploy.cli import main  # noqa: E402

pytest_plugins = ("trt_double.fixtures",)  # precision_bundle_ro: fp32, fp16 and int8 ONNX


def test_serve_runs_openvino_fp32_and_int8(precision_bundle_ro: Path, tmp_path: Path, capsys):
    from vggdeploy.inputs import synthetic_images

    images = synthetic_images(tmp_path / "imgs", count=4, size=48)
    log = tmp_path / "serve.log"
    args = ("--runtime", "openvino@fp32,openvino@int8")
    with running_server(precision_bundle_ro, log, args=args) as server:
        text = log.read_text()
        assert "serving vgg11_bn-fp32: openvino[cpu] fp32" in text, text
        assert "serving vgg11_bn-int8: openvino[cpu] int8" in text, text
        with urllib.request.urlopen(f"{server.url}/v2/models/vgg11_bn-int8/ready") as r:
            assert r.status == 200
        with pytest.raises(SystemExit) as exc:
            main(
                ["verify-endpoint", server.url, "--bundle", str(precision_bundle_ro)]
                + ["--images", str(images), "--model", "vgg11_bn-fp32", "--requests", "4"]
                + ["--local-runtime", "openvino@fp32", "--json", "-"]
            )
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert exc.value.code in (0, None), err
    (model,) = report["models"]
    assert model["agrees"] and model["metrics"]["cosine"] > 0.9999
    assert model["local_end_to_end"]["median_ms"]["infer"] > 0
    assert model["local_end_to_end"]["runtime"] == "openvino[cpu] fp32"
