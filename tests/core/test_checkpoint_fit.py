"""What a checkpoint says about its model: torchvision-reference checkpoints load (their
`argparse.Namespace` allow-listed, nothing else), an object that blocks loading is named with
the command that re-saves the weights, the sizes come from the shapes, and a checkpoint of
another VGG names the model it fits."""

from __future__ import annotations

import argparse
import fractions
import json
import shlex
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from vggdeploy.cli import main
from vggdeploy.errors import WeightsError
from vggdeploy.models import ModelSpec, random_state_dict, resolve_spec
from vggdeploy.weights import (
    WeightsSource,
    checkpoint_facts,
    fit_spec,
    read_checkpoint,
    read_checkpoint_and_args,
    spec_for_weights,
)

DATA = Path(__file__).resolve().parents[1] / "data"
DIGITS = DATA / "digits_vgg11.safetensors"
RECORD = json.loads((DATA / "digits_vgg11.json").read_text("utf-8"))
SMALL = {"width_divisor": 16, "hidden": 64, "num_classes": 10}


def reference_style(path: Path, state: dict, **args: object) -> Path:
    """As torchvision's references/classification/train.py saves a (DDP) checkpoint."""
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "lr_scheduler": {"last_epoch": 3},
            "epoch": 3,
            "args": argparse.Namespace(model="vgg11", **args),
        },
        path,
    )
    return path


def test_reference_checkpoint_loads_with_its_args(tmp_path: Path) -> None:
    state = load_file(str(DIGITS))
    path = reference_style(tmp_path / "ckpt.pth", state, val_crop_size=32, val_resize_size=36)
    loaded, args = read_checkpoint_and_args(path)
    assert sorted(loaded) == sorted(state)  # `module.` stripped, optimizer etc. left out
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert args["val_crop_size"] == 32 and args["model"] == "vgg11"
    facts = checkpoint_facts(path)
    assert facts.preprocessing == {"crop": 32, "resize": 36}
    # the allow-list is scoped to the load: torch's global list is left as it was
    assert argparse.Namespace not in torch.serialization.get_safe_globals()


def test_another_pickled_object_is_named_with_the_resave_command(tmp_path: Path) -> None:
    path = tmp_path / "with object.pth"
    torch.save({"model": load_file(str(DIGITS)), "ratio": fractions.Fraction(1, 3)}, path)
    with pytest.raises(WeightsError) as exc:
        read_checkpoint(path)
    text = str(exc.value)
    assert len(text.splitlines()) == 1
    assert "pickled objects other than tensors (fractions.Fraction)" in text
    assert "weights_only=False" not in text  # torch's allow-list, never the unsafe way
    # the command is one shell word after `python -c`, and re-saves only the weights
    command = text.split("allowing exactly them: ", 1)[1].split(" (then pass", 1)[0]
    words = shlex.split(command)
    assert words[:2] == ["python", "-c"] and len(words) == 3
    dest = tmp_path / "with object.state_dict.pth"
    exec(words[2], {})  # noqa: S102 - the test's own file, the command the user would run
    assert sorted(read_checkpoint(dest)) == sorted(load_file(str(DIGITS)))
    assert f"--weights {dest}" in text


def test_sizes_come_from_the_shapes() -> None:
    spec = spec_for_weights(resolve_spec("vgg11"), WeightsSource("file", path=str(DIGITS)))
    for key, value in RECORD["spec"].items():
        assert getattr(spec, key) == value, key


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("num_classes", 5, "--num-classes 5 does not fit"),
        ("hidden", 32, "--hidden 32 does not fit"),
        ("width_divisor", 8, "--width-divisor 8 does not fit"),
    ],
)
def test_a_size_that_contradicts_the_shapes_is_one_line(option, value, says) -> None:
    with pytest.raises(WeightsError) as exc:
        spec_for_weights(
            resolve_spec("vgg11"), WeightsSource("file", path=str(DIGITS)), **{option: value}
        )
    assert str(exc.value).startswith(says)
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("saved", "asked"),
    [("vgg11_bn", "vgg11"), ("vgg11", "vgg11_bn"), ("vgg16", "vgg11"), ("vgg13_bn", "vgg19_bn")],
)
def test_another_vgg_names_the_model_it_fits(tmp_path: Path, saved: str, asked: str) -> None:
    path = tmp_path / f"{saved}.safetensors"
    save_file(random_state_dict(resolve_spec(saved, **SMALL)), str(path))
    with pytest.raises(WeightsError) as exc:
        spec_for_weights(resolve_spec(asked), WeightsSource("file", path=str(path)))
    text = str(exc.value)
    assert text.endswith(f"use the model name {saved}"), text
    assert len(text.splitlines()) == 1
    if saved.removesuffix("_bn") == asked.removesuffix("_bn"):
        assert "BatchNorm" in text
    assert spec_for_weights(resolve_spec(saved), WeightsSource("file", path=str(path))).name == (
        saved
    )


