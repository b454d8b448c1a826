"""Check a live Open Inference Protocol service against the bundle it was made from.

For each model (Triton, KServe or `vggdeploy serve`), every image of DIR goes through the
service once (one image per request); the answers are compared with the bundle's reference
(PyTorch fp32, as `validate`) with `metrics.compare_outputs` and judged by the served
precision's tolerances (`metrics.TOLERANCES`, as `validate`). A model that disagrees gets its
likely cause (`diagnose`). Then, at each concurrency, that many clients (one thread and one
connection each) send a fixed number of requests; every answer is judged the same way, and a
request that gets no answer is counted as lost. Latency is the client's round trip per request;
throughput is answered requests over the wall time of the level. Beside it, the same images go
through the bundle locally, stage by stage, as `bench --end-to-end` times them
(`bench.endtoend.pipeline_stages`), so the service's round trip can be set against the local
decode, preprocess and infer.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vggdeploy import precision as P
from vggdeploy.bench.timing import summarize
from vggdeploy.bundle import Bundle
from vggdeploy.endpoint.client import SEND_DTYPES, Client, Endpoint, EndpointError
from vggdeploy.endpoint.diagnose import AS_BUNDLE, likely_cause, reference_table
from vggdeploy.errors import InputError
from vggdeploy.metrics import compare_outputs, merge_tolerances
from vggdeploy.runtimes.registry import REFERENCE
from vggdeploy.validate import Check, json_float, judge

#: at most this many of DIR's images (sorted) are used
MAX_IMAGES = 256
#: the largest image file sent (bytes)
MAX_FILE_BYTES = 64 << 20
#: the most requests one concurrency level may send
MAX_REQUESTS = 100_000
SEND_MODES = ("auto", "images", "tensors")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class VerifyOptions:
    """What `vggdeploy verify-endpoint` was asked for."""

    models: tuple[str, ...] = ()  # empty: every model of this bundle the service has ready
    concurrency: tuple[int, ...] = (1,)
    requests: int | None = None  # per concurrency level; default max(32, images, 4 x level)
    send: str = "auto"  # images (BYTES), tensors (preprocessed here), or auto (images if taken)
    precision: str | None = None  # default: from the model name (`vgg16-fp16`, `vgg16_trt_fp16`)
    timeout_s: float = 30.0
    local_runtime: str = "onnxruntime"
    tolerances: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.concurrency or any(c < 1 or c > 256 for c in self.concurrency):
            raise InputError("--concurrency: give levels from 1 to 256, e.g. 1,4")
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise InputError(f"--requests {self.requests}: give 1 to {MAX_REQUESTS}")
        if self.send not in SEND_MODES:
            raise InputError(f"--send {self.send!r}: use {', '.join(SEND_MODES)}")
        if self.timeout_s <= 0:
            raise InputError("--timeout must be positive")
        if self.precision is not None:
            P.check([self.precision])

    def requests_at(self, level: int, images: int) -> int:
        return self.requests if self.requests is not None else max(32, images, 4 * level)


@dataclass
class LoadResult:
    """One concurrency level."""

    concurrency: int
    requests: int
    answered: int
    agreed: int  # answers whose top-1 class is the reference's for that image
    lost: int
    wall_s: float
    latency_ms: dict[str, float]
    errors: list[str] = field(default_factory=list)  # the first few, as the client saw them
    #: every answer of the level, judged together against the reference rows of their images
    #: with validate's tolerances (an INT8 model may disagree on a few images, as validate allows)
    checks: list[Check] = field(default_factory=list)

    @property
    def throughput_rps(self) -> float:
        return self.answered / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def passed(self) -> bool:
        # every request is either answered or lost
        return self.lost == 0 and bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "answered": self.answered,
            "agreed": self.agreed,
            "lost": self.lost,
            "wall_s": self.wall_s,
            "throughput_rps": self.throughput_rps,
            "latency_ms": self.latency_ms,
            "errors": self.errors,
            "checks": [c.to_dict() for c in self.checks],
            "passed": self.passed,
        }


@dataclass
class ModelResult:
    """One served model: agreement, likely cause, load levels, the local stages."""

    model: str
    precision: str
    send: str  # "images" or "tensors"
    input: str
    metrics: dict[str, float]
    checks: list[Check]
    cause: str | None
    round_trip_ms: dict[str, float]  # the sequential agreement pass
    loads: list[LoadResult] = field(default_factory=list)
    local: dict[str, Any] = field(default_factory=dict)

    @property
    def agrees(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.agrees and all(load.passed for load in self.loads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "precision": self.precision,
            "send": self.send,
            "input": self.input,
            "metrics": {k: json_float(v) for k, v in self.metrics.items()},
            "checks": [c.to_dict() for c in self.checks],
            "agrees": self.agrees,
            "likely_cause": self.cause,
            "round_trip_ms": self.round_trip_ms,
            "loads": [load.to_dict() for load in self.loads],
            "local_end_to_end": self.local,
            "passed": self.passed,
        }


@dataclass
class EndpointReport:
    endpoint: str
    bundle: str
    images: int
    reference: str
    models: list[ModelResult]

    @property
    def passed(self) -> bool:
        return bool(self.models) and all(m.passed for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "bundle": self.bundle,
            "images": self.images,
            "reference": self.reference,
            "models": [m.to_dict() for m in self.models],
            "passed": self.passed,
        }


# -- inputs -------------------------------------------------------------------------------------


@dataclass
class Images:
    paths: list[Path]
    pictures: list[Any]  # RGB Pillow images
    files: list[bytes]  # the encoded files, as sent in `image` mode


def read_images(directory: str | Path, resize: int) -> Images:
    """DIR's images (at most `MAX_IMAGES`), each decoded once (one-line errors naming it)."""
    from vggdeploy.preprocess import find_images, load_image

    paths = find_images(directory)[:MAX_IMAGES]
    pictures, files = [], []
    for p in paths:
        pictures.append(load_image(p, resize))
        if p.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{p}: larger than {MAX_FILE_BYTES >> 20} MB: downscale it first")
        files.append(p.read_bytes())
    return Images(paths, pictures, files)


