"""Weights: seeded random, local files (never running pickled code), torchvision's ImageNet."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from vggdeploy.bundle import sha256_file
from vggdeploy.errors import WeightsError
from vggdeploy.models import random_state_dict, resolve_spec
from vggdeploy.weights import (
    IMAGENET_URLS,
    WeightsSource,
    apply_state_dict,
    imagenet_checkpoint,
    load_model,
    read_checkpoint,
    state_dict_sha256,
)

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10}


@pytest.fixture
def spec():
    return resolve_spec("vgg11_bn", **TINY)


@pytest.fixture
def state(spec):
    return random_state_dict(spec, seed=3)


def _assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(state)
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def test_random_weights_are_seeded(spec) -> None:
    a, b, c = random_state_dict(spec, 0), random_state_dict(spec, 0), random_state_dict(spec, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    # BN statistics are not the trivial 0/1, so folding them is really exercised by parity.
    assert float(a["features.1.running_mean"].abs().sum()) > 0
    # Nor are biases zero (the exporter would drop them and the graph would differ).
    for key in ("features.0.bias", "classifier.0.bias", "classifier.6.bias"):
        assert bool((a[key] != 0).all()), key


def test_random_weights_do_not_disturb_the_global_rng(spec) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    random_state_dict(spec, 0)
    assert torch.equal(torch.rand(3), expected)


def test_load_model_random_is_eval_mode_with_a_record(spec) -> None:
    model, record = load_model(spec, WeightsSource.parse("random", seed=3))
    assert record == {
        "source": "random",
        "seed": 3,
        "sha256": state_dict_sha256(random_state_dict(spec, 3)),
        "sha256_of": "tensors",
    }
    assert record["sha256"] != state_dict_sha256(random_state_dict(spec, 4))
    assert not model.training
    _assert_same_state(model, random_state_dict(spec, 3))


def test_safetensors_round_trip(spec, state, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model, record = load_model(spec, WeightsSource.parse(str(path)))
    _assert_same_state(model, state)
    assert record == {"source": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_pth_round_trip(spec, state, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    torch.save(state, path)
    model, record = load_model(spec, WeightsSource.parse(str(path)))
    _assert_same_state(model, state)
    assert record["sha256"] == sha256_file(path)


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_training_checkpoint_wrappers_are_unwrapped(spec, state, tmp_path: Path, wrapper) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: state, "epoch": 90}, path)
    model, _ = load_model(spec, WeightsSource.parse(str(path)))
    _assert_same_state(model, state)


def test_data_parallel_module_prefix_is_stripped(spec, state, tmp_path: Path) -> None:
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    assert set(read_checkpoint(path)) == set(state)
    model, _ = load_model(spec, WeightsSource.parse(str(path)))
    _assert_same_state(model, state)


def test_dense_load_keeps_the_weights(spec, state, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(state, path)
    dense, _ = load_model(spec, WeightsSource.parse(str(path)), dense=True)
    assert not dense.training
    assert tuple(dense.state_dict()["classifier.0.weight"].shape) == (64, 32, 7, 7)
    assert torch.equal(
        dense.state_dict()["classifier.0.weight"].flatten(1), state["classifier.0.weight"]
    )


class _Payload:
    """Pickles to a call that creates a file: proof of whether unpickling ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="cannot read weights file") as err:
        read_checkpoint(path)
    assert not marker.exists()
    assert "\n" not in str(err.value)


