"""`vggdeploy predict`: top-k per image, per-file errors, labels, JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from vggdeploy.bundle import Bundle, atomic_write_text
from vggdeploy.cli import main
from vggdeploy.errors import InputError
from vggdeploy.metrics import softmax, top_k
from vggdeploy.predict import class_names, predict_images
from vggdeploy.preprocess import load_image, preprocess_image
from vggdeploy.runtimes.onnxrt import OrtRuntime


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], -1)
    return np.clip(base + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    """Real-ish image files in several modes, and two broken ones."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    files = {
        "rgb": folder / "rgb.jpg",
        "gray": folder / "gray.png",
        "rgba": folder / "rgba.png",
        "cmyk": folder / "cmyk.jpg",
        "text": folder / "notes.jpg",
        "truncated": folder / "truncated.jpg",
    }
    Image.fromarray(_picture(48, 64, 0)).save(files["rgb"], quality=90)
    Image.fromarray(_picture(50, 40, 1)).convert("L").save(files["gray"])
    rgba = Image.fromarray(_picture(36, 36, 2)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(files["rgba"])
    Image.fromarray(_picture(40, 52, 3)).convert("CMYK").save(files["cmyk"])
    files["text"].write_text("this is not a picture\n")
    buffer = io.BytesIO()
    Image.fromarray(_picture(120, 160, 4)).save(buffer, format="JPEG", quality=95)
    files["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    return files


def test_softmax_and_top_k():
    logits = np.array([[1.0, 3.0, 2.0, 3.0], [1000.0, 0.0, 0.0, 0.0]], np.float32)
    probs = softmax(logits)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert probs[1, 0] == pytest.approx(1.0)  # no overflow for large logits
    names = ["a", "b", "c", "d"]
    top = top_k(probs[0], 3, names)
    assert [t[0] for t in top] == [1, 3, 2]  # ties keep the lower index first
    assert top[0][2] == pytest.approx(top[1][2]) and top[1][2] > top[2][2]


def test_predict_matches_the_runtime_and_keeps_going_past_broken_files(tiny_bundle_ro, images):
    bundle = Bundle.load(tiny_bundle_ro)
    with OrtRuntime(bundle) as rt:
        results = predict_images(rt, bundle, list(images.values()), top=3, batch=2)
        pre = bundle.preprocessing
        x = preprocess_image(load_image(images["rgb"]), pre)[None]
        expected = softmax(rt.infer({"input": x})["logits"])[0]
    by_name = {r.path.name: r for r in results}
    assert [r.path for r in results] == list(images.values())  # order kept
    assert by_name["notes.jpg"].error == "not an image Pillow can read"
    assert "truncated" in by_name["truncated.jpg"].error
    ok = [r for r in results if r.ok]
    assert len(ok) == 4
    for r in ok:
        probs = [p for _, _, p in r.top]
        assert len(r.top) == 3 and probs == sorted(probs, reverse=True)
    rgb = by_name["rgb.jpg"].top
    order = np.argsort(-expected, kind="stable")[:3]
    assert [i for i, _, _ in rgb] == order.tolist()
    np.testing.assert_allclose([p for _, _, p in rgb], expected[order], rtol=1e-5)
    assert rgb[0][1] == f"class {order[0]}"


def test_predict_cli_text_and_exit_code(tiny_bundle_ro, images, capsys):
    code, out, err = run_cli(["predict", tiny_bundle_ro, *images.values()], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == "error: 2 of 6 files could not be classified (see above)"
    lines = out.splitlines()
    assert f"{images['text']}: error: not an image Pillow can read" in lines
    assert sum(1 for line in lines if line.startswith(f"{images['truncated']}: error:")) == 1
    for key in ("rgb", "gray", "rgba", "cmyk"):
        # each answer says which runtime and precision produced it
        start = lines.index(f"{images[key]}  (onnxruntime[cpu] fp32)")
        ranks = lines[start + 1 : start + 6]
        assert [r.split(".")[0].strip() for r in ranks] == ["1", "2", "3", "4", "5"]
        values = [float(r.rsplit(None, 1)[1].rstrip("%")) for r in ranks]
        assert values == sorted(values, reverse=True) and 0 < values[0] <= 100


def test_predict_cli_all_good_exits_zero_and_json(tiny_bundle_ro, images, capsys):
    good = [images["rgb"], images["gray"]]
    code, out, _ = run_cli(["predict", tiny_bundle_ro, *good, "--json", "-", "--top", "10"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["failed"] == 0 and data["top"] == 10
    assert data["runtime"]["providers"] == ["CPUExecutionProvider"]
    for result in data["results"]:
        assert (result["runtime"], result["precision"]) == ("onnxruntime[cpu] fp32", "fp32")
        probs = [p["probability"] for p in result["predictions"]]
        assert [p["rank"] for p in result["predictions"]] == list(range(1, 11))
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0)  # all 10 classes
        assert sorted(p["index"] for p in result["predictions"]) == list(range(10))


def test_predict_json_lists_errors(tiny_bundle_ro, images, capsys):
    code, out, _ = run_cli(
        ["predict", tiny_bundle_ro, images["rgb"], images["text"], "--json", "-"], capsys
    )
    assert code == 1
    data = json.loads(out)
    assert data["failed"] == 1
    assert data["results"][1] == {
        "file": str(images["text"]),
        "error": "not an image Pillow can read",
    }


def test_predict_uses_bundle_labels_and_any_runtime(tiny_bundle, images, capsys):
    names = [f"thing-{i}" for i in range(10)]
    atomic_write_text(tiny_bundle / "labels.txt", "\n".join(names) + "\n")
    bundle = Bundle.load(tiny_bundle)
    with bundle.update() as manifest:
        manifest.labels = "labels.txt"
    bundle.add_file("labels.txt")
    assert class_names(bundle, 10) == names
    tops = {}
    for runtime in ("onnxruntime", "torch"):
        code, out, _ = run_cli(
            [
                "predict",
                tiny_bundle,
                images["rgb"],
                "--runtime",
                runtime,
                "--json",
                "-",
                "--top",
                "1",
            ],
            capsys,
        )
        assert code == 0
        [result] = json.loads(out)["results"]
        tops[runtime] = result["predictions"][0]
        assert tops[runtime]["label"] in names
    assert tops["torch"]["index"] == tops["onnxruntime"]["index"]
    assert tops["torch"]["probability"] == pytest.approx(
        tops["onnxruntime"]["probability"], rel=1e-4
    )


def test_predict_expands_folders(tiny_bundle_ro, images, capsys):
    code, out, _ = run_cli(["predict", tiny_bundle_ro, images["rgb"].parent, "--json", "-"], capsys)
    assert code == 1  # the folder holds the two broken files too
    data = json.loads(out)
    assert len(data["results"]) == 6 and data["failed"] == 2


def test_predict_bad_arguments(tiny_bundle_ro, images, capsys, tmp_path):
    code, _, err = run_cli(["predict", tiny_bundle_ro, images["rgb"], "--top", "11"], capsys)
    assert code == 1 and "--top 11 is more than the model's 10 classes" in err
    code, _, err = run_cli(["predict", tiny_bundle_ro, tmp_path / "missing.jpg"], capsys)
    assert code == 1 and "1 of 1 files" in err
    code, _, err = run_cli(
        ["predict", tiny_bundle_ro, images["rgb"], "--runtime", "torch:cuda"], capsys
    )
    if "no CUDA device visible to PyTorch" not in err:
        pytest.skip("this host has CUDA")
    assert code == 1 and "Traceback" not in err
    with pytest.raises(InputError, match="at least 1"):
        predict_images(None, Bundle.load(tiny_bundle_ro), [images["rgb"]], top=0)