@dataclass
class Request:
    """How each image is sent to one model."""

    name: str
    datatype: str
    output: str
    payloads: list[np.ndarray]


def plan_requests(
    meta: Mapping[str, Any], bundle: Bundle, images: Images, send: str, model: str, protocol: str
) -> tuple[str, Request]:
    """("images" | "tensors", the request per image) for a model with metadata `meta`."""
    from vggdeploy.preprocess import preprocess_image

    inputs = list(meta.get("inputs") or [])
    outputs = list(meta.get("outputs") or [])
    if not inputs or not outputs:
        raise EndpointError(f"{model}: its metadata declares no inputs or no outputs")
    byte_inputs = [t for t in inputs if t.get("datatype") == "BYTES"]
    tensor_inputs = [t for t in inputs if t.get("datatype") in SEND_DTYPES]
    mode = send if send != "auto" else ("images" if byte_inputs else "tensors")
    if mode == "images":
        if not byte_inputs:
            raise InputError(f"{model} takes no BYTES (encoded image) input: use --send tensors")
        # Over HTTP as base64 text: KServe's REST decoder accepts only UTF-8 BYTES (see
        # serving._unbase64); over gRPC the files go as they are.
        files = images.files if protocol == "grpc" else [base64.b64encode(f) for f in images.files]
        payloads = [np.array([data], dtype=np.object_) for data in files]
        return mode, Request(byte_inputs[0]["name"], "BYTES", outputs[0]["name"], payloads)
    if not tensor_inputs:
        raise InputError(f"{model} takes no FP32/FP16 tensor input: use --send images")
    spec = tensor_inputs[0]
    crop = bundle.preprocessing.crop
    shape = spec.get("shape") or []
    dims = shape[1:] if len(shape) == 4 else shape
    if len(dims) != 3 or any(d not in (-1, w) for d, w in zip(dims, (3, crop, crop))):
        raise InputError(
            f"{model} takes {spec['name']!r} of shape {shape}, the bundle makes [N, 3, {crop}, "
            f"{crop}]: it is not this bundle's model (check --model and --bundle)"
        )
    dtype = SEND_DTYPES[spec["datatype"]]
    pre = bundle.preprocessing
    payloads = [preprocess_image(img, pre)[None].astype(dtype) for img in images.pictures]
    return mode, Request(spec["name"], spec["datatype"], outputs[0]["name"], payloads)


