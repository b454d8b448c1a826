"""What DeepStream's resizing costs in top-1, against the bundle's resize-then-centre-crop.

nvinfer never crops: it scales the whole frame (or object) to the network's H x W, stretching
it, or with `maintain-aspect-ratio=1` (+ `symmetric-padding=1`) scales it to fit and pads with
black. The bundle resizes the shorter side to `resize` and centre-crops `crop` x `crop`. This
script runs the same model on the same images prepared four ways:

  (a) bundle     the bundle's preprocessing (resize shorter side, centre crop, exact mean/std)
  (b) stretch    whole frame scaled to H x W, exact mean/std (as with --bake-normalization)
  (b1) stretch, single scale: as (b), normalized as nvinfer's default config does
                 (offsets 255*mean, one net-scale-factor; see packaging.deepstream.closest_scale)
  (c) pad        whole frame scaled to fit H x W keeping its aspect ratio, centred, black
                 padding, exact mean/std

Data:
  digits   the trained digits VGG-11 (tests/data/digits_vgg11.*) on the 540 held-out digits,
           each 32x32 digit placed in the middle of a black frame of aspect 1:1 (control: all
           four agree), 4:3 and 16:9 (as a camera frame would hold it). Top-1 accuracy.
  photos   the 11 photographs shipped with vggdeploy through a bundle (--bundle, default
           runs/vgg16/bundle). Its weights may be random, so only top-1 agreement with (a)
           is reported: how often the decision changes with the geometry.

Run: .venv/bin/python benchmarks/deepstream_resize.py [--bundle runs/vgg16/bundle] [--no-digits]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import docs_section
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def normalize(rgb: np.ndarray, pre, single_scale: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in the bundle's order and normalization."""
    x = rgb.astype(np.float32)
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    if pre.channel_order == "BGR":
        x, mean, std = x[..., ::-1], mean[::-1], std[::-1]
    if single_scale:
        from vggdeploy.packaging import closest_scale

        choice = closest_scale(tuple(float(s) for s in std), pre.scale)
        x = np.float32(choice.net_scale_factor) * (x - mean / np.float32(pre.scale))
    else:
        x = (x * np.float32(pre.scale) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def stretch(img: Image.Image, h: int, w: int, pre) -> Image.Image:
    from vggdeploy.preprocess import _resample

    return img.resize((w, h), _resample(pre.interpolation))


def pad(img: Image.Image, h: int, w: int, pre) -> Image.Image:
    from vggdeploy.preprocess import _resample

    ratio = min(w / img.width, h / img.height)
    sw, sh = max(1, round(img.width * ratio)), max(1, round(img.height * ratio))
    scaled = img.resize((sw, sh), _resample(pre.interpolation))
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    canvas.paste(scaled, ((w - sw) // 2, (h - sh) // 2))
    return canvas


def prepared(images: list[Image.Image], pre, h: int, w: int) -> dict[str, np.ndarray]:
    from vggdeploy.preprocess import preprocess_image

    return {
        "a": np.stack([preprocess_image(img, pre) for img in images]),
        "b": np.stack([normalize(np.asarray(stretch(i, h, w, pre)), pre) for i in images]),
        "b1": np.stack(
            [normalize(np.asarray(stretch(i, h, w, pre)), pre, single_scale=True) for i in images]
        ),
        "c": np.stack([normalize(np.asarray(pad(i, h, w, pre)), pre) for i in images]),
    }


def predict(session, x: np.ndarray, batch: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else batch
    outs = [session.run(None, {name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(outs).argmax(1)


def digits_rows() -> list[list[str]]:
    from vggdeploy.bundle import Bundle
    from vggdeploy.exporter.onnx_export import ExportOptions, export_bundle
    from vggdeploy.models import resolve_spec
    from vggdeploy.ortsession import cpu_session
    from vggdeploy.preprocess import Preprocessing
    from vggdeploy.weights import WeightsSource

    spec_ = importlib.util.spec_from_file_location("train_digits", REPO / "scripts/train_digits.py")
    script = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(script)
    record = json.loads((DATA / "digits_vgg11.json").read_text("utf-8"))
    images, labels = script.digit_images()
    test = script.split_indices(labels)[1]
    s = record["spec"]
    spec = resolve_spec(
        s["name"],
        width_divisor=s["width_divisor"],
        hidden=s["hidden"],
        num_classes=s["num_classes"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        options = ExportOptions(
            image_size=record["image_size"], preprocessing=Preprocessing(**record["preprocessing"])
        )
        weights = WeightsSource("file", path=str(DATA / "digits_vgg11.safetensors"))
        export_bundle(spec, weights, Path(tmp) / "b", options)
        bundle = Bundle.load(Path(tmp) / "b")
        session = cpu_session(bundle.artifact_path("onnx.fp32", verify=True))
        pre = bundle.preprocessing
    size = record["image_size"]
    rows = []
    for aspect, width in (
        ("1:1", size),
        ("4:3", round(size * 4 / 3)),
        ("16:9", round(size * 16 / 9)),
    ):
        frames = []
        for i in test:
            frame = Image.new("RGB", (width, size), (0, 0, 0))
            left = int(round((width - size) / 2.0))  # where the bundle's centre crop starts
            digit = Image.fromarray(images[i], mode="L").convert("RGB")
            frame.paste(digit, (left, 0))
            frames.append(frame)
        y = labels[test]
        preds = {k: predict(session, v) for k, v in prepared(frames, pre, size, size).items()}
        acc = {k: float((p == y).mean()) for k, p in preds.items()}
        agree = {k: float((p == preds["a"]).mean()) for k, p in preds.items()}
        rows.append(
            [f"digits {aspect} ({len(y)}), {width}x{size}"]
            + [f"{acc[k]:.2%} ({agree[k]:.0%})" for k in ("a", "b", "b1", "c")]
        )
    return rows


def photo_rows(bundle_path: Path) -> list[list[str]]:
    from vggdeploy.bundle import Bundle
    from vggdeploy.inputs import bundle_input_shape, default_images_dir
    from vggdeploy.ortsession import cpu_session
    from vggdeploy.preprocess import find_images, load_image

    bundle = Bundle.load(bundle_path)
    pre = bundle.preprocessing
    _, h, w = bundle_input_shape(bundle)
    paths = find_images(default_images_dir())
    images = [load_image(p) for p in paths]
    session = cpu_session(bundle.artifact_path("onnx.fp32", verify=True))
    preds = {k: predict(session, v, 4) for k, v in prepared(images, pre, h, w).items()}
    wide = sum(1 for i in images if i.width != i.height)
    weights = bundle.manifest.weights.source
    label = (
        f"photos ({len(paths)}, {wide} not square), {bundle.manifest.model.name} {weights} weights"
    )
    return [
        [label]
        + [f"- ({float((preds[k] == preds['a']).mean()):.0%})" for k in ("a", "b", "b1", "c")]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "runs/vgg16/bundle")
    parser.add_argument("--no-digits", action="store_true")
    docs_section.add_option(parser)
    args = parser.parse_args(argv)
    record = docs_section.Recorder(__file__, args.write_docs, argv)
    sys.path.insert(0, str(REPO / "src"))
    from vggdeploy.report.tables import markdown_table

    rows = [] if args.no_digits else digits_rows()
    skipped = None
    if args.bundle.is_dir():
        rows += photo_rows(args.bundle)
    else:
        skipped = f"(no bundle at {args.bundle}: photographs skipped)"
    headers = [
        "data",
        "(a) bundle: resize+crop",
        "(b) stretch",
        "(b1) stretch, 1 scale",
        "(c) fit+pad",
    ]
    with record:
        if skipped:
            print(skipped)
        print("top-1 accuracy (agreement with (a)):")
        print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
