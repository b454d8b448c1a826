"""The model zoo: paper configs, torchvision's key layout and counts, options, the dense form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vggdeploy.errors import InputError, UnknownModelError
from vggdeploy.models import (
    CATALOG,
    ModelSpec,
    build_dense_model,
    build_model,
    check_image_size,
    count_flops,
    count_macs,
    count_parameters,
    densify,
    list_specs,
    resolve_spec,
    with_options,
)

TINY = {"width_divisor": 16, "hidden": 64, "num_classes": 10}

# torchvision's published figures (the model cards' "num_params" and "GFLOPS", which are MACs).
TORCHVISION_PARAMS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}
TORCHVISION_GMACS = {"vgg11": 7.61, "vgg13": 11.31, "vgg16": 15.47, "vgg19": 19.63}

# torchvision's vgg16 / vgg16_bn `features` indices of the convolutions.
VGG16_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_BN_CONV_INDICES = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


def _build_meta(spec: ModelSpec) -> nn.Module:
    """Full-size modules on the meta device: real structure, no memory, no time."""
    with torch.device("meta"):
        return build_model(spec)


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected", [("vgg16", 138_357_544), ("vgg19_bn", 143_678_248), ("vgg11", 132_863_336)]
)
def test_issue_parameter_counts_of_built_modules(name: str, expected: int) -> None:
    spec = resolve_spec(name)
    assert _numel(_build_meta(spec)) == expected
    assert count_parameters(spec) == expected


def test_one_real_full_size_build_matches_the_count() -> None:
    model = build_model(resolve_spec("vgg16"))
    assert _numel(model) == 138_357_544
    assert model.features[0].weight.device.type == "cpu"
    assert float(model.features[0].weight.detach().abs().sum()) > 0  # initialised, not empty


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_counts_match_torchvision_for_every_torchvision_name(name: str) -> None:
    spec = resolve_spec(name)
    assert count_parameters(spec) == TORCHVISION_PARAMS[name]
    assert _numel(_build_meta(spec)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_match_torchvision_model_cards(name: str) -> None:
    spec = resolve_spec(name)
    assert round(count_macs(spec) / 1e9, 2) == TORCHVISION_GMACS[name]
    assert count_flops(spec) == 2 * count_macs(spec)
    assert count_macs(spec, 448) > 3.9 * count_macs(spec, 224)  # convs scale with area


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.name)
def test_count_parameters_equals_built_module_for_every_zoo_entry(spec: ModelSpec) -> None:
    tiny = with_options(spec, **TINY)
    assert _numel(build_model(tiny)) == count_parameters(tiny)
    assert _numel(_build_meta(spec)) == count_parameters(spec)


def test_count_macs_matches_hooks_on_a_tiny_model() -> None:
    spec = resolve_spec("C", **TINY)
    model = build_model(spec).eval()
    macs = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * module.in_channels * kh * kw
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    assert macs == count_macs(spec, 224)


def test_zoo_lists_eleven_distinct_networks() -> None:
    specs = list_specs()
    names = [s.name for s in specs]
    assert len(specs) == 11
    assert len(set(names)) == 11
    assert {"vgg11", "vgg11_bn", "vgg16", "vgg19_bn", "A-LRN", "C", "C-bn"} <= set(names)
    assert "A-LRN-bn" not in names
    layers = {s.name: s.weight_layers for s in specs}
    assert layers == {
        "vgg11": 11,
        "vgg11_bn": 11,
        "A-LRN": 11,
        "vgg13": 13,
        "vgg13_bn": 13,
        "C": 16,
        "C-bn": 16,
        "vgg16": 16,
        "vgg16_bn": 16,
        "vgg19": 19,
        "vgg19_bn": 19,
    }


def test_vgg16_keys_follow_torchvision_layout() -> None:
    state = _build_meta(resolve_spec("vgg16")).state_dict()
    expected = [f"features.{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(state) == expected
    assert tuple(state["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(state["features.28.weight"].shape) == (512, 512, 3, 3)
    assert tuple(state["classifier.0.weight"].shape) == (4096, 25088)
    assert tuple(state["classifier.3.weight"].shape) == (4096, 4096)
    assert tuple(state["classifier.6.weight"].shape) == (1000, 4096)


def test_vgg16_bn_keys_follow_torchvision_layout() -> None:
    model = _build_meta(resolve_spec("vgg16_bn"))
    state = model.state_dict()
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    assert convs == VGG16_BN_CONV_INDICES
    for i in VGG16_BN_CONV_INDICES:
        bn = f"features.{i + 1}"
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert f"{bn}.{suffix}" in state
    assert len(model.features) == 44  # torchvision's vgg16_bn: 13 x (conv, bn, relu) + 5 pools


def test_config_c_has_1x1_convs_in_the_last_three_stages() -> None:
    model = build_model(resolve_spec("C", **TINY))
    stage, kernels_by_stage = 0, {}
    for m in model.features:
        if isinstance(m, nn.MaxPool2d):
            stage += 1
        elif isinstance(m, nn.Conv2d):
            kernels_by_stage.setdefault(stage, []).append(m.kernel_size)
    assert kernels_by_stage == {
        0: [(3, 3), (3, 3)],
        1: [(3, 3), (3, 3)],
        2: [(3, 3), (3, 3), (1, 1)],
        3: [(3, 3), (3, 3), (1, 1)],
        4: [(3, 3), (3, 3), (1, 1)],
    }
    one_by_one = [m for m in model.features if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert all(m.padding == (0, 0) for m in one_by_one)


def test_a_lrn_has_local_response_norm_at_features_2() -> None:
    model = build_model(resolve_spec("A-LRN", **TINY))
    lrn = model.features[2]
    assert isinstance(lrn, nn.LocalResponseNorm)
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert isinstance(model.features[0], nn.Conv2d) and isinstance(model.features[3], nn.MaxPool2d)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.features) == 1


@pytest.mark.parametrize("name", ["A-LRN-bn", "a-lrn-bn", "A-LRN_bn", "a_lrn-bn"])
def test_a_lrn_with_batch_norm_is_refused(name: str) -> None:
    with pytest.raises(UnknownModelError, match="not in the VGG paper"):
        resolve_spec(name)


def test_a_lrn_with_batch_norm_spec_is_refused() -> None:
    with pytest.raises(UnknownModelError, match="not in the VGG paper"):
        ModelSpec(name="x", config="A-LRN", batch_norm=True)


@pytest.mark.parametrize(
    "name, config, batch_norm, canonical",
    [
        ("vgg16", "D", False, "vgg16"),
        ("VGG16", "D", False, "vgg16"),
        (" vgg16_bn ", "D", True, "vgg16_bn"),
        ("D", "D", False, "vgg16"),
        ("d-bn", "D", True, "vgg16_bn"),
        ("E-BN", "E", True, "vgg19_bn"),
        ("A", "A", False, "vgg11"),
        ("B", "B", False, "vgg13"),
        ("A-LRN", "A-LRN", False, "A-LRN"),
        ("a_lrn", "A-LRN", False, "A-LRN"),
        ("c", "C", False, "C"),
        ("C-bn", "C", True, "C-bn"),
    ],
)
def test_name_lookup(name: str, config: str, batch_norm: bool, canonical: str) -> None:
    spec = resolve_spec(name)
    assert (spec.config, spec.batch_norm, spec.name) == (config, batch_norm, canonical)


def test_every_catalog_name_resolves() -> None:
    assert len(CATALOG) == 8 + 11  # 4 torchvision names x 2, 6 configs x 2 minus A-LRN-bn
    for key in CATALOG:
        assert resolve_spec(key).config == CATALOG[key][0]


@pytest.mark.parametrize(
    "name, suggestion", [("vgg16bn", "vgg16_bn"), ("vgg-19", "vgg19"), ("a-lnr", "A-LRN")]
)
def test_unknown_name_suggests_the_closest(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownModelError) as err:
        resolve_spec(name)
    message = str(err.value)
    assert f"did you mean '{suggestion}'" in message
    assert repr(name) in message and "vggdeploy models" in message
    assert "\n" not in message


def test_hopeless_name_gets_no_suggestion() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'resnet50'") as err:
        resolve_spec("resnet50")
    assert "did you mean" not in str(err.value)


def test_width_divisor_hidden_and_classes_keep_the_layout() -> None:
    spec = resolve_spec("vgg16", width_divisor=4, hidden=128, num_classes=7)
    state = build_model(spec).state_dict()
    full = _build_meta(resolve_spec("vgg16")).state_dict()
    assert list(state) == list(full)
    assert tuple(state["features.0.weight"].shape) == (16, 3, 3, 3)
    assert tuple(state["features.28.weight"].shape) == (128, 128, 3, 3)
    assert tuple(state["classifier.0.weight"].shape) == (128, 128 * 7 * 7)
    assert tuple(state["classifier.3.weight"].shape) == (128, 128)
    assert tuple(state["classifier.6.weight"].shape) == (7, 128)
    assert not spec.is_standard and resolve_spec("vgg16").is_standard


def test_options_left_as_none_keep_the_defaults() -> None:
    spec = resolve_spec("vgg16", num_classes=None, width_divisor=None, hidden=None)
    assert spec == resolve_spec("vgg16")
    assert (spec.num_classes, spec.width_divisor, spec.hidden) == (1000, 1, 4096)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"width_divisor": 3}, "must divide 64"),
        ({"width_divisor": 0}, "positive integer"),
        ({"num_classes": 0}, "positive integer"),
        ({"hidden": -1}, "positive integer"),
        ({"num_classes": 2.5}, "positive integer"),
    ],
)
def test_bad_options_are_refused(options: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        resolve_spec("vgg16", **options)


def test_spec_round_trips_through_a_dict() -> None:
    spec = resolve_spec("C-bn", **TINY)
    assert ModelSpec.from_dict({**spec.to_dict(), "unrelated": 1}) == spec


@pytest.mark.parametrize("size", [0, 16, 31, 100, 225, "224"])
def test_bad_image_sizes_are_refused(size: object) -> None:
    with pytest.raises(InputError, match="multiple of 32"):
        check_image_size(size)  # type: ignore[arg-type]


def test_dense_needs_at_least_224() -> None:
    check_image_size(32)
    check_image_size(224, dense=True)
    with pytest.raises(InputError, match="at least 224x224"):
        check_image_size(192, dense=True)


@pytest.mark.parametrize("name", ["vgg11_bn", "C"])
def test_densify_gives_the_same_logits_at_224(name: str) -> None:
    torch.manual_seed(0)
    spec = resolve_spec(name, **TINY)
    model = build_model(spec).eval()
    if spec.batch_norm:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    dense = densify(model, spec).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref, got = model(x), dense(x)
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert list(dense.state_dict()) == list(model.state_dict())


def test_dense_model_accepts_256x320_and_averages_the_sliding_windows() -> None:
    """At a larger input the dense model equals the standard classifier applied to every 7x7
    window of the feature map, averaged (the paper's dense evaluation)."""
    torch.manual_seed(0)
    spec = resolve_spec("vgg11", **TINY)
    model = build_model(spec).eval()
    dense = densify(model, spec).eval()
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        scores = dense(x)
        fmap = model.features(x)  # 8 x 10 cells
        windows = [
            model.classifier(torch.flatten(fmap[:, :, i : i + 7, j : j + 7], 1))
            for i in range(fmap.shape[2] - 6)
            for j in range(fmap.shape[3] - 6)
        ]
    assert fmap.shape[2:] == (8, 10) and len(windows) == 2 * 4
    assert scores.shape == (1, 10)
    torch.testing.assert_close(scores, torch.stack(windows).mean(0), rtol=1e-4, atol=1e-5)


def test_standard_and_dense_models_accept_a_batch() -> None:
    spec = resolve_spec("A-LRN", **TINY)
    with torch.no_grad():
        assert build_model(spec).eval()(torch.randn(3, 3, 32, 32)).shape == (3, 10)
        assert build_dense_model(spec).eval()(torch.randn(3, 3, 224, 224)).shape == (3, 10)
