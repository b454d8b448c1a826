"""Record where NVIDIA ModelOpt's ONNX PTQ puts Q/DQ in a small VGG, for
tests/calibration/test_modelopt_placement.py (which compares vggdeploy's file node by node).

ModelOpt brings onnxruntime-gpu, which must never share a virtual environment with the
project's onnxruntime, so it runs from its own venv (a CPU machine is enough):

    python3 -m venv /work/modelopt-venv
    /work/modelopt-venv/bin/pip install torch==2.13.0 "nvidia-modelopt[onnx]==0.47.*"
    .venv/bin/python benchmarks/modelopt_reference.py --modelopt-python /work/modelopt-venv/bin/python

Steps: export the model with vggdeploy (`vggdeploy export vgg11 --width-divisor 4 --hidden 64
--num-classes 10 --image-size 32`: 16 to 128 channels, so ModelOpt's small-channel rule, which
leaves a Conv with fewer than 16 channels float, does not hide the placement), preprocess the
11 shipped photographs into a .npy, run `python -m modelopt.onnx.quantization --quantize_mode
int8 --calibration_eps cpu --high_precision_dtype fp32` (fp32 like vggdeploy's file; ModelOpt's
default casts the float parts to fp16), and write `vggdeploy.calibration.placement.qdq_placement`
of its output, with the versions and the command, as JSON (default
tests/data/modelopt_vgg11_placement.json). Scales are not recorded: they depend on calibration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import docs_section
import numpy as np

EXPORT_ARGS = [
    "vgg11",
    "--width-divisor",
    "4",
    "--hidden",
    "64",
    "--num-classes",
    "10",
    "--image-size",
    "32",
]
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests/data/modelopt_vgg11_placement.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modelopt-python", required=True, help="python of a venv with nvidia-modelopt[onnx]"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    docs_section.add_option(parser)
    args = parser.parse_args(argv)
    docs = docs_section.Recorder(__file__, args.write_docs, argv)

    import onnx

    from vggdeploy.bundle import Bundle
    from vggdeploy.calibration.placement import qdq_placement
    from vggdeploy.inputs import InputSet

    work = Path(tempfile.mkdtemp(prefix="modelopt_reference."))
    bundle_dir = work / "bundle"
    export = [sys.executable, "-m", "vggdeploy", "export", *EXPORT_ARGS, "--out", str(bundle_dir)]
    subprocess.run(export, check=True, stdout=subprocess.DEVNULL)
    bundle = Bundle.load(bundle_dir)
    photos = np.concatenate(list(InputSet.photographs(bundle, batch=4).batches()))
    np.save(work / "calib.npy", photos.astype(np.float32))

    quantized = work / "modelopt.int8.onnx"
    flags = [
        "--quantize_mode",
        "int8",
        "--calibration_eps",
        "cpu",
        "--high_precision_dtype",
        "fp32",
    ]
    command = [
        args.modelopt_python,
        "-m",
        "modelopt.onnx.quantization",
        "--onnx_path",
        str(bundle_dir / "model.onnx"),
        "--calibration_data_path",
        str(work / "calib.npy"),
        *flags,
        "--output_path",
        str(quantized),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = (
        "import json, importlib.metadata as m; print(json.dumps({d: m.version(d) for d in "
        "('nvidia-modelopt', 'onnxruntime-gpu', 'onnx', 'torch')}))"
    )
    versions = json.loads(
        subprocess.run(
            [args.modelopt_python, "-c", probe], check=True, capture_output=True, text=True
        ).stdout
    )
    record = {
        "source": {
            "what": "NVIDIA ModelOpt ONNX PTQ output, Q/DQ placement only (no scales)",
            "made_by": "benchmarks/modelopt_reference.py",
            "versions": versions,
            "model": "vggdeploy export " + " ".join(EXPORT_ARGS) + " (random weights, seed 0)",
            "command": "python -m modelopt.onnx.quantization --calibration_data_path "
            "photographs.npy " + " ".join(flags),
            "calibration": f"the {len(photos)} shipped photographs, preprocessed "
            "(ModelOpt feeds them one at a time, batch 1)",
        },
        **qdq_placement(onnx.load(str(quantized))),
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    with docs:
        print(
            f"wrote {args.out}: {len(record['inputs'])} quantized inputs, float {record['float']}"
        )
        print(f"versions: {json.dumps(versions, sort_keys=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