def test_pickled_non_tensor_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"features.0.weight": "not a tensor"}, path)
    with pytest.raises(WeightsError, match="does not hold a state_dict of tensors"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("garbage.pth", b"\x00\x01 this is not a checkpoint" * 10),
        ("garbage.safetensors", b"\xff" * 64),
        ("empty.pth", b""),
        ("text.safetensors", b"hello"),
    ],
)
def test_corrupt_files_give_one_line(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and len(message) < 400


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_give_one_line(spec, state, tmp_path: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        load_model(spec, WeightsSource.parse(str(path)))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        read_checkpoint(tmp_path)  # a directory is not a weights file
    other = tmp_path / "w.h5"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown type '.h5'"):
        read_checkpoint(other)


def test_mismatch_lists_missing_unexpected_and_misshapen_at_once(spec, state) -> None:
    from vggdeploy.models import build_model

    broken = dict(state)
    del broken["features.0.bias"]
    del broken["classifier.3.weight"]
    broken["classifier.9.weight"] = torch.zeros(3)
    broken["classifier.6.weight"] = torch.zeros(1000, 64)
    with pytest.raises(WeightsError) as err:
        apply_state_dict(build_model(spec), broken, "ckpt.pth")
    message = str(err.value)
    assert "ckpt.pth" in message and "\n" not in message
    assert "2 missing: features.0.bias, classifier.3.weight" in message
    assert "1 unexpected: classifier.9.weight" in message
    assert "1 misshapen: classifier.6.weight (1000, 64) != (10, 64)" in message
    assert "--num-classes" in message


def test_mismatch_lists_are_shortened(spec) -> None:
    from vggdeploy.models import build_model

    with pytest.raises(WeightsError, match=r"missing: .*\(\+\d+ more\)"):
        apply_state_dict(build_model(spec), {}, "empty")


def test_wrong_model_for_a_checkpoint_is_one_error(state, tmp_path: Path) -> None:
    path = tmp_path / "vgg11_bn.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="do not fit this model") as err:
        load_model(resolve_spec("vgg13", **TINY), WeightsSource.parse(str(path)))
    assert "missing" in str(err.value) and "unexpected" in str(err.value)


def test_checkpoints_without_num_batches_tracked_load(spec, state, tmp_path: Path) -> None:
    """torchvision's *_bn checkpoints predate BatchNorm's `num_batches_tracked`."""
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    model, _ = load_model(spec, WeightsSource.parse(str(path)))
    for key, value in old.items():
        assert torch.equal(model.state_dict()[key], value)


def test_weights_source_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert WeightsSource.parse("random", seed=5) == WeightsSource("random", seed=5)
    assert WeightsSource.parse("imagenet") == WeightsSource("imagenet")
    assert WeightsSource.parse("~/w.pth") == WeightsSource("file", path=str(tmp_path / "w.pth"))


# -- imagenet ---------------------------------------------------------------------------------


@pytest.fixture
def hub_dir(tmp_path: Path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def test_imagenet_urls_cover_the_torchvision_names() -> None:
    assert set(IMAGENET_URLS) == {f"vgg{n}{bn}" for n in (11, 13, 16, 19) for bn in ("", "_bn")}
    for name, url in IMAGENET_URLS.items():
        assert url.startswith("https://download.pytorch.org/models/")
        assert url.rsplit("/", 1)[1].startswith(f"{name}-")


def test_imagenet_offline_names_the_file_and_where_to_place_it(
    hub_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def offline(url: str, dst: str, *args, **kwargs) -> None:
        calls.append((url, dst, kwargs.get("hash_prefix")))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as err:
        load_model(resolve_spec("vgg16"), WeightsSource.parse("imagenet"))
    dest = hub_dir / "checkpoints" / "vgg16-397923af.pth"
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and str(dest) in message
    assert "offline" in message and "\n" not in message
    assert calls == [(IMAGENET_URLS["vgg16"], str(dest), "397923af")]
    assert not dest.exists()


def test_imagenet_hash_mismatch_on_download(hub_dir: Path, monkeypatch) -> None:
    def bad_hash(url: str, dst: str, *args, **kwargs) -> None:
        raise RuntimeError('invalid hash value (expected "397923af", got "0000")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", bad_hash)
    with pytest.raises(WeightsError, match="corrupt.*place a verified copy at"):
        imagenet_checkpoint(resolve_spec("vgg16"))


def test_imagenet_corrupt_cached_file_is_refused(hub_dir: Path, monkeypatch) -> None:
    dest = hub_dir / "checkpoints" / "vgg11-8a719046.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated download")
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    with pytest.raises(WeightsError, match=r"vgg11-8a719046.pth is corrupt .*delete it and retry"):
        imagenet_checkpoint(resolve_spec("vgg11"))


def test_imagenet_cached_file_with_matching_hash_is_used(hub_dir: Path, monkeypatch) -> None:
    """The cache check is the sha256 prefix in the file name, as torch.hub does it."""
    import hashlib

    import vggdeploy.weights as weights

    payload = b"pretend checkpoint"
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setitem(
        weights.IMAGENET_URLS, "vgg13", f"https://download.pytorch.org/models/vgg13-{prefix}.pth"
    )
    dest = hub_dir / "checkpoints" / f"vgg13-{prefix}.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(payload)
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    assert imagenet_checkpoint(resolve_spec("vgg13")) == dest


@pytest.mark.parametrize(
    "name, options",
    [("C", {}), ("A-LRN", {}), ("vgg16", {"num_classes": 10}), ("vgg16", {"width_divisor": 2})],
)
def test_imagenet_for_unpublished_models_is_refused(name: str, options: dict, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    with pytest.raises(WeightsError, match="no published ImageNet weights") as err:
        load_model(resolve_spec(name, **options), WeightsSource.parse("imagenet"))
    assert "--weights random or a file" in str(err.value)
