"""Serve a bundle over the Open Inference Protocol (KServe v2) with KServe's Python model server.

`vggdeploy serve BUNDLE` puts one model per precision behind `kserve.ModelServer`: HTTP/REST
and gRPC, health (`/v2/health/live`, `/v2/health/ready`), per-model readiness and metadata, and
`/v2/models/<name>/infer`, all KServe's own code (kserve/protocol/rest/v2_endpoints.py and
kserve/protocol/grpc/servicer.py in the `kserve` package); this module only answers `predict`.
Behind it is the bundle's own runtime (`vggdeploy.runtimes`, the same spec grammar as every
command), so the service runs what `validate` checked.

Each model takes either input, declared in its metadata:
- the bundle's input tensor (e.g. `input`): FP32, [N, 3, H, W], already preprocessed as the
  bundle says (what a Triton model repository written by `package --format triton` takes);
- `image`: BYTES, [N], encoded image files (or their base64 text, which is what crosses
  KServe's REST decoder: see `_unbase64`); the bundle's preprocessing (`preprocess.py`) runs
  on the server.
and answers the bundle's output tensor (e.g. `logits`), FP32 [N, classes].

Models are named `<model>-<precision>` (`vgg16-fp32`, `vgg16-int8`; dots in the model name
become `_`), one per precision served.

Bad requests (wrong input name, shape or datatype, undecodable image bytes, too large a batch)
raise KServe's `InvalidInput`, which KServe answers with HTTP 400 / gRPC INVALID_ARGUMENT
(kserve/errors.py `invalid_input_handler`, kserve/protocol/grpc/interceptors.py); the server
keeps serving.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vggdeploy.errors import InputError
from vggdeploy.host import install_hint

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle
    from vggdeploy.preprocess import Preprocessing
    from vggdeploy.runtimes.base import Runtime
    from vggdeploy.runtimes.registry import RuntimeSpec

#: the name of the encoded-image input every served model declares
IMAGE_INPUT = "image"
#: the most images or tensor rows one request may carry
MAX_REQUEST_BATCH = 64
#: TEST ONLY: a deliberate preprocessing fault for the tests of `verify-endpoint`'s diagnosis.
#: Never set it in a deployment; `vggdeploy serve` prints a warning line when it is set.
FAULT_ENV = "VGGDEPLOY_SERVE_TEST_FAULT"
FAULTS = ("swap-channels", "no-normalization", "double-normalization", "shift-labels")


def served_name(bundle: Bundle, precision: str) -> str:
    """The served model of `precision`: `<model>-<precision>` (`vgg16-fp32`)."""
    return f"{bundle.manifest.model.name.replace('.', '_')}-{precision}"


def fault_from_env() -> str | None:
    """The fault named by `FAULT_ENV`, or None; an unknown name is refused."""
    fault = os.environ.get(FAULT_ENV) or None
    if fault is not None and fault not in FAULTS:
        raise InputError(f"{FAULT_ENV}={fault!r}: use one of {', '.join(FAULTS)}, or unset it")
    return fault


class RequestError(InputError):
    """A request the model cannot answer (reported to the client as invalid input)."""


@dataclass
class ServedModel:
    """One precision of the bundle behind one model name: checks a request's tensor, runs the
    bundle's preprocessing on image bytes, and the loaded runtime on the batch."""

    name: str
    spec: RuntimeSpec
    runtime: Runtime  # loaded
    pre: Preprocessing
    num_classes: int
    fault: str | None = None

    @property
    def tensor_input(self) -> str:
        return self.runtime.inputs[0].name

    @property
    def output(self) -> str:
        return self.runtime.outputs[0].name

    def input_types(self) -> list[dict[str, Any]]:
        crop = self.pre.crop
        return [
            {"name": self.tensor_input, "datatype": "FP32", "shape": [-1, 3, crop, crop]},
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
        ]

    def output_types(self) -> list[dict[str, Any]]:
        return [{"name": self.output, "datatype": "FP32", "shape": [-1, self.num_classes]}]

    def answer(self, name: str, datatype: str, get_array: Any) -> np.ndarray:
        """The logits for one request input `name` of `datatype`; `get_array()` decodes its
        data (called only once the name and datatype are known good)."""
        expected = {t["name"]: t["datatype"] for t in self.input_types()}
        if name not in expected:
            raise RequestError(
                f"unknown input {name!r}: send {self.tensor_input!r} (FP32 [N,3,"
                f"{self.pre.crop},{self.pre.crop}], preprocessed) or {IMAGE_INPUT!r} (BYTES [N], "
                "encoded images)"
            )
        if datatype != expected[name]:
            raise RequestError(f"input {name!r} must be {expected[name]}, got {datatype}")
        try:
            array = np.asarray(get_array())
        except (ValueError, TypeError) as exc:
            raise RequestError(f"input {name!r}: data does not fit its shape ({exc})") from None
        batch = array.shape[0] if array.ndim else 0
        if not 1 <= batch <= MAX_REQUEST_BATCH:
            raise RequestError(
                f"input {name!r}: a request carries 1 to {MAX_REQUEST_BATCH} rows, got shape "
                f"{list(array.shape)}"
            )
        if name == IMAGE_INPUT:
            if array.ndim != 1:
                raise RequestError(f"input {name!r} must have shape [N], got {list(array.shape)}")
            x = np.stack([self._preprocess(item, i) for i, item in enumerate(array)])
        else:
            x = self._check_tensor(array)
        return self._run(x)

    def _check_tensor(self, array: np.ndarray) -> np.ndarray:
        want = (3, self.pre.crop, self.pre.crop)
        if array.ndim != 4 or tuple(array.shape[1:]) != want:
            raise RequestError(
                f"input {self.tensor_input!r} must have shape [N, {', '.join(map(str, want))}], "
                f"got {list(array.shape)}"
            )
        x = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(x).all():
            raise RequestError(f"input {self.tensor_input!r} has NaN or infinite values")
        if self.fault == "swap-channels":
            x = np.ascontiguousarray(x[:, ::-1])
        return x

    def _preprocess(self, item: Any, index: int) -> np.ndarray:
        from vggdeploy.preprocess import decode_image

        data = item.encode("utf-8") if isinstance(item, str) else item
        if not isinstance(data, bytes) or not data:
            raise RequestError(f"image {index}: empty or not bytes")
        data = _unbase64(data)
        try:
            img = decode_image(io.BytesIO(data), f"image {index}", self.pre.resize)
            return faulty_preprocess(img, self.pre, self.fault)
        except RequestError:
            raise
        except InputError as exc:
            raise RequestError(str(exc)) from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        from vggdeploy.runtimes.base import infer_array

        out = infer_array(self.runtime, x)
        if self.fault == "shift-labels":
            out = np.roll(out, 1, axis=1)
        return out


