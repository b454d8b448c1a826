"""`vggdeploy serve` (KServe's real model server) checked by `vggdeploy verify-endpoint`
(tritonclient, HTTP and gRPC), and the server's answers to bad requests.

Everything here is real: the server is `vggdeploy serve` in a subprocess on free loopback
ports, the protocol is KServe's and tritonclient's own code; nothing of the protocol is mocked.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Only looked up, never imported here: kserve and tritonclient.grpc register the same protobuf
# messages ('inference.ServerLiveRequest'...) in protobuf's default pool, so one process cannot
# import both; the server runs in its own process anyway.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("the serve extra (kserve) is not installed", allow_module_level=True)
pytest.importorskip("tritonclient.http", reason="tritonclient[http,grpc] is not installed")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[http,grpc] is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from serving_helpers import Server, running_server  # noqa: E402

from vggdeploy.cli import main  # noqa: E402

MODEL = "vgg11_bn-fp32"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vggdeploy.inputs import synthetic_images

    return synthetic_images(tmp_path_factory.mktemp("imgs"), count=6, size=48)


@pytest.fixture(scope="module")
def server(tiny_bundle_ro: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tiny_bundle_ro, tmp_path_factory.mktemp("log") / "serve.log") as s:
        yield s


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    with pytest.raises(SystemExit) as exc:
        main(["verify-endpoint", *args, "--json", "-"])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), json.loads(out), err


# -- agreement ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("send", ["images", "tensors"])
def test_verify_endpoint_passes_against_the_bundle_it_serves(
    server: Server, tiny_bundle_ro: Path, images: Path, protocol: str, send: str, capsys
) -> None:
    url = server.url if protocol == "http" else server.grpc_url
    code, report, _ = verify(
        capsys, url, "--bundle", str(tiny_bundle_ro), "--images", str(images), "--send", send,
        "--concurrency", "1,3", "--requests", "9",
    )  # fmt: skip
    assert code == 0, report
    (model,) = report["models"]
    assert model["model"] == MODEL and model["send"] == send and model["agrees"]
    assert model["metrics"]["cosine"] > 0.9999 and model["likely_cause"] is None
    assert [load["concurrency"] for load in model["loads"]] == [1, 3]
    for load in model["loads"]:
        assert load["requests"] == load["answered"] == load["agreed"] == 9 and load["lost"] == 0
        assert {"median", "p95", "p99"} <= set(load["latency_ms"])
    assert set(model["local_end_to_end"]["median_ms"]) >= {"decode", "preprocess", "infer"}


@pytest.mark.parametrize(
    ("fault", "protocol", "cause"),
    [
        ("swap-channels", "http", "channel order swapped"),
        ("no-normalization", "grpc", "normalization missing (pixels scaled to 0..1"),
        ("shift-labels", "http", "labels shifted by +1"),
    ],
)
def test_a_server_with_wrong_preprocessing_fails_with_the_cause_named(
    tiny_bundle_ro: Path, images: Path, tmp_path: Path, fault: str, protocol: str, cause: str,
    capsys,
) -> None:  # fmt: skip
    with running_server(tiny_bundle_ro, tmp_path / "serve.log", fault=fault) as s:
        url = s.url if protocol == "http" else s.grpc_url
        code, report, _ = verify(
            capsys, url, "--bundle", str(tiny_bundle_ro), "--images", str(images),
            "--requests", "3",
        )  # fmt: skip
        with pytest.raises(SystemExit) as text_exit:
            main(["verify-endpoint", url, "--bundle", str(tiny_bundle_ro),
                  "--images", str(images), "--requests", "3"])  # fmt: skip
        text = capsys.readouterr().out
    assert text_exit.value.code == 2
    assert f"likely cause: {cause}" in text and "DISAGREES with" in text
    assert text.rstrip().endswith(f"FAILED: {MODEL}")
    assert code == 2
    (model,) = report["models"]
    assert not model["agrees"] and not report["passed"]
    assert model["likely_cause"].startswith(cause), model["likely_cause"]
    # the answers of the load levels are judged too (together, by validate's rule), and fail
    assert all(not load["passed"] and load["answered"] == 3 for load in model["loads"])
    assert all(not all(c["passed"] for c in load["checks"]) for load in model["loads"])


def test_the_text_report_names_the_verdict(
    server: Server, tiny_bundle_ro: Path, images: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["verify-endpoint", server.url, "--bundle", str(tiny_bundle_ro),
              "--images", str(images), "--requests", "2"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert exc.value.code in (0, None)
    assert f"{MODEL} (fp32, sent as images" in out and "agrees with" in out
    assert out.rstrip().endswith(
        "PASSED: the answers agree with the bundle within validate's tolerances and none was lost"
    )


def test_an_unknown_model_and_a_dead_server_are_one_line_each(
    server: Server, tiny_bundle_ro: Path, images: Path, capsys
) -> None:
    from serving_helpers import free_port

    base = ["--bundle", str(tiny_bundle_ro), "--images", str(images)]
    with pytest.raises(SystemExit) as exc:
        main(["verify-endpoint", server.url, *base, "--model", "nope-fp32"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "model 'nope-fp32' is not ready" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["verify-endpoint", f"http://127.0.0.1:{free_port()}", *base])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error: http://127.0.0.1:")
    assert "Traceback" not in err


# -- concurrency, independently of verify-endpoint's own counting ----------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_n_clients_get_every_answer_right_and_none_is_lost(
    server: Server, tiny_bundle_ro: Path, protocol: str
) -> None:
    from vggdeploy.bundle import Bundle
    from vggdeploy.inputs import InputSet
    from vggdeploy.runtimes.registry import RuntimeSpec, open_runtime
    from vggdeploy.validate import run_inputs

    bundle = Bundle.load(tiny_bundle_ro)
    inputs = InputSet.random(bundle, samples=8, batch=8, seed=3)
    x = next(iter(inputs.batches()))
    with open_runtime(bundle, RuntimeSpec("onnxruntime", (), "fp32")) as rt:
        expected = run_inputs(rt, inputs)
    clients, per_client = 4, 10
    answers: dict[tuple[int, int], np.ndarray] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        if protocol == "http":
            import tritonclient.http as tc

            conn = tc.InferenceServerClient(f"127.0.0.1:{server.http}")
        else:
            import tritonclient.grpc as tc

            conn = tc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
        for r in range(per_client):
            k = (c * per_client + r) % len(x)
            tensor = tc.InferInput("input", [1, 3, 32, 32], "FP32")
            tensor.set_data_from_numpy(x[k : k + 1])
            try:
                out = conn.infer(MODEL, [tensor]).as_numpy("logits")
            except Exception as exc:  # counted as lost
                with lock:
                    failures.append(f"{c}/{r}: {exc}")
                continue
            with lock:
                answers[(c, r)] = out

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    assert len(answers) == clients * per_client  # none lost
    for (c, r), out in answers.items():
        k = (c * per_client + r) % len(x)
        np.testing.assert_allclose(out[0], expected[k], rtol=1e-4, atol=1e-5)


# -- bad input: a protocol error, and the server keeps serving --------------------------------


def _post(server: Server, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/v2/models/{MODEL}/infer", data=body, method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _still_serves(server: Server) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
                        "data": [0.0] * (3 * 32 * 32)}]}  # fmt: skip
    status, text = _post(server, json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert status == 200, text
    assert len(json.loads(text)["outputs"][0]["data"]) == 10


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ([{"name": "input", "datatype": "FP32", "shape": [1, 3, 31, 32], "data": [0.0] * 2976}],
         "must have shape [N, 3, 32, 32]"),
        ([{"name": "input", "datatype": "INT32", "shape": [1, 3, 32, 32], "data": [0] * 3072}],
         "must be FP32, got INT32"),
        ([{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 5}],
         "does not fit its shape"),
        ([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not an image"]}],
         "image 0: not an image Pillow can read"),
        ([{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.0]}],
         "unknown input 'pixels'"),
        ([], "send exactly one input"),
    ],
)  # fmt: skip
def test_a_bad_request_gets_a_400_and_the_server_keeps_serving(
    server: Server, inputs: list, says: str
) -> None:
    status, text = _post(
        server, json.dumps({"inputs": inputs}).encode(), {"Content-Type": "application/json"}
    )
    assert status == 400, text
    assert says in text
    _still_serves(server)


def test_a_100_mb_body_gets_a_protocol_error_and_the_server_keeps_serving(server: Server) -> None:
    garbage = np.random.default_rng(0).bytes(100 << 20)
    status, text = _post(server, garbage, {"Content-Type": "application/json"})
    assert 400 <= status < 500, (status, text[:200])
    # a well-formed 100 MB tensor of the wrong shape: refused by the model's own check
    rows = (100 << 20) // (3 * 32 * 32 * 4)
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                     "shape": [rows, 3, 32, 32],
                                     "parameters": {"binary_data_size": rows * 3 * 32 * 32 * 4}}]})  # fmt: skip
    body = header.encode() + np.zeros(rows * 3 * 32 * 32, np.float32).tobytes()
    status, text = _post(
        server,
        body,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length":
         str(len(header))},
    )  # fmt: skip
    assert status == 400, text[:300]
    assert "a request carries 1 to 64 rows" in text
    _still_serves(server)


def test_grpc_bad_requests_get_invalid_argument_and_the_server_keeps_serving(
    server: Server,
) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    conn = tc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    wrong = tc.InferInput("input", [1, 3, 16, 16], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(InferenceServerException) as exc:
        conn.infer(MODEL, [wrong])
    assert "INVALID_ARGUMENT" in str(exc.value.status()) and "must have shape" in str(exc.value)
    huge = tc.InferInput("input", [900, 3, 32, 32], "FP32")  # 11 MB, over gRPC's default limit
    huge.set_data_from_numpy(np.zeros((900, 3, 32, 32), np.float32))
    with pytest.raises(InferenceServerException) as exc:
        conn.infer(MODEL, [huge])
    ok = tc.InferInput("input", [1, 3, 32, 32], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    assert conn.infer(MODEL, [ok]).as_numpy("logits").shape == (1, 10)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(min_size=1, max_size=4096))
def test_garbage_image_bytes_get_a_400_over_grpc_and_http(server: Server, blob: bytes) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    conn = tc.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    tensor = tc.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([blob], dtype=np.object_))
    try:
        out = conn.infer(MODEL, [tensor]).as_numpy("logits")
    except InferenceServerException as exc:
        assert "INVALID_ARGUMENT" in str(exc.status()), exc
    else:  # Hypothesis found bytes that are a real image: then it is answered properly
        assert out.shape == (1, 10)
    ok = tc.InferInput("input", [1, 3, 32, 32], "FP32")
    ok.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    assert conn.infer(MODEL, [ok]).as_numpy("logits").shape == (1, 10)


# -- the protocol's health and metadata -------------------------------------------------------


def test_health_readiness_and_metadata_declare_both_inputs(server: Server) -> None:
    import urllib.request

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as r:
            assert r.status == 200
            return json.loads(r.read() or b"{}")

    get("/v2/health/live")
    assert get("/v2/health/ready")["ready"] is True
    assert get(f"/v2/models/{MODEL}/ready")["ready"] is True
    meta = get(f"/v2/models/{MODEL}")
    assert meta["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