# -- the checks ---------------------------------------------------------------------------------


def precision_of(model: str, given: str | None) -> str:
    """The served precision: `given`, else the model name's last `-`/`_` part."""
    if given:
        return given
    for sep in ("-", "_"):
        tail = model.rsplit(sep, 1)[-1]
        if tail in P.NAMES:
            return tail
    raise InputError(
        f"model {model!r}: cannot tell its precision from the name: give --precision "
        f"({', '.join(P.NAMES)})"
    )


def candidate_models(bundle: Bundle) -> list[str]:
    """The names this bundle's models have when served by `vggdeploy serve` or packaged by
    `package --format triton`/`kserve` (each precision the bundle has)."""
    from vggdeploy.packaging.triton import model_name
    from vggdeploy.serving import served_name

    base = bundle.manifest.model.name.replace(".", "_")
    names = []
    for key in sorted(bundle.artifacts, key=P.artifact_order):
        names.append(served_name(bundle, P.split_key(key)[1]))
        names.append(model_name(base, key))
    return list(dict.fromkeys(names))


def send_all(client: Client, model: str, req: Request) -> tuple[np.ndarray, list[float]]:
    """Every image once, in order: (outputs stacked, round trip per request in ms)."""
    rows, times = [], []
    for payload in req.payloads:
        t0 = time.perf_counter()
        out = client.infer(model, req.name, req.datatype, payload, req.output)
        times.append((time.perf_counter() - t0) * 1e3)
        rows.append(np.asarray(out, dtype=np.float32).reshape(1, -1))
    return np.concatenate(rows), times


def load_level(
    endpoint: Endpoint,
    model: str,
    req: Request,
    reference: np.ndarray,
    limits: Mapping[str, float],
    level: int,
    total: int,
    timeout_s: float,
) -> LoadResult:
    """`level` clients send `total` requests between them (image i % N each); the answers are
    judged together against the reference rows of their images, by validate's rule."""
    lock = threading.Lock()
    counter = iter(range(total))
    latencies: list[float] = []
    answers: list[tuple[int, np.ndarray]] = []
    lost = 0
    errors: list[str] = []

    def worker() -> None:
        nonlocal lost
        with Client(endpoint, timeout_s) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                k = i % len(req.payloads)
                t0 = time.perf_counter()
                try:
                    out = client.infer(model, req.name, req.datatype, req.payloads[k], req.output)
                except EndpointError as exc:
                    with lock:
                        lost += 1
                        if len(errors) < 5:
                            errors.append(str(exc))
                    continue
                ms = (time.perf_counter() - t0) * 1e3
                got = np.asarray(out, dtype=np.float32).reshape(-1)
                with lock:
                    latencies.append(ms)
                    answers.append((k, got))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=level) as pool:
        for future in [pool.submit(worker) for _ in range(level)]:
            future.result()
    wall = time.perf_counter() - start
    stats = summarize(latencies) if latencies else {}
    width = reference.shape[1]
    shaped = [(k, got) for k, got in answers if got.shape == (width,)]
    agreed = sum(int(np.argmax(got) == np.argmax(reference[k])) for k, got in shaped)
    checks: list[Check] = []
    if shaped and len(shaped) == len(answers):
        ref = np.stack([reference[k] for k, _ in shaped])
        checks = judge(model, compare_outputs(ref, np.stack([g for _, g in shaped])), limits)
    return LoadResult(level, total, len(latencies), agreed, lost, wall, stats, errors, checks)