def _unbase64(data: bytes) -> bytes:
    """The image file in `data`: `data` itself, or its base64 decoding when `data` is base64
    text. Over HTTP, KServe's REST decoder turns a BYTES input into UTF-8 strings (binary
    inputs included: kserve/protocol/infer_type.py, `InferRequest.from_bytes` calls
    `set_data_from_numpy(..., binary_data=False)`, which refuses non-UTF-8 bytes), so an image
    file cannot cross it raw; its base64 text can. Every image format has bytes outside the
    base64 alphabet in its header (PNG 0x89, JPEG 0xFF 0xD8), so the two cannot be confused."""
    import base64
    import binascii

    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return data


def faulty_preprocess(img: Any, pre: Preprocessing, fault: str | None) -> np.ndarray:
    """The bundle's preprocessing of one image, or (tests only) the named fault's version."""
    import dataclasses

    from vggdeploy.preprocess import preprocess_image

    if fault == "swap-channels":
        flipped = "BGR" if pre.channel_order == "RGB" else "RGB"
        return preprocess_image(img, dataclasses.replace(pre, channel_order=flipped))
    if fault == "no-normalization":
        return preprocess_image(img, dataclasses.replace(pre, mean=(0.0,) * 3, std=(1.0,) * 3))
    x = preprocess_image(img, pre)
    if fault == "double-normalization":
        mean = np.asarray(pre.mean, np.float32)[:, None, None]
        std = np.asarray(pre.std, np.float32)[:, None, None]
        if pre.channel_order == "BGR":
            mean, std = mean[::-1], std[::-1]
        x = (x - mean) / std
    return x


