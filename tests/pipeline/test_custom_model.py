"""The user's own model through `vggdeploy pipeline`, end to end, with no options beyond the
checkpoint, the class names and a labelled folder.

The checkpoint is the real 10-class digits VGG-11 (tests/data/digits_vgg11.*, trained by
scripts/train_digits.py) saved the way torchvision's reference training script saves one
(references/classification/train.py: `{"model", "optimizer", "lr_scheduler", "epoch",
"args"}`, `args` an `argparse.Namespace`, keys prefixed `module.` by DistributedDataParallel).
Nothing says its sizes (10 classes, width 1/16, hidden 64) or its 32x32 preprocessing on the
command line: the shapes and the recorded `val_crop_size`/`val_resize_size` do. The class
names ("zero".."nine") must reach every artifact: labels.txt, the Triton and DeepStream
packages, and predict's answers; the report must show each precision's top-1 beside latency.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from digits_script import train_digits

from vggdeploy.cli import main

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
RECORD = json.loads((DATA / "digits_vgg11.json").read_text("utf-8"))
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PER_CLASS = 3  # 30 images: calibration takes 22, evaluation all 30

pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn (dev extra)")


def reference_checkpoint(path: Path) -> Path:
    """The digits weights as torchvision's reference script saves a DDP-trained checkpoint."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(DATA / "digits_vgg11.safetensors"))
    size = RECORD["image_size"]
    args = argparse.Namespace(
        model="vgg11",
        lr=0.01,
        epochs=10,
        train_crop_size=size,
        val_crop_size=RECORD["preprocessing"]["crop"],
        val_resize_size=RECORD["preprocessing"]["resize"],
        interpolation="bilinear",
        distributed=True,
    )
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {
                "state": {},
                "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": list(range(len(state)))}],
            },
            "lr_scheduler": {"step_size": 30, "gamma": 0.1, "last_epoch": 9},
            "epoch": 9,
            "args": args,
        },
        path,
    )
    return path


def labelled_folder(root: Path) -> dict[str, int]:
    """PER_CLASS held-out digits of each class under root/<class name>/; name -> digit."""
    from PIL import Image

    script = train_digits()
    images, labels = script.digit_images()
    _, test = script.split_indices(labels)
    counts = dict.fromkeys(NAMES, 0)
    for i in test:
        name = NAMES[int(labels[i])]
        if counts[name] < PER_CLASS:
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(root / name / f"{int(i):04d}.png")
            counts[name] += 1
    return {name: d for d, name in enumerate(NAMES)}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("custom")
    ckpt = reference_checkpoint(root / "checkpoint.pth")
    labels = root / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n", "utf-8")
    digit_of = labelled_folder(root / "val")
    out = root / "run"
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "vgg11", "--weights", str(ckpt), "--labels", str(labels),
              "--images", str(root / "val"), "--out", str(out)])  # fmt: skip
    report = json.loads((out / "report.json").read_text("utf-8"))
    assert exc.value.code == 0, report["failures"]
    return SimpleNamespace(root=root, out=out, report=report, digit_of=digit_of)


def test_sizes_and_preprocessing_come_from_the_checkpoint(run: SimpleNamespace) -> None:
    manifest = json.loads((run.out / "bundle" / "manifest.json").read_text("utf-8"))
    for key in ("num_classes", "width_divisor", "hidden"):
        assert manifest["model"][key] == RECORD["spec"][key], key
    assert manifest["model"]["image_size"] == RECORD["image_size"]
    assert manifest["preprocessing"]["resize"] == RECORD["preprocessing"]["resize"]
    assert manifest["preprocessing"]["crop"] == RECORD["preprocessing"]["crop"]