def test_export_cli_reports_the_mismatch_in_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11_bn", "--weights", str(DIGITS), "--out", str(tmp_path / "b")])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.endswith("use the model name vgg11"), err
    assert not (tmp_path / "b").exists()


KEYS = (
    "features.0.weight",
    "features.1.running_mean",
    "features.3.weight",
    "features.4.weight",
    "classifier.0.weight",
    "classifier.6.weight",
    "features.x.weight",
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(KEYS),
        st.lists(st.integers(min_value=0, max_value=200_000), min_size=0, max_size=5).map(tuple),
    ),
    st.sampled_from(["vgg11", "vgg11_bn", "vgg16", "A-LRN"]),
)
def test_any_shapes_give_a_spec_or_one_weights_error(shapes: dict, name: str) -> None:
    """Shapes are untrusted: a spec comes back, or one WeightsError line; nothing else."""
    try:
        spec = fit_spec(resolve_spec(name), shapes, "ckpt", {})
    except WeightsError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert isinstance(spec, ModelSpec)


class _Call:
    """Unpickles by calling a function: what a code-carrying checkpoint does."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_the_resave_command_refuses_to_allow_a_function(tmp_path: Path) -> None:
    path = tmp_path / "calls.pth"
    torch.save({"model": load_file(str(DIGITS)), "x": _Call()}, path)
    with pytest.raises(WeightsError) as exc:
        read_checkpoint(path)
    text = str(exc.value)
    assert "getcwd" in text  # named, so the user can judge it
    command = text.split("allowing exactly them: ", 1)[1].split(" (then pass", 1)[0]
    with pytest.raises(AssertionError, match="not classes"):
        exec(shlex.split(command)[2], {})  # noqa: S102
    assert not (tmp_path / "calls.state_dict.pth").exists()


@pytest.mark.parametrize(
    ("extra", "crop", "resize", "interpolation"),
    [
        ([], 32, 36, "bicubic"),  # the checkpoint's evaluation preprocessing, all of it
        (["--resize", "40"], 32, 40, "bicubic"),  # --resize given: that one is the user's
        (["--image-size", "64"], 64, 73, "bilinear"),  # --image-size given: none of it
    ],
)
def test_export_takes_the_checkpoints_preprocessing_unless_told(
    tmp_path: Path, capsys, extra: list[str], crop: int, resize: int, interpolation: str
) -> None:
    ckpt = reference_style(
        tmp_path / "ckpt.pth",
        load_file(str(DIGITS)),
        val_crop_size=32,
        val_resize_size=36,
        interpolation="bicubic",
    )
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11", "--weights", str(ckpt), "--out", str(out), *extra])
    assert exc.value.code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    pre = manifest["preprocessing"]
    assert (pre["crop"], pre["resize"], pre["interpolation"]) == (crop, resize, interpolation)
    assert manifest["model"]["image_size"] == crop
    printed = capsys.readouterr().out
    assert "--num-classes 10 read from the checkpoint's shapes" in printed
    assert ("args.val_crop_size" in printed) == (crop == 32)


def test_an_interpolation_vggdeploy_lacks_is_one_line(tmp_path: Path, capsys) -> None:
    ckpt = reference_style(
        tmp_path / "ckpt.pth", load_file(str(DIGITS)), val_crop_size=32, interpolation="box"
    )
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11", "--weights", str(ckpt), "--out", str(tmp_path / "b")])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "args.interpolation 'box'" in err
    assert "--image-size" in err


@pytest.mark.parametrize(
    "args",
    [{"val_crop_size": 10**9}, {"val_crop_size": 33}, {"val_crop_size": 64, "val_resize_size": 8}],
)
def test_recorded_preprocessing_that_does_not_fit_is_one_line(tmp_path: Path, capsys, args) -> None:
    ckpt = reference_style(tmp_path / "ckpt.pth", load_file(str(DIGITS)), **args)
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11", "--weights", str(ckpt), "--out", str(tmp_path / "b")])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the checkpoint's recorded preprocessing" in err, err
    assert not (tmp_path / "b").exists()
