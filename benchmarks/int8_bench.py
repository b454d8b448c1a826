"""INT8 on the CPU (ONNX Runtime, OpenVINO): every INT8 variant of a bundle next to fp32, interleaved.

Variants (all written from the bundle's fp32 `model.onnx` with the activation scales of its
`model.int8.onnx`, so only the form and weight range differ):

  fp32            model.onnx
  int8 file       what `calibrate` writes: Q/DQ in NVIDIA ModelOpt's placement (Conv/Gemm and
                  MaxPool inputs, none on Conv outputs), loaded by ONNX Runtime as it is
  int8 cpu        the same file as vggdeploy's ONNX Runtime CPU runtime loads it
                  (`onnxutil.cpu_int8_form`: a Q/DQ pair after each Conv/Gemm, ReLUs as integer
                  Max, activations uint8; outputs bit for bit those of the file, unfused)
  int8 cpu w7     the same with 7-bit weights in [-63, 63] (the no-VNNI remedy)
  int8 cpu fcfp   the same, classifier Gemms kept float (keep_float, ModelOpt's default for
                  batch-1 FCs): int8 vs float FCs
  ort s8          onnxruntime.quantization.quantize_static, QDQ, QInt8/QInt8, per channel,
                  calibrated (MinMax) on the shipped photographs
  ov fp32         OpenVINO (vggdeploy's runtime, `openvino@fp32`): model.onnx in f32
  ov int8         OpenVINO (vggdeploy's runtime, `openvino@int8`): the bundle's model.int8.onnx
                  with the runtime's rewrites (`runtimes.openvino_qdq`), ReLU outputs on the
                  fine u8 grid (256 levels over the file's thresholds)
  ov int8 file    the same with the file's own grid (128 levels there): exactly the file's model
  ov int8 as-is   the same file compiled as it is (no rewrites): what the rewrites change
  nncf ov         NNCF's own quantization (`nncf.quantize`, default preset) of model.onnx read by
                  OpenVINO, calibrated on the same shipped photographs as "ort s8", compiled
                  with the settings of `openvino@int8` (f32 for float layers, LATENCY hint)

The OpenVINO rows need `pip install 'vggdeploy[bench]'` (openvino and nncf); without them
they are left out with one line saying so (`--skip-openvino` leaves them out on purpose).
"x peer" is each row's latency over the fastest peer at that batch: "ort s8" (ONNX Runtime's
own quantizer) and "nncf ov" (OpenVINO's own): below 1.00 beats both.

Each round runs every variant once at each batch size, in turn, so drift on a shared machine
hits all alike; the table gives the median latency, speed-up vs fp32, the integer/float
convolutions and fully connected layers (ORT: fused kernels in its optimized graph; OpenVINO:
runtime precision in the compiled model), and agreement with fp32 on the shipped photographs.
"f32 passes": the float ReLU/Q/DQ nodes left between the integer kernels in ORT's optimized
graph.

Agreement: each row's logits on every shipped photograph (batches of 4, each row on its own
runtime) against the "fp32" row's (ONNX Runtime, model.onnx): "cos mean"/"cos min" are the
mean and lowest per-image cosine similarity of the two logit vectors, "top1" how many images
get the same top-1 class as fp32.

    .venv/bin/python benchmarks/int8_bench.py                        # runs/vgg16/bundle
    .venv/bin/python benchmarks/int8_bench.py BUNDLE --rounds 15 --batch 1,8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import docs_section
import numpy as np

FUSED = ("QLinearConv", "QGemm", "ConvInteger", "MatMulInteger", "QLinearMatMul")
# float passes between the integer kernels
FLOAT_ELEMENTWISE = ("Relu", "QuantizeLinear", "DequantizeLinear")
FLOAT = ("Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")


def ranges_from_qdq(fp32: Any, qdq_model: Any) -> dict[str, Any]:
    """Activation ranges recovered from an int8 (zero point 0) Q/DQ file's input scales."""
    from onnx import numpy_helper

    from vggdeploy.calibration.calibrators import TensorRange, select_calibration_tensors

    wanted = set(select_calibration_tensors(fp32))
    inits = {i.name: i for i in qdq_model.graph.initializer}
    ranges = {}
    for node in qdq_model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in wanted:
            amax = float(numpy_helper.to_array(inits[node.input[1]])) * 127.0
            ranges[node.input[0]] = TensorRange(-amax, amax, amax, True)
    return ranges