def local_stages(bundle: Bundle, spec_text: str, precision: str, paths: Sequence[Path]) -> dict:
    """The same images through the bundle here, stage by stage, one image per call (as
    `bench --end-to-end` at batch 1): medians in ms, or why it was skipped."""
    from vggdeploy.bench.endtoend import pipeline_stages, time_stages
    from vggdeploy.errors import RuntimeUnavailableError
    from vggdeploy.runtimes.registry import open_available, parse_spec

    spec = parse_spec(spec_text, precision)
    try:
        runtime = open_available(bundle, spec)
    except RuntimeUnavailableError as exc:
        return {"runtime": spec.text, "skipped": str(exc)}
    with runtime:
        stages = pipeline_stages(bundle, runtime, 1, paths, 5)
        # one checked call first, as `bench --end-to-end` does (run_end_to_end)
        runtime.check_feed(stages[1][1](stages[0][1](0)))
        time_stages(stages, iterations=1, clock=time.perf_counter_ns)  # warm-up, untimed
        calls = min(len(paths), 64)
        timed = time_stages(stages, iterations=calls, clock=time.perf_counter_ns)
        label = runtime.label
    medians = {name: summarize([t / 1e6 for t in v])["median"] for name, v in timed.items()}
    return {"runtime": label, "calls": calls, "median_ms": medians}


def verify_endpoint(
    url: str,
    bundle: Bundle,
    images_dir: str | Path,
    options: VerifyOptions,
    *,
    protocol: str | None = None,
    progress: Progress | None = None,
) -> EndpointReport:
    """Check the service at `url` against `bundle` (see the module docstring)."""
    say = progress or (lambda _text: None)
    endpoint = Endpoint.parse(url, protocol)
    images = read_images(images_dir, bundle.preprocessing.resize)
    limits_all = merge_tolerances(options.tolerances)
    with Client(endpoint, options.timeout_s) as client:
        if not client.server_live():
            raise EndpointError(f"{endpoint}: the server says it is not live")
        models = list(options.models)
        if not models:
            tried = candidate_models(bundle)
            models = [m for m in tried if client.model_ready(m)]
            if not models:
                raise EndpointError(
                    f"{endpoint}: none of this bundle's models is ready (tried {', '.join(tried)}): "
                    "give --model NAME"
                )
        for m in models:
            if not client.model_ready(m):
                raise EndpointError(f"{endpoint}: model {m!r} is not ready (or not served)")
        say(f"reference and its hypotheses on {len(images.paths)} images")
        table = reference_table(bundle, images.pictures)
        reference = table[AS_BUNDLE]
        results = []
        for model in models:
            precision = precision_of(model, options.precision)
            limits = limits_all.get(precision, {})
            if not limits:
                raise InputError(f"no tolerances for precision {precision!r}: add --tol")
            mode, req = plan_requests(
                client.metadata(model), bundle, images, options.send, model, endpoint.protocol
            )
            say(f"{model}: {len(req.payloads)} images as {mode}")
            got, times = send_all(client, model, req)
            if got.shape != reference.shape:
                raise EndpointError(
                    f"{model} answered shape {list(got.shape)}, the bundle's model "
                    f"{list(reference.shape)}: it is not this bundle's model"
                )
            metrics = compare_outputs(reference, got)
            checks = judge(model, metrics, limits)
            cause = None if all(c.passed for c in checks) else likely_cause(table, got, limits)
            result = ModelResult(
                model, precision, mode, req.name, metrics, checks, cause, summarize(times)
            )
            for level in options.concurrency:
                total = options.requests_at(level, len(req.payloads))
                say(f"{model}: {total} requests from {level} client(s)")
                result.loads.append(
                    load_level(
                        endpoint, model, req, reference, limits, level, total, options.timeout_s
                    )
                )
            say(f"{model}: the same images through the bundle here ({options.local_runtime})")
            result.local = local_stages(bundle, options.local_runtime, precision, images.paths)
            results.append(result)
    return EndpointReport(
        str(endpoint), str(bundle.root), len(images.paths), REFERENCE.text, results
    )
