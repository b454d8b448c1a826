"""DLA (Deep Learning Accelerator) builds for Jetson Orin: the checks made before a build, the
builder settings, and the readiness report (which layers DLA can run, in how many subgraphs).

`vggdeploy build BUNDLE --precision fp16|int8 --dla-core N [--gpu-fallback]` sets
`config.default_device_type = DeviceType.DLA`, `config.DLA_core = N` and, only when asked,
`BuilderFlag.GPU_FALLBACK`. Everything that would make TensorRT fail or silently move layers to
the GPU is refused in one line before the build: a precision other than fp16/int8, a dynamic
or multi-profile shape (DLA needs min = opt = max), a core the device lacks, a host without DLA,
a layer DLA cannot run (without --gpu-fallback) and, for INT8, a MaxPool whose Q/DQ scales
differ on its two sides.

What NVIDIA's documentation says (read for this module; TensorRT docs "Working with DLA", "DLA
Supported Layers and Restrictions" and "Strongly Typed Networks for DLA" of 11.3.0, 11.4.0 and
11.4.1, and the 11.4.1 release notes):

- Support matrix: TensorRT 10.x on JetPack 6 (Jetson AGX/NX Orin; the docs name 10.7 as the
  last 10.x release with DLA, and JetPack 6 ships 10.3); no DLA in 11.0-11.3, nor in 11.4.0 on
  JetPack (11.4.0 had it on Windows on ARM only); TensorRT 11.4.1+ on JetPack 7.2.2+ supports
  DLA on Jetson AGX Orin, with GPU fallback "as in 10.x". Jetson Thor has no DLA.
- Strong typing: the 11.4.1 docs state that all networks, DLA ones included, are strongly typed
  and the precision comes from the tensor types of the (ONNX) network; the FP16/INT8/precision-
  constraint builder flags are invalid for DLA builds there. That is exactly how vggdeploy
  builds (model.fp16.onnx / the Q/DQ model.int8.onnx). The 10.x DLA guide describes DLA builds
  with the FP16/INT8 builder flags and does not document strongly typed DLA builds either way;
  vggdeploy still builds strongly typed on 10.x (the precision check after the build confirms
  what ran), which is unverified on real JetPack 6 hardware: this module is tested only
  against the TensorRT double.
- Restrictions used here: no dynamic dimensions (a profile's min, opt and max must be equal;
  runtime shapes equal build shapes); DLA runs FP16 and INT8 only; INT8 pooling needs the same
  scale on its input and output; with GPU fallback TensorRT splits the network into several DLA
  loadables (subgraphs), at most 16 loaded per core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vggdeploy.errors import InputError, RuntimeUnavailableError
from vggdeploy.exporter.profiles import ProfileSpec

#: Every `tensorrt` name this module touches; see tests/runtimes/test_trt_api_names.py.
TENSORRT_API = (
    "__version__",
    "num_DLA_cores",
    "default_device_type",
    "DeviceType",
    "DLA",
    "DLA_core",
    "set_flag",
    "BuilderFlag",
    "GPU_FALLBACK",
    "num_layers",
    "get_layer",
    "name",
    "type",
    "can_run_on_DLA",
)

DLA_PRECISIONS = ("fp16", "int8")
NO_DLA = "this GPU has no DLA (DLA exists on Jetson AGX/NX Orin; Thor has none)"
SUPPORT = (
    "DLA builds need TensorRT 10.x on JetPack 6 or TensorRT 11.4.1+ on JetPack 7.2.2+ (AGX Orin)"
)
#: DLA loads at most this many loadables per core (TensorRT's "DLA Supported Layers").
MAX_SUBGRAPHS = 16


def check_request(precision: str, core: int | None, gpu_fallback: bool) -> None:
    """The options alone (no TensorRT needed): a valid core, fp16/int8, fallback only on DLA."""
    if core is None:
        if gpu_fallback:
            raise InputError("--gpu-fallback only applies to DLA builds: add --dla-core N")
        return
    if not isinstance(core, int) or core < 0:
        raise InputError(f"--dla-core {core!r} must be a DLA core index: 0, 1, ...")
    if precision not in DLA_PRECISIONS:
        raise InputError(
            f"DLA runs fp16 and int8 only, not {precision}: use --precision fp16 (after "
            "`vggdeploy convert`) or int8 (after `vggdeploy calibrate`), or build without "
            "--dla-core"
        )


def static_profiles(profiles: list[ProfileSpec], fixed_batch: int | None) -> list[ProfileSpec]:
    """The one static profile a DLA engine takes: the one asked for (min = opt = max), else
    the bundle's fixed batch, else batch 1."""
    if len(profiles) > 1:
        raise InputError(
            f"DLA needs static shapes (one profile, min = opt = max); {len(profiles)} "
            "profiles were given: use --batch N"
        )
    if not profiles:
        batch = fixed_batch or 1
        return [ProfileSpec((batch, batch, batch))]
    spec = profiles[0]
    for what, triple in (("batch", spec.batch), ("height", spec.height), ("width", spec.width)):
        if triple is not None and len(set(triple)) != 1:
            lo, opt, hi = triple
            raise InputError(
                f"DLA needs static shapes (min = opt = max); the profile has {what} "
                f"{lo}:{opt}:{hi}: use --batch N (and one size for a dense bundle)"
            )
    return [spec]


def check_host(trt: Any, builder: Any, core: int) -> int:
    """The number of DLA cores; refuse a host without DLA or without core `core`."""
    count = int(builder.num_DLA_cores)
    if count == 0:
        raise RuntimeUnavailableError(
            f"cannot build for --dla-core {core}: {NO_DLA}; TensorRT {trt.__version__} sees no "
            f"DLA core here ({SUPPORT})"
        )
    if core >= count:
        raise InputError(
            f"--dla-core {core} is out of range: this device has {count} DLA core"
            f"{'s' if count != 1 else ''} (use 0..{count - 1})"
        )
    return count