def test_report_shows_every_precisions_top1_beside_latency(run: SimpleNamespace) -> None:
    evaluation = run.report["evaluate"]
    assert evaluation["count"] == 10 * PER_CLASS
    assert evaluation["class_mapping"]["method"] == "labels"
    by_precision = {r["precision"]: r for r in evaluation["results"]}
    assert set(by_precision) == {"fp32", "fp16", "int8"}
    for r in by_precision.values():
        # The digits model scores 99% on the held-out split: a wrong preprocessing or class
        # mapping falls to chance (10%).
        assert r["top1"] >= 0.9, r
    bench = {(c["label"]): c["latency_ms"]["median"] for c in run.report["bench"]["cases"]
             if c["batch"] == 1}  # fmt: skip
    md = (run.out / "report.md").read_text("utf-8")
    section = md.split("## Accuracy and latency", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| onnxruntime")]
    assert len(rows) == 3, section
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        result = next(r for r in evaluation["results"] if r["label"] == cells[0])
        assert cells[1] == f"{100 * result['top1']:.2f}%"
        assert cells[2] == f"{100 * result['top5']:.2f}%"
        assert cells[4] == f"{bench[cells[0]]:.2f}", (row, bench)  # median ms, batch 1
    summary = run.report["stages"]
    assert {s["name"]: s["status"] for s in summary}["evaluate"] == "done"


def test_class_names_reach_every_artifact(run: SimpleNamespace, capsys) -> None:
    bundle = run.out / "bundle"
    assert (bundle / "labels.txt").read_text("utf-8").split() == NAMES
    triton, deepstream = run.root / "triton", run.root / "deepstream"
    for fmt, dest in (("triton", triton), ("deepstream", deepstream)):
        with pytest.raises(SystemExit) as exc:
            main(["package", str(bundle), "--format", fmt, "--out", str(dest)])
        assert exc.value.code == 0, fmt
    triton_labels = sorted(triton.glob("*/labels.txt"))
    assert triton_labels
    for path in triton_labels:
        assert path.read_text("utf-8").split() == NAMES
    # clients must send normalized tensors: each Triton model says how to make them, in a
    # README and in config.pbtxt's `parameters` (which Triton's own schema accepts)
    from vggdeploy.packaging.triton_schema import parse_config_pbtxt

    pre = RECORD["preprocessing"]
    for folder in (p.parent for p in triton_labels):
        readme = (folder / "README.md").read_text("utf-8")
        assert f"resize the shorter side to {pre['resize']} pixels" in readme
        assert f"center-crop {pre['crop']}x{pre['crop']}" in readme
        assert "mean [0.485, 0.456, 0.406]" in readme and "std [0.229, 0.224, 0.225]" in readme
        config = parse_config_pbtxt((folder / "config.pbtxt").read_text("utf-8"))
        if config is not None:
            params = {k: v.string_value for k, v in config.parameters.items()}
            assert params["preprocessing_resize"] == str(pre["resize"])
            assert params["preprocessing_crop"] == str(pre["crop"])
            assert params["preprocessing_mean"] == "0.485,0.456,0.406"
            assert params["preprocessing_std"] == "0.229,0.224,0.225"
    # nvinfer's classifier labels: one line per output layer, the names separated by ';'
    assert (deepstream / "labels.txt").read_text("utf-8").strip().split(";") == NAMES
    capsys.readouterr()

    image = next((run.root / "val" / "seven").iterdir())
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(bundle), str(image), "--json", "-"])
    assert exc.value.code == 0
    answer = json.loads(capsys.readouterr().out)
    (result,) = answer["results"]
    assert result["predictions"][0]["label"] == "seven"
    assert "class 7" not in json.dumps(answer)
    assert (result["runtime"], result["precision"]) == ("onnxruntime[cpu] fp32", "fp32")
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(bundle), str(image), "--runtime", "onnxruntime@int8"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"{image}  (onnxruntime[cpu] int8)" in text.splitlines()
    assert re.search(r"1\. seven\b", text), text


def test_unlabelled_images_say_accuracy_was_not_measured(tmp_path: Path) -> None:
    """A flat --images folder calibrates and validates, and the report says why no accuracy."""
    from PIL import Image

    from vggdeploy.pipeline import PipelineOptions, run_pipeline
    from vggdeploy.report.pipeline import write_report

    script = train_digits()
    images, _ = script.digit_images()
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(6):
        Image.fromarray(images[i], mode="L").save(flat / f"{i}.png")
    out = tmp_path / "run"
    options = PipelineOptions(
        images=str(flat),
        precisions=("fp32",),
        image_size=32,
        batches=(1,),
        bench_iterations=2,
        bench_runtimes=("onnxruntime",),
        validate_samples=4,
        num_classes=10,
        width_divisor=16,
        hidden=64,
    )
    report = run_pipeline("vgg11", out, options)
    write_report(out)
    stage = next(s for s in report["stages"] if s["name"] == "evaluate")
    assert stage["status"] == "skipped"
    assert stage["reason"].startswith("accuracy not measured: ")
    assert "no class sub-folders" in stage["reason"]
    assert "evaluate" not in report and not (out / "evaluate.json").exists()
    md = (out / "report.md").read_text("utf-8")
    assert "## Accuracy and latency\n\nAccuracy not measured: " in md
    assert "no class sub-folders" in md.split("## Accuracy and latency", 1)[1]
