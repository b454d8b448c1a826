"""evaluate: ImageFolder class mapping, top-k scoring, side-by-side results, CLI and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vggdeploy.bundle import Bundle, atomic_write_text
from vggdeploy.cli import cli
from vggdeploy.errors import InputError
from vggdeploy.evaluate import evaluate_bundle, topk_hits
from vggdeploy.inputs import map_class_folders, normalize_name
from vggdeploy.preprocess import IMAGENET_MEAN, IMAGENET_STD
from vggdeploy.runtimes.base import Runtime, TensorSpec
from vggdeploy.runtimes.registry import RuntimeSpec, open_available, parse_spec


def _image(path: Path, rgb: tuple[int, int, int], size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)


def _with_labels(bundle_dir: Path, labels: list[str]) -> Bundle:
    atomic_write_text(bundle_dir / "labels.txt", "\n".join(labels) + "\n")
    bundle = Bundle.load(bundle_dir)
    with bundle.update() as manifest:
        manifest.labels = "labels.txt"
    bundle.add_file("labels.txt")
    return bundle


# -- class folders ------------------------------------------------------------------------------


def test_folders_match_labels_ignoring_case_and_underscores(tmp_path: Path) -> None:
    for folder in ("Golden_Retriever", "tabby  cat", "zebra"):
        _image(tmp_path / folder / "a.png", (0, 0, 0))
    _image(tmp_path / "zebra" / "nested" / "b.jpg", (0, 0, 0))
    labels = ["tabby cat", "golden retriever", "lion", "Zebra"]
    mapping = map_class_folders(tmp_path, labels, 4)
    assert mapping.folders == {"Golden_Retriever": 1, "tabby  cat": 0, "zebra": 3}
    assert mapping.method == "labels"
    assert sorted((p.name, c) for p, c in mapping.samples) == [
        ("a.png", 0),
        ("a.png", 1),
        ("a.png", 3),
        ("b.jpg", 3),
    ]
    assert normalize_name(" Golden__Retriever ") == "golden retriever"


def test_unmatched_folders_are_one_error_listing_them(tmp_path: Path) -> None:
    for folder in ("cat", "dog", "zebra", "emu"):
        _image(tmp_path / folder / "a.png", (0, 0, 0))
    with pytest.raises(InputError) as exc:
        map_class_folders(tmp_path, ["cat", "zebra", "lion"], 3)
    message = str(exc.value)
    assert "2 of 4 class folders" in message
    assert "'dog'" in message and "'emu'" in message and "'cat'" not in message.split(":")[0]
    assert "--labels" in message


def test_duplicate_label_names_are_refused_not_guessed(tmp_path: Path) -> None:
    _image(tmp_path / "crane" / "a.png", (0, 0, 0))
    with pytest.raises(InputError, match="'crane' \\(classes 0, 2\\)"):
        map_class_folders(tmp_path, ["crane", "heron", "crane"], 3)


def test_without_labels_folders_map_alphabetically_and_say_so(tmp_path: Path) -> None:
    for folder in ("b", "a", "c"):
        _image(tmp_path / folder / "x.png", (0, 0, 0))
    _image(tmp_path / "loose.png", (0, 0, 0))
    mapping = map_class_folders(tmp_path, None, 10)
    assert mapping.folders == {"a": 0, "b": 1, "c": 2}
    assert mapping.method == "alphabetical"
    assert "alphabetically" in mapping.note and "ImageFolder" in mapping.note
    assert "1 images directly under" in mapping.note
    with pytest.raises(InputError, match="3 class folders but the model has 2 outputs"):
        map_class_folders(tmp_path, None, 2)


def test_a_folder_without_class_folders_is_a_clear_error(tmp_path: Path) -> None:
    _image(tmp_path / "loose.png", (0, 0, 0))
    with pytest.raises(InputError, match="no class sub-folders \\(1 loose images\\)"):
        map_class_folders(tmp_path, None, 10)
    with pytest.raises(InputError, match="does not exist"):
        map_class_folders(tmp_path / "missing", None, 10)


# -- scoring ------------------------------------------------------------------------------------


def test_topk_hits_by_hand() -> None:
    logits = np.array(
        [
            [0.1, 0.9, 0.0, 0.2],  # order 1, 3, 0, 2
            [0.5, 0.2, 0.3, 0.4],  # order 0, 3, 2, 1
            [0.3, 0.3, 0.1, 0.0],  # a tie: the lower index wins, like argmax
        ],
        dtype=np.float32,
    )
    targets = np.array([1, 2, 1])
    assert topk_hits(logits, targets, 1).tolist() == [True, False, False]
    assert topk_hits(logits, targets, 2).tolist() == [True, False, True]
    assert topk_hits(logits, targets, 3).tolist() == [True, True, True]
    assert topk_hits(logits, targets, 10).tolist() == [True, True, True]  # k > classes


class ColourRuntime(Runtime):
    """Classifies a solid-colour image by its red value (class = red / 20).

    The "int8" flavour gets every image with a non-zero green channel wrong (class + 1), so
    the expected accuracy of each flavour can be counted by hand.
    """

    name = "onnxruntime"

    def __init__(self, precision: str) -> None:
        super().__init__()
        self.precision = precision

    @property
    def label(self) -> str:
        return f"colour {self.precision}"

    def _load(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return (
            [TensorSpec("input", ("batch", 3, 32, 32), "float32")],
            [TensorSpec("logits", ("batch", 10), "float32")],
        )

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["input"]
        rgb = (x.mean(axis=(2, 3)) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255
        cls = np.rint(rgb[:, 0] / 20).astype(int)
        if self.precision == "int8":
            cls = np.where(rgb[:, 1] > 10, (cls + 1) % 10, cls)
        logits = np.zeros((len(x), 10), np.float32)
        logits[np.arange(len(x)), cls] = 10.0
        # Runner-up: the next class, so top-5 catches the int8 mistakes (class + 1 then class).
        logits[np.arange(len(x)), (cls + 9) % 10] = 5.0
        return {"logits": logits}


def _colour_folder(root: Path) -> None:
    # classes a, b, c -> alphabetical indices 0, 1, 2 -> red 0, 20, 40; 7 images in all,
    # two of them (in b and c) marked with green for the "int8" runtime to get wrong.
    for cls, name, count, marked in ((0, "a", 2, 0), (1, "b", 3, 1), (2, "c", 2, 1)):
        for i in range(count):
            _image(root / name / f"{i}.png", (20 * cls, 100 if i < marked else 0, 0))


def test_accuracy_deltas_and_agreement_by_hand(tiny_bundle_ro: Path, tmp_path: Path) -> None:
    _colour_folder(tmp_path / "images")
    made: list[RuntimeSpec] = []

    def factory(bundle: Bundle, target: RuntimeSpec, **options) -> Runtime:
        made.append(target)
        return ColourRuntime(target.precision)

    report = evaluate_bundle(
        Bundle.load(tiny_bundle_ro),
        tmp_path / "images",
        specs=[parse_spec("onnxruntime")],
        precisions=["fp32", "int8"],
        batch=3,  # 7 images: batches of 3, 3, 1
        runtime_factory=factory,
    )
    assert [t.precision for t in made] == ["fp32", "int8"]
    assert report["count"] == 7 and report["classes"] == 3
    assert report["class_mapping"]["method"] == "alphabetical"
    fp32, int8 = report["results"]
    assert (fp32["correct_top1"], fp32["top1"]) == (7, 1.0)
    assert (int8["correct_top1"], int8["correct_top5"]) == (5, 7)
    assert int8["top1"] == pytest.approx(5 / 7)
    assert int8["delta_top1"] == pytest.approx(100 * (5 / 7 - 1), abs=1e-3)
    assert int8["delta_top5"] == 0
    assert int8["agreement_top1"] == pytest.approx(5 / 7)
    assert fp32["delta_top1"] == 0 and fp32["agreement_top1"] == 1.0
    assert int8["per_class_top1"] == {"a": 1.0, "b": pytest.approx(2 / 3), "c": 0.5}
    json.dumps(report)  # the whole report is JSON-ready

    limited = evaluate_bundle(
        Bundle.load(tiny_bundle_ro),
        tmp_path / "images",
        precisions=["fp32"],
        limit=4,
        runtime_factory=lambda b, t, **kw: ColourRuntime(t.precision),
    )
    assert limited["count"] == 4 and limited["limit"] == {"limit": 4, "seed": 0}


# -- the real runtime and the CLI ---------------------------------------------------------------


def _random_folder(root: Path, classes: int = 3, per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(path)


def test_cli_evaluate_on_onnxruntime_writes_json(tiny_bundle: Path, tmp_path: Path) -> None:
    _random_folder(tmp_path / "images")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        cli,
        ["evaluate", str(tiny_bundle), "--images", str(tmp_path / "images"), "--batch", "4"]
        + ["--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "onnxruntime[cpu] fp32" in result.output and "top-1" in result.output
    assert "alphabetically" in result.output
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert report["count"] == 9 and row["precision"] == "fp32"
    assert row["describe"]["providers"] == ["CPUExecutionProvider"]
    assert 0 <= row["correct_top1"] <= row["correct_top5"] <= 9
    # Random weights: whatever they predict, top-1 is the argmax of ONNX Runtime's logits.
    assert row["top1"] == row["correct_top1"] / 9


def test_cli_evaluate_label_mismatch_is_one_line(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vggdeploy.cli import main

    _with_labels(tiny_bundle, [f"digit {i}" for i in range(10)])
    _random_folder(tmp_path / "images", classes=2, per_class=1)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tiny_bundle), "--images", str(tmp_path / "images")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "2 of 2 class folders" in err and "'class_0'" in err and "'digit 0'" in err


def test_cli_evaluate_missing_precision_names_the_fix(tiny_bundle: Path, tmp_path: Path) -> None:
    _random_folder(tmp_path / "images", classes=1, per_class=1)
    result = CliRunner().invoke(
        cli,
        ["evaluate", str(tiny_bundle), "--images", str(tmp_path / "images"), "--precision", "fp16"],
    )
    assert result.exit_code != 0
    assert f"vggdeploy convert {tiny_bundle} --precision fp16" in str(result.exception)


def test_defaults_skip_what_this_host_cannot_run_but_named_targets_must_run(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    from vggdeploy.errors import RuntimeUnavailableError

    _colour_folder(tmp_path / "images")
    (tiny_bundle / "model.fp16.engine").write_bytes(b"not a real engine")
    bundle = Bundle.load(tiny_bundle)
    bundle.add_artifact(
        "engine.fp16", "model.fp16.engine", kind="tensorrt-engine", precision="fp16"
    )

    def factory(bundle: Bundle, target: RuntimeSpec, **options) -> Runtime:
        if target.name == "tensorrt":  # the registry's check, as the default factory runs it
            return open_available(bundle, target, **options)
        return ColourRuntime(target.precision)

    report = evaluate_bundle(bundle, tmp_path / "images", runtime_factory=factory)
    assert [(r["runtime"], r["precision"]) for r in report["results"]] == [("onnxruntime", "fp32")]
    [skipped] = report["skipped"]
    assert skipped["target"] == "tensorrt@fp16"
    assert "the tensorrt package is not installed" in skipped["reason"]
    with pytest.raises(RuntimeUnavailableError, match="tensorrt package is not installed"):
        evaluate_bundle(
            bundle,
            tmp_path / "images",
            specs=[parse_spec("tensorrt@fp16")],
            runtime_factory=factory,
        )


def test_the_fp16_cpu_note_follows_the_probe(monkeypatch) -> None:
    """The note on an ONNX Runtime CPU fp16 row says what this host's CPU provider computes."""
    import vggdeploy.ortsession as ortsession
    from vggdeploy.report.evaluate import render_evaluation

    row = {
        "label": "onnxruntime[cpu] fp16", "runtime": "onnxruntime", "device": "cpu",
        "precision": "fp16", "top1": 0.5, "top5": 1.0, "delta_top1": 0.0, "delta_top5": 0.0,
        "agreement_top1": 1.0, "agreement_with": None,
    }  # fmt: skip
    report = {
        "count": 2, "limit": None, "classes": 2, "class_mapping": {"note": "alphabetical"},
        "results": [row], "skipped": [],
    }  # fmt: skip
    for computes, says in ((False, "in fp32 with fp16-rounded weights"), (True, "in fp16;")):
        monkeypatch.setattr(ortsession, "cpu_computes_fp16", lambda computes=computes: computes)
        assert says in render_evaluation(report, "imgs")