def configure(trt: Any, config: Any, core: int, gpu_fallback: bool) -> None:
    """Make DLA core `core` the default device; GPU fallback only when asked."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    if gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def readiness(network: Any, config: Any, core: int, gpu_fallback: bool) -> dict[str, Any]:
    """For every layer of the parsed network, whether DLA can run it; the DLA subgraphs
    (maximal runs of DLA layers in the network's topological order, as TensorRT partitions).

    Without `gpu_fallback` a layer DLA cannot run is an error naming it (no silent fallback).
    """
    layers = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        kind = getattr(layer.type, "name", str(layer.type))
        layers.append({"name": layer.name, "type": kind, "dla": bool(config.can_run_on_DLA(layer))})
    subgraphs = sum(
        1 for i, entry in enumerate(layers) if entry["dla"] and (i == 0 or not layers[i - 1]["dla"])
    )
    on_gpu = [{"name": e["name"], "type": e["type"]} for e in layers if not e["dla"]]
    report = {
        "core": core,
        "gpu_fallback": gpu_fallback,
        "layers": len(layers),
        "layers_on_dla": len(layers) - len(on_gpu),
        "layers_on_gpu": on_gpu,
        "subgraphs": subgraphs,
        "per_layer": layers,
    }
    if on_gpu and not gpu_fallback:
        names = ", ".join(f"{e['name']} ({e['type']})" for e in on_gpu[:6])
        more = f" and {len(on_gpu) - 6} more" if len(on_gpu) > 6 else ""
        raise InputError(
            f"{len(on_gpu)} of {len(layers)} layers cannot run on DLA: {names}{more}; add "
            "--gpu-fallback to run them on the GPU, or build without --dla-core"
        )
    if subgraphs > MAX_SUBGRAPHS:
        raise InputError(
            f"GPU fallback would split the network into {subgraphs} DLA subgraphs; DLA loads at "
            f"most {MAX_SUBGRAPHS} per core: build without --dla-core"
        )
    if report["layers_on_dla"] == 0:
        raise InputError("no layer of this network can run on DLA: build without --dla-core")
    return report


def check_pool_scales(onnx_path: Path) -> int:
    """INT8 on DLA: every MaxPool fed by a DequantizeLinear and read by QuantizeLinear must
    have one scale on both sides. Returns how many pools were checked; raises naming the pool."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    values = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            values[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def scale(node: Any) -> Any:
        tensor = values.get(node.input[1]) if len(node.input) > 1 else None
        return None if tensor is None else numpy_helper.to_array(tensor).astype(np.float64)

    checked = 0
    for node in graph.node:
        if node.op_type != "MaxPool":
            continue
        source = producers.get(node.input[0])
        before = (
            scale(source) if source is not None and source.op_type == "DequantizeLinear" else None
        )
        after = [
            scale(c) for c in consumers.get(node.output[0], []) if c.op_type == "QuantizeLinear"
        ]
        after = [s for s in after if s is not None]
        if before is None or not after:
            continue  # one side only: TensorRT carries that one scale through the pool
        checked += 1
        for out in after:
            if out.shape != before.shape or not np.allclose(out, before, rtol=1e-6, atol=0):
                raise InputError(
                    f"MaxPool {node.name or '?'} in {onnx_path.name} has input scale "
                    f"{_scale_text(before)} and output scale {_scale_text(out)}; DLA runs INT8 "
                    "pooling only with one scale on both sides: give the Q/DQ pair around it "
                    "the same scale (re-run `vggdeploy calibrate`), or build --precision fp16"
                )
    return checked


def _scale_text(value: Any) -> str:
    flat = value.reshape(-1)
    return f"{float(flat[0]):.6g}" if flat.size == 1 else f"[{float(flat[0]):.6g}, ...]"


def precision_summary(
    layer_json: str, precision: str, facts: dict[str, Any], report: dict[str, Any]
) -> dict[str, Any]:
    """The precision check of a DLA engine. DLA subgraphs are opaque to the engine inspector
    (one foreign node each), so the convolutions it does show (GPU fallback) must run in
    `precision` or in a type the ONNX gives them; the rest run on DLA, which computes only fp16
    and int8, in the types of the strongly typed ONNX."""
    import json

    from vggdeploy.errors import CheckFailedError
    from vggdeploy.exporter.engine_checks import ONNX_FILES, layer_precision, tensor_format

    by_onnx = facts.get("by_precision", {})
    need = by_onnx.get(precision, 0)
    if need == 0:
        raise CheckFailedError(
            f"{ONNX_FILES[precision]} has no {precision} convolutions, so DLA cannot run it "
            f"in {precision}"
        )
    layers = json.loads(layer_json).get("Layers", [])
    visible: dict[str, int] = {}
    for item in layers:
        if isinstance(item, dict) and "conv" in str(item.get("LayerType", "")).lower():
            inputs = item.get("Inputs") or [{}]
            kind = layer_precision(tensor_format(inputs[0]))
            visible[kind] = visible.get(kind, 0) + 1
    wrong = {k: n for k, n in visible.items() if k not in by_onnx}
    if wrong:
        raise CheckFailedError(
            f"precision check failed: GPU-fallback convolutions run in {'/'.join(sorted(wrong))}, "
            f"a type {ONNX_FILES[precision]} does not give them; no engine was written"
        )
    return {
        "expected": precision,
        "convolutions": facts.get("convolutions", need),
        "by_precision": {precision: need},
        "onnx_convolutions": by_onnx,
        "gpu_fallback_convolutions": visible,
        "dla_subgraphs": report["subgraphs"],
        "passed": True,
    }
