"""Loading weights without waste: no initialisation that `load_state_dict` overwrites, and
seeded random weights made once per pipeline run (`reusing_random_weights`) - exactly the
tensors a fresh load gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vggdeploy import weights as W
from vggdeploy.models import build_model, random_state_dict, resolve_spec, unfilled
from vggdeploy.weights import WeightsSource, load_model, reusing_random_weights

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def _count_random(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def counted(spec, seed=0):
        calls.append(seed)
        return random_state_dict(spec, seed)

    monkeypatch.setattr(W, "random_state_dict", counted)
    return calls


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
@pytest.mark.parametrize("dense", [False, True])
def test_unfilled_model_loads_the_same_as_a_built_one(name: str, dense: bool) -> None:
    """A model built on the meta device and filled by the state dict equals one built the old
    way (fully initialised, then overwritten), BatchNorm's counter included."""
    spec = resolve_spec(name, **TINY)
    state = random_state_dict(spec, 5)
    model, _ = load_model(spec, WeightsSource("random", seed=5), dense=dense)
    old = build_model(spec)
    W.apply_state_dict(old, state, "test")
    old.eval()
    if dense:
        from vggdeploy.models import build_dense_model

        reshaped = build_dense_model(spec)
        reshaped.load_state_dict(
            {k: v.reshape(reshaped.state_dict()[k].shape) for k, v in old.state_dict().items()}
        )
        old = reshaped.eval()
    _same(model, old)
    counters = [v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")]
    assert all(int(c) == 0 for c in counters)
    assert (len(counters) > 0) == name.endswith("_bn")
    size = 224 if dense else 32  # the dense form needs at least 224x224
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), old(x))


def test_unfilled_counter_is_zero_whatever_the_memory_held() -> None:
    """`num_batches_tracked`, which old checkpoints lack and the model keeps, is 0 as on a built
    BatchNorm, not whatever the uninitialised memory held."""
    spec = resolve_spec("vgg11_bn", **TINY)
    for _ in range(3):
        model = unfilled(lambda: build_model(spec, init=False))
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                assert value.dtype == torch.long and int(value) == 0


def test_reused_random_weights_equal_fresh_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = resolve_spec("vgg11", **TINY)
    fresh, fresh_record = load_model(spec, WeightsSource("random", seed=7))
    calls = _count_random(monkeypatch)
    with reusing_random_weights():
        first, first_record = load_model(spec, WeightsSource("random", seed=7))
        second, second_record = load_model(
            resolve_spec("vgg11", **TINY), WeightsSource("random", 7)
        )
    assert calls == [7]  # made once, reused once
    assert first is not second  # two models, one set of source tensors
    _same(first, fresh)
    _same(second, fresh)
    assert first_record == second_record == fresh_record


def test_reuse_ends_with_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = resolve_spec("vgg11", **TINY)
    calls = _count_random(monkeypatch)
    with reusing_random_weights():
        load_model(spec, WeightsSource("random", seed=1))
    load_model(spec, WeightsSource("random", seed=1))
    load_model(spec, WeightsSource("random", seed=1))
    assert calls == [1, 1, 1]
    assert W._RANDOM_STATES is None


def test_a_model_changed_in_place_does_not_change_the_next_load() -> None:
    spec = resolve_spec("vgg11", **TINY)
    fresh, _ = load_model(spec, WeightsSource("random", seed=2))
    with reusing_random_weights():
        first, _ = load_model(spec, WeightsSource("random", seed=2))
        with torch.no_grad():
            for p in first.parameters():
                p.add_(1.0)
        first.half()
        second, _ = load_model(spec, WeightsSource("random", seed=2))
    _same(second, fresh)


@settings(max_examples=6, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
    hidden=st.sampled_from([32, 64]),
)
def test_other_seed_or_spec_is_never_served_from_the_cache(seeds: list[int], hidden: int) -> None:
    """Whatever order seeds and specs come in, each load equals a fresh load of its own."""
    specs = [resolve_spec("vgg11", **{**TINY, "hidden": h}) for h in (hidden, 48)]
    with reusing_random_weights():
        for seed in seeds:
            for spec in specs:
                got, record = load_model(spec, WeightsSource("random", seed=seed))
                assert record["sha256"] == W.state_dict_sha256(random_state_dict(spec, seed))
                assert record["seed"] == seed


def test_checkpoint_files_are_read_each_time(tmp_path: Path) -> None:
    """A changed weights file is never served from the cache: its new contents load."""
    from safetensors.torch import save_file

    spec = resolve_spec("vgg11", **TINY)
    path = tmp_path / "w.safetensors"
    save_file(random_state_dict(spec, 1), str(path))
    with reusing_random_weights():
        a, ra = load_model(spec, WeightsSource("file", path=str(path)))
        save_file(random_state_dict(spec, 2), str(path))
        b, rb = load_model(spec, WeightsSource("file", path=str(path)))
    assert ra["sha256"] != rb["sha256"]
    fresh, _ = load_model(spec, WeightsSource("random", seed=2))
    _same(b, fresh)


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []
    original = W.check_values

    def counted(model, state, origin):
        checked.append(origin)
        return original(model, state, origin)

    monkeypatch.setattr(W, "check_values", counted)
    return checked


def test_reused_tensors_are_value_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = resolve_spec("vgg11_bn", **TINY)
    checked = _count_checks(monkeypatch)
    with reusing_random_weights():
        for _ in range(3):
            load_model(spec, WeightsSource("random", seed=4))
        load_model(spec, WeightsSource("random", seed=5))  # other tensors: checked
    assert checked == ["random", "random"]
    load_model(spec, WeightsSource("random", seed=4))  # outside the block: checked again
    assert len(checked) == 3
    assert W._CHECKED_STATES == []


def test_tensors_that_fail_the_check_fail_every_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that failed is never skipped: each load raises the same error."""
    spec = resolve_spec("vgg11", **TINY)

    def broken(spec, seed=0):
        state = random_state_dict(spec, seed)
        next(iter(state.values()))[0] = float("nan")
        return state

    monkeypatch.setattr(W, "random_state_dict", broken)
    with reusing_random_weights():
        for _ in range(2):
            with pytest.raises(W.WeightsError, match="NaN or infinite"):
                load_model(spec, WeightsSource("random", seed=0))
