"""An untrusted checkpoint is refused in one line before anything is written.

Meta, integer, bool, complex, sparse, NaN and infinite weights; files that hold no state dict;
corrupt or truncated files; and pickles that carry code (refused by `weights_only=True`
without running it). Each case drives `vggdeploy export` and checks the exit code, the one
`error: ...` line (no traceback) and that no output folder was made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vggdeploy.cli import main
from vggdeploy.errors import WeightsError
from vggdeploy.models import build_model, random_state_dict, resolve_spec
from vggdeploy.weights import WeightsSource, load_model, read_checkpoint

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10}
TINY_ARGS = ["--width-divisor", "16", "--hidden", "64", "--num-classes", "10", "--image-size", "32"]
KEY = "classifier.6.weight"


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state_dict(resolve_spec("vgg11", **TINY), seed=0)


def export_fails(tmp_path: Path, weights: Path, capsys) -> str:
    """Run `export` with `weights`; return its one error line after checking exit and files."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11", *TINY_ARGS, "--weights", str(weights), "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code == 1
    assert "Traceback" not in err and len(lines) == 1, err
    assert (
        lines[0].startswith(f"error: weights file {weights}")
        or lines[0].startswith(f"error: cannot read weights file {weights}")
        or lines[0].startswith(f"error: weights from {weights}")
    ), lines[0]
    assert not out.exists()
    assert all(p.is_file() for p in tmp_path.iterdir())  # no folder was made
    assert all(ord(c) >= 32 for c in lines[0])  # no terminal escapes from a library's message
    return lines[0]


def changed(state: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> dict:
    return {**state, key: value}


# -- tensors the model cannot use -----------------------------------------------------------------


def test_meta_tensors_are_refused(tmp_path: Path, capsys) -> None:
    with torch.device("meta"):
        model = build_model(resolve_spec("vgg11", **TINY))
    path = tmp_path / "meta.pth"
    torch.save(model.state_dict(), path)
    line = export_fails(tmp_path, path, capsys)
    assert "meta tensor with no data" in line


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int8, torch.uint8, torch.bool, torch.complex64]
)
def test_non_float_weights_are_refused_not_cast(tmp_path, capsys, state, dtype) -> None:
    path = tmp_path / "w.pth"
    torch.save(changed(state, KEY, torch.ones_like(state[KEY]).to(dtype)), path)
    line = export_fails(tmp_path, path, capsys)
    name = str(dtype).removeprefix("torch.")
    assert f"{KEY} is {name}, not floating point" in line


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, capsys, state, bad, suffix) -> None:
    from safetensors.torch import save_file

    tensor = state[KEY].clone()
    tensor[0, 3] = bad
    path = tmp_path / f"w{suffix}"
    weights = changed(state, KEY, tensor)
    torch.save(weights, path) if suffix == ".pth" else save_file(weights, str(path))
    line = export_fails(tmp_path, path, capsys)
    assert f"{KEY} has 1 NaN or infinite values" in line


def test_a_float_counter_for_num_batches_tracked_is_refused(tmp_path, capsys) -> None:
    state = random_state_dict(resolve_spec("vgg11_bn", **TINY), seed=0)
    state["features.1.num_batches_tracked"] = torch.tensor(1.5)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="num_batches_tracked is float32, not an integer"):
        load_model(resolve_spec("vgg11_bn", **TINY), WeightsSource.parse(str(path)))


def test_sparse_tensors_are_refused(tmp_path, capsys, state) -> None:
    path = tmp_path / "w.pth"
    torch.save(changed(state, KEY, state[KEY].to_sparse()), path)
    line = export_fails(tmp_path, path, capsys)
    assert f"{KEY} is a sparse_coo" in line


def test_half_precision_weights_still_load(tmp_path, state) -> None:
    """Float weights of another width are fine: only the kind of number is checked."""
    path = tmp_path / "w.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
    model, _ = load_model(resolve_spec("vgg11", **TINY), WeightsSource.parse(str(path)))
    assert model.state_dict()[KEY].dtype == torch.float32


# -- files that hold no state dict ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        [torch.zeros(3)],
        torch.zeros(3),
        {"features": {"0": {"weight": torch.zeros(3)}}},
        {0: torch.zeros(3)},
        {},
        {"state_dict": {}},
        "a string",
        None,
    ],
    ids=["list", "tensor", "nested", "int-keys", "empty", "empty-wrapped", "str", "none"],
)
def test_a_checkpoint_that_is_not_a_state_dict_is_one_line(tmp_path, capsys, content) -> None:
    path = tmp_path / "w.pth"
    torch.save(content, path)
    line = export_fails(tmp_path, path, capsys)
    assert "does not hold a state_dict of tensors" in line


# -- corrupt files ----------------------------------------------------------------------------------


def test_a_truncated_pth_is_one_line(tmp_path, capsys, state) -> None:
    path = tmp_path / "w.pth"
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "cannot read weights file" in export_fails(tmp_path, path, capsys)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda data: data[:8] + b"{garbage" + data[16:],  # broken JSON header
        lambda data: (10**12).to_bytes(8, "little") + data[8:],  # header longer than the file
        lambda data: data[:8],  # header length only
        lambda data: data[: len(data) // 2],  # tensors cut short
    ],
    ids=["bad-json", "huge-length", "no-header", "truncated"],
)
def test_a_corrupt_safetensors_header_is_one_line(tmp_path, capsys, state, mangle) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    path.write_bytes(mangle(path.read_bytes()))
    assert "cannot read weights file" in export_fails(tmp_path, path, capsys)


def test_a_folder_named_like_a_checkpoint_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "w.pth"
    path.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["export", "vgg11", *TINY_ARGS, "--weights", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# -- pickles that carry code ------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("where", ["value", "top-level", "wrapped"])
def test_a_pickle_with_a_reduce_payload_is_refused_without_running_it(
    tmp_path, capsys, state, where
) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload(marker)
    content = {
        "value": {**state, "extra": payload},
        "top-level": payload,
        "wrapped": {"state_dict": state, "optimizer": payload},
    }[where]
    path = tmp_path / "evil.pth"
    torch.save(content, path)
    line = export_fails(tmp_path, path, capsys)
    assert "pickled objects other than tensors" in line and "could run code" in line
    assert "weights_only=False" not in line  # never suggest the unsafe way out
    assert not marker.exists()


def test_a_legacy_pickle_with_a_payload_is_refused_too(tmp_path, state) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"x": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="could run code"):
        read_checkpoint(path)
    assert not marker.exists()