def open_served(bundle: Bundle, spec_texts: Sequence[str]) -> list[tuple[str, RuntimeSpec]]:
    """(model name, runtime spec) for each precision served: every spec expanded over the
    bundle's precisions for it (`registry.expand`); default `onnxruntime` (every ONNX file).
    Two specs for one precision are refused (one model per precision)."""
    from vggdeploy.runtimes.registry import expand, parse_spec, unavailable

    specs = expand(bundle, [parse_spec(t) for t in spec_texts or ["onnxruntime"]])
    served: dict[str, RuntimeSpec] = {}
    for spec in specs:
        name = served_name(bundle, spec.precision or "fp32")
        if name in served:
            raise InputError(
                f"--runtime {served[name].text} and {spec.text} both serve {spec.precision}: "
                "serve one runtime per precision (one model per precision)"
            )
        if reason := unavailable(spec, bundle):
            raise InputError(f"--runtime {spec.text}: {reason}")
        served[name] = spec
    return list(served.items())


def import_kserve() -> Any:
    """The `kserve` package. Its model_server module parses `sys.argv` when imported
    (`parser.parse_known_args()` at module level), so it is imported with our own command line
    hidden from it; it then takes its defaults, and our options are passed explicitly."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
    except ImportError:
        raise InputError(
            "`vggdeploy serve` needs KServe's model server: " + install_hint("kserve")
        ) from None
    finally:
        sys.argv = saved
    return kserve


def kserve_model(kserve: Any, served: ServedModel) -> Any:
    """A `kserve.Model` answering Open Inference Protocol requests with `served`."""
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class BundleModel(kserve.Model):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__(served.name)
            self.ready = True

        def load(self) -> bool:
            self.ready = True
            return True

        def get_input_types(self) -> list[dict[str, Any]]:
            return served.input_types()

        def get_output_types(self) -> list[dict[str, Any]]:
            return served.output_types()

        def predict(self, payload: Any, headers: Any = None) -> Any:
            if not isinstance(payload, InferRequest):
                raise InvalidInput("send an Open Inference Protocol (v2) request")
            if len(payload.inputs) != 1:
                raise InvalidInput(
                    f"send exactly one input ({served.tensor_input!r} or {IMAGE_INPUT!r}), got "
                    f"{len(payload.inputs)}"
                )
            request = payload.inputs[0]
            try:
                logits = served.answer(request.name, request.datatype, request.as_numpy)
            except RequestError as exc:
                raise InvalidInput(str(exc)) from None
            out = InferOutput(served.output, list(logits.shape), "FP32")
            out.set_data_from_numpy(logits.astype(np.float32), binary_data=False)
            return InferResponse(
                response_id=payload.id or "",
                model_name=served.name,
                infer_outputs=[out],
                use_binary_outputs=payload.use_binary_outputs
                if hasattr(payload, "use_binary_outputs")
                else False,
            )

    return BundleModel()


def check_port_free(port: int, flag: str) -> None:
    """Refuse a port another process listens on, before any model is loaded. KServe's servers
    bind every interface (uvicorn `host="0.0.0.0"` in kserve/protocol/rest/server.py, gRPC
    `[::]:port` in kserve/protocol/grpc/server.py), so that is what is tried here."""
    import socket

    if not 1 <= port <= 65535:
        raise InputError(f"{flag} {port}: a port is 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise InputError(
                f"{flag} {port}: cannot listen there ({exc.strerror or exc}): choose another port"
            ) from None


def serve_bundle(
    bundle: Bundle,
    spec_texts: Sequence[str],
    *,
    http_port: int,
    grpc_port: int,
    announce: Any = None,
) -> None:
    """Load one runtime per precision served and run KServe's model server until it is
    stopped (SIGINT/SIGTERM, handled by `kserve.ModelServer`). `announce(models)` is called
    with the `ServedModel`s once they are loaded, before the server starts."""
    import contextlib

    from vggdeploy.runtimes.registry import open_runtime

    fault = fault_from_env()
    pairs = open_served(bundle, spec_texts)
    if http_port == grpc_port:
        raise InputError(f"--port and --grpc-port are both {http_port}: give two ports")
    check_port_free(http_port, "--port")
    check_port_free(grpc_port, "--grpc-port")
    kserve = import_kserve()
    with contextlib.ExitStack() as stack:
        served = []
        for name, spec in pairs:
            runtime = stack.enter_context(open_runtime(bundle, spec))
            served.append(
                ServedModel(
                    name, spec, runtime, bundle.preprocessing, bundle.model.num_classes, fault
                )
            )
        if announce is not None:
            announce(served)
        server = kserve.ModelServer(
            http_port=http_port, grpc_port=grpc_port, enable_grpc=True, workers=1
        )
        server.start([kserve_model(kserve, s) for s in served])