def ort_static_s8(fp32_path: Path, dest: Path, photos: list[np.ndarray], input_name: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: x[None]} for x in photos])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(fp32_path),
        str(dest),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


def fused_counts(path: Path, work: Path) -> dict[str, int]:
    import onnx

    from vggdeploy.ortsession import cpu_session

    optimized = work / (path.stem + ".optimized.onnx")
    cpu_session(path, optimized_model_path=optimized)
    ops = Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)
    optimized.unlink(missing_ok=True)
    return {
        "int": sum(ops[o] for o in FUSED),
        "float": sum(ops[o] for o in FLOAT),
        "passes": sum(ops[o] for o in FLOAT_ELEMENTWISE),
        **{o: ops[o] for o in FUSED if ops[o]},
    }


#: the peers every row is compared with ("x peer"): each toolkit's own INT8 quantizer
PEERS = ("ort s8", "nncf ov")


def openvino_rows(bundle: Any, photos: np.ndarray, threads: int) -> dict[str, tuple[Any, dict]]:
    """OpenVINO on the bundle's fp32 and int8 files (vggdeploy's runtime) and on NNCF's own
    quantization of model.onnx: label -> (run(x) -> logits, kernel counts)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        print(
            f"OpenVINO rows left out ({exc.name} is not installed): pip install 'vggdeploy[bench]'",
            file=sys.stderr,
        )
        return {}
    from vggdeploy.runtimes.openvino_rt import OpenVinoRuntime, _count_layers

    def kernels(compiled: Any) -> dict[str, int]:
        n = _count_layers(compiled)
        int8 = n["int8_convolutions"] + n["int8_fully_connected"]
        return {"int": int8, "float": n["convolutions"] + n["fully_connected"] - int8, "passes": 0}

    rows: dict[str, tuple[Any, dict]] = {}
    for label, precision, rewrite, grid in (
        ("ov fp32", "fp32", True, "fine"),
        ("ov int8", "int8", True, "fine"),
        ("ov int8 file", "int8", True, "file"),
        ("ov int8 as-is", "int8", False, "file"),
    ):
        rt = OpenVinoRuntime(
            bundle,
            precision=precision,
            threads=threads or None,
            cache=False,
            rewrite=rewrite,
            grid=grid,
        )
        rt.load()
        rows[label] = (
            lambda x, r=rt: r.infer_unchecked({bundle.input_name: x})[bundle.output_name],
            kernels(rt._compiled),
        )
    model = ov.Core().read_model(str(bundle.root / "model.onnx"))
    dataset = nncf.Dataset([x[None] for x in photos])
    quantized = nncf.quantize(model, dataset, subset_size=len(photos))
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(quantized, "CPU", config)
    request = compiled.create_infer_request()
    port = compiled.outputs[0]
    rows["nncf ov"] = (
        lambda x: request.infer({0: x}, share_inputs=True)[port],
        kernels(compiled),
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="int8_bench."))
    try:
        return run(work, argv)
    finally:  # the variants' ONNX files (about 1 GB for VGG-16)
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default="runs/vgg16/bundle")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ORT's)")
    parser.add_argument("--skip-ort-static", action="store_true")
    parser.add_argument("--skip-openvino", action="store_true", help="no OpenVINO/NNCF rows")
    parser.add_argument("--json", help="write the results as JSON to this file")
    docs_section.add_option(parser)
    args = parser.parse_args(argv)
    record = docs_section.Recorder(__file__, args.write_docs, argv)

    import onnx

    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration.qdq import quantize_model
    from vggdeploy.host import cpu
    from vggdeploy.inputs import InputSet
    from vggdeploy.onnxutil import cpu_int8_form
    from vggdeploy.ortsession import cpu_session

    bundle = Bundle.load(args.bundle)
    fp32_path = bundle.root / "model.onnx"
    photos = np.concatenate(list(InputSet.photographs(bundle, batch=4).batches()))
    batches = [int(b) for b in args.batch.split(",")]
    print(
        f"cpu: {cpu().name} {cpu().features}; work dir {work} (removed at the end)", file=sys.stderr
    )

    fp32 = onnx.load(str(fp32_path))
    ranges = ranges_from_qdq(fp32, onnx.load(str(bundle.root / "model.int8.onnx")))
    classifier = [n for n in ("classifier.0", "classifier.3", "classifier.6")]
    variants: dict[str, Path] = {"fp32": fp32_path}
    for label, kwargs in (
        ("int8 file", {}),
        ("int8 cpu", {}),
        ("int8 cpu w7", {"weight_bits": 7}),
        ("int8 cpu fcfp", {"keep_float": classifier}),
    ):
        model, _ = quantize_model(fp32, ranges, "tensorrt", **kwargs)
        if " cpu" in label:
            cpu_int8_form(model)
        variants[label] = work / (label.replace(" ", "_") + ".onnx")
        onnx.save(model, str(variants[label]))
        del model
    del fp32
    if not args.skip_ort_static:
        variants["ort s8"] = work / "ort_s8.onnx"
        ort_static_s8(fp32_path, variants["ort s8"], list(photos), bundle.input_name)

    results: dict[str, dict[str, Any]] = {}
    runners: dict[str, Any] = {}  # label -> run(x) -> logits
    for label, path in variants.items():
        results[label] = {"kernels": fused_counts(path, work), "latency_ms": {}}
        session = cpu_session(path, threads=args.threads or None)
        runners[label] = lambda x, s=session: s.run(None, {bundle.input_name: x})[0]
    if not args.skip_openvino:
        for label, (run, kernels) in openvino_rows(bundle, photos, args.threads).items():
            results[label] = {"kernels": kernels, "latency_ms": {}}
            runners[label] = run

    # Agreement with fp32 on the photographs, fused kernels (the sessions above).
    logits = {
        label: np.concatenate([run(photos[i : i + 4]) for i in range(0, len(photos), 4)]).astype(
            np.float64
        )
        for label, run in runners.items()
    }
    ref = logits["fp32"]
    for label, out in logits.items():
        cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
        results[label]["cosine_mean"] = float(cos.mean())
        results[label]["cosine_min"] = float(cos.min())
        results[label]["top1"] = int((ref.argmax(1) == out.argmax(1)).sum())

    # Interleaved timing: round r runs every variant at every batch size once.
    feeds = {b: np.resize(photos, (b, *photos.shape[1:])).astype(np.float32) for b in batches}
    times: dict[tuple[str, int], list[float]] = {(v, b): [] for v in runners for b in batches}
    for run in runners.values():  # warm-up
        for b in batches:
            run(feeds[b])
    for _ in range(args.rounds):
        for b in batches:
            for label, run in runners.items():
                t0 = time.perf_counter()
                run(feeds[b])
                times[(label, b)].append(time.perf_counter() - t0)
    for (label, b), values in times.items():
        results[label]["latency_ms"][b] = 1000 * statistics.median(values)

    peers = [p for p in PEERS if p in results]
    for r in results.values():
        r["x_best_peer"] = {
            b: r["latency_ms"][b] / min(results[p]["latency_ms"][b] for p in peers)
            for b in batches
            if peers
        }
    head = f"{'variant':<15}" + "".join(
        f"{'b' + str(b) + ' ms':>10}{'x fp32':>8}{'x peer':>8}" for b in batches
    )
    with record:
        print(
            f"INT8 on the CPU (ONNX Runtime, OpenVINO), {bundle.root}, {cpu().name} "
            f"{cpu().features}, {args.rounds} interleaved rounds (median)"
        )
        print(
            head
            + f"{'int/float ops':>15}{'f32 passes':>11}{'cos mean':>10}{'cos min':>9}{'top1':>7}"
        )
        for label, r in results.items():
            row = f"{label:<15}"
            for b in batches:
                ms = r["latency_ms"][b]
                peer = r["x_best_peer"].get(b)
                row += f"{ms:>10.1f}{results['fp32']['latency_ms'][b] / ms:>8.2f}"
                row += f"{peer:>8.2f}" if peer is not None else f"{'-':>8}"
            k = r["kernels"]
            row += f"{str(k['int']) + '/' + str(k['float']):>15}{k['passes']:>11}"
            row += f"{r['cosine_mean']:>10.4f}{r['cosine_min']:>9.4f}{r['top1']:>4}/{len(photos)}"
            print(row)
        print(
            "agreement: against fp32 (ONNX Runtime) on the shipped photographs: mean/lowest "
            "per-image cosine of the logits, images with the same top-1 class"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": cpu().to_dict(), "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
