"""verify-endpoint's parts that need no server: URL parsing, the served precision, the likely
cause; and `serve`'s refusals before any server starts."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vggdeploy.cli import main
from vggdeploy.endpoint.client import Endpoint
from vggdeploy.endpoint.diagnose import AS_BUNDLE, label_hypothesis, likely_cause
from vggdeploy.endpoint.verify import precision_of
from vggdeploy.errors import InputError
from vggdeploy.metrics import TOLERANCES


@pytest.mark.parametrize(
    ("url", "protocol", "want"),
    [
        ("http://localhost:8080", None, ("localhost:8080", "http", False)),
        ("grpc://127.0.0.1:8081", None, ("127.0.0.1:8081", "grpc", False)),
        ("127.0.0.1:9000", "grpc", ("127.0.0.1:9000", "grpc", False)),
        ("https://svc.example", None, ("svc.example:443", "http", True)),
        ("http://[::1]:8080/", None, ("[::1]:8080", "http", False)),
    ],
)
def test_urls(url: str, protocol: str | None, want: tuple) -> None:
    e = Endpoint.parse(url, protocol)
    assert (e.address, e.protocol, e.ssl) == want


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_url_text_is_an_endpoint_or_one_input_error(text: str) -> None:
    try:
        e = Endpoint.parse(text)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert e.protocol in ("http", "grpc") and ":" in e.address


@pytest.mark.parametrize(
    ("model", "precision"),
    [("vgg16-fp32", "fp32"), ("vgg16_trt_fp16", "fp16"), ("vgg11_bn-int8", "int8"),
     ("vgg16_onnx_int8", "int8")],
)  # fmt: skip
def test_the_precision_comes_from_the_model_name(model: str, precision: str) -> None:
    assert precision_of(model, None) == precision


def test_a_name_without_precision_needs_precision() -> None:
    with pytest.raises(InputError, match="give --precision"):
        precision_of("classifier", None)
    assert precision_of("classifier", "fp16") == "fp16"


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=st.sampled_from([1, -1]))
def test_a_shifted_label_list_is_named_and_agreement_is_not(seed: int, shift: int) -> None:
    ref = np.random.default_rng(seed).normal(size=(6, 10)).astype(np.float32)
    table = {AS_BUNDLE: ref}
    for s in (1, -1):
        table[label_hypothesis(s)] = np.roll(ref, s, axis=1)
    limits = TOLERANCES["fp32"]
    assert likely_cause(table, np.roll(ref, shift, axis=1), limits) == label_hypothesis(shift)
    # an unrelated answer matches no hypothesis
    other = np.random.default_rng(seed + 1).normal(size=ref.shape).astype(np.float32)
    assert likely_cause(table, other, limits) is None


def _run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0), capsys.readouterr().err


def test_serve_refuses_a_busy_port_and_an_unknown_fault_in_one_line(
    tiny_bundle_ro: Path, capsys, monkeypatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = _run(["serve", str(tiny_bundle_ro), "--port", str(port)], capsys)
    assert code == 1 and f"--port {port}: cannot listen there" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv("VGGDEPLOY_SERVE_TEST_FAULT", "everything")
    code, err = _run(["serve", str(tiny_bundle_ro)], capsys)
    assert code == 1 and "VGGDEPLOY_SERVE_TEST_FAULT='everything'" in err


def test_serve_refuses_a_runtime_the_bundle_cannot_serve(tiny_bundle_ro: Path, capsys) -> None:
    code, err = _run(["serve", str(tiny_bundle_ro), "--runtime", "onnxruntime@int8"], capsys)
    assert code == 1 and "onnx.int8" in err and len(err.strip().splitlines()) == 1
