"""The VGG model zoo: the configurations of Simonyan & Zisserman (2015), Table 1.

The architecture is data. A config is a list read left to right:

- an int `w` is a 3x3 convolution with `w` output channels (padding 1), then ReLU
  (batch norm between them when `batch_norm` is set);
- a tuple `(w, 1)` is a 1x1 convolution (config C's extra layers in the last three stages);
- `"M"` is a 2x2 max-pool with stride 2;
- `"LRN"` is local response normalisation with AlexNet's parameters (config A-LRN).

One interpreter, `make_features`, builds every config, and the module keeps torchvision's
state_dict layout (`features.N.*`, `classifier.0/3/6.*`) so torchvision checkpoints load without
torchvision. This module only describes models; building one imports torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Union

from vggdeploy.errors import InputError, UnknownModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

Layer = Union[int, tuple[int, int], str]  # noqa: UP007 - a runtime alias on Python 3.10

# Table 1 of the paper. Weight layers = convs + 3 FC.
# fmt: off
CONFIGS: dict[str, list[Layer]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M", 512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# fmt: on

# The names torchvision users know, mapped to the paper's configs.
TORCHVISION_NAMES = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}

# AlexNet's LRN parameters, which the paper uses for A-LRN (Krizhevsky et al., 2012).
LRN_PARAMS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}

DEFAULT_HIDDEN = 4096
POOL_GRID = 7  # AdaptiveAvgPool2d output: the classifier sees 512 x 7 x 7 at 224x224.

# Upper bounds, checked from the numbers alone before anything is allocated.
#: The dense export's dynamic height/width tops out at 4096 (32 x 128), and one 4096x4096 image
#: already gives the first VGG conv a 4 GiB activation: larger inputs are out of scope.
MAX_IMAGE_SIZE = 4096
#: Far above ImageNet-21k's 21,841 classes; more would not fit the parameter bound below anyway.
MAX_NUM_CLASSES = 100_000
#: 16x the paper's 4096; the first FC alone is 25088 x hidden.
MAX_HIDDEN = 65_536
#: The bundle's ONNX is one protobuf file, which cannot exceed 2 GiB: at 4 bytes a weight that
#: is ~536M parameters; keep room for the graph itself. (VGG-19 has 144M.)
MAX_PARAMETERS = 500_000_000


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build one network; recorded in every manifest.

    `width_divisor` divides every conv width (64 -> 64 / d), and `hidden` sets the width of
    the two hidden FC layers: both keep the state_dict layout, for small deployments and tests.
    """

    name: str
    config: str
    batch_norm: bool = False
    num_classes: int = 1000
    width_divisor: int = 1
    hidden: int = DEFAULT_HIDDEN
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.config not in CONFIGS:
            raise UnknownModelError(
                f"unknown VGG config {self.config!r}; known: {', '.join(CONFIGS)}"
            )
        if self.config == "A-LRN" and self.batch_norm:
            raise UnknownModelError(
                "A-LRN with batch norm is not in the VGG paper: use 'A-LRN' or 'A-bn'"
            )
        for field, value, limit in (
            ("num_classes", self.num_classes, MAX_NUM_CLASSES),
            ("width_divisor", self.width_divisor, 64),
            ("hidden", self.hidden, MAX_HIDDEN),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{field} must be a positive integer, got {value!r}")
            if value > limit:
                raise InputError(f"{field} {value} is too large: at most {limit:,}")
        if 64 % self.width_divisor:
            raise InputError(
                f"width divisor {self.width_divisor} must divide 64 (use 1, 2, 4, 8, 16, 32 or 64)"
            )
        if not isinstance(self.dropout, float | int) or not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        params = count_parameters(self)
        if params > MAX_PARAMETERS:
            raise InputError(
                f"{self.name} with hidden {self.hidden} and {self.num_classes} classes has "
                f"{params:,} parameters, over the {MAX_PARAMETERS:,} that fit one ONNX file "
                "(2 GiB): use a smaller --hidden or --num-classes"
            )

    @property
    def layers(self) -> list[Layer]:
        d = self.width_divisor
        scaled: list[Layer] = []
        for layer in CONFIGS[self.config]:
            if isinstance(layer, int):
                scaled.append(layer // d)
            elif isinstance(layer, tuple):
                scaled.append((layer[0] // d, layer[1]))
            else:
                scaled.append(layer)
        return scaled

    @property
    def last_width(self) -> int:
        return [w if isinstance(w, int) else w[0] for w in self.layers if not isinstance(w, str)][
            -1
        ]

    @property
    def weight_layers(self) -> int:
        return sum(1 for layer in self.layers if not isinstance(layer, str)) + 3

    @property
    def is_standard(self) -> bool:
        """True when the shape matches the published ImageNet checkpoints."""
        return (self.num_classes, self.width_divisor, self.hidden) == (1000, 1, DEFAULT_HIDDEN)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _catalog() -> dict[str, tuple[str, bool]]:
    """Every accepted name (lower case) -> (config, batch_norm)."""
    names: dict[str, tuple[str, bool]] = {}
    for tv_name, config in TORCHVISION_NAMES.items():
        names[tv_name] = (config, False)
        names[f"{tv_name}_bn"] = (config, True)
    for config in CONFIGS:
        names[config.lower()] = (config, False)
        if config != "A-LRN":
            names[f"{config.lower()}-bn"] = (config, True)
    return names


CATALOG = _catalog()


def canonical_name(config: str, batch_norm: bool) -> str:
    """`vgg16_bn` where torchvision has a name for the config, else the paper's (`C-bn`)."""
    for tv_name, tv_config in TORCHVISION_NAMES.items():
        if tv_config == config:
            return f"{tv_name}_bn" if batch_norm else tv_name
    return f"{config}-bn" if batch_norm else config


def resolve_spec(name: str, **options: Any) -> ModelSpec:
    """Look up a model by torchvision or paper name (case-insensitive) and apply options."""
    key = name.strip().lower().replace("_lrn", "-lrn")
    if key == "a-lrn-bn" or key == "a-lrn_bn":
        raise UnknownModelError(
            "A-LRN with batch norm is not in the VGG paper: use 'A-LRN' or 'A-bn'"
        )
    if key not in CATALOG:
        close = difflib.get_close_matches(key, list(CATALOG), n=1, cutoff=0.5)
        hint = f"did you mean '{_display(close[0])}'? " if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}: {hint}see `vggdeploy models` for the list"
        )
    config, batch_norm = CATALOG[key]
    options = {k: v for k, v in options.items() if v is not None}
    return ModelSpec(
        name=canonical_name(config, batch_norm), config=config, batch_norm=batch_norm, **options
    )


def _display(key: str) -> str:
    config, batch_norm = CATALOG[key]
    return key if key.startswith("vgg") else (f"{config}-bn" if batch_norm else config)


def list_specs() -> list[ModelSpec]:
    """One spec per distinct network (torchvision names where they exist)."""
    specs = []
    for config in CONFIGS:
        for batch_norm in (False, True):
            if config == "A-LRN" and batch_norm:
                continue
            specs.append(ModelSpec(canonical_name(config, batch_norm), config, batch_norm))
    return specs


# -- counting -------------------------------------------------------------------------------


def count_parameters(spec: ModelSpec) -> int:
    """Parameter count computed from the config (matches the built module, tested)."""
    total, cin = 0, 3
    for layer in spec.layers:
        if isinstance(layer, str):
            continue
        cout, k = (layer, 3) if isinstance(layer, int) else layer
        total += cout * cin * k * k + cout
        if spec.batch_norm:
            total += 2 * cout  # weight and bias; running stats are buffers
        cin = cout
    fc_in = cin * POOL_GRID * POOL_GRID
    total += fc_in * spec.hidden + spec.hidden
    total += spec.hidden * spec.hidden + spec.hidden
    total += spec.hidden * spec.num_classes + spec.num_classes
    return total


def count_macs(spec: ModelSpec, image_size: int = 224) -> int:
    """Multiply-accumulates of one image (convs and FCs), at a square input size."""
    macs, cin, size = 0, 3, image_size
    for layer in spec.layers:
        if layer == "M":
            size //= 2
        elif isinstance(layer, str):
            continue
        else:
            cout, k = (layer, 3) if isinstance(layer, int) else layer
            macs += cout * cin * k * k * size * size
            cin = cout
    fc_in = cin * POOL_GRID * POOL_GRID
    macs += fc_in * spec.hidden + spec.hidden * spec.hidden + spec.hidden * spec.num_classes
    return macs


def count_flops(spec: ModelSpec, image_size: int = 224) -> int:
    """FLOPs of one image, counting a multiply-accumulate as two operations."""
    return 2 * count_macs(spec, image_size)


def check_image_size(size: int, *, dense: bool = False) -> None:
    """Refuse a size that is not a multiple of 32 in [32, MAX_IMAGE_SIZE] (dense: >= 224)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 32 or size % 32:
        raise InputError(
            f"image size {size} is not supported: use a multiple of 32, at least 32 (e.g. 224)"
        )
    if size > MAX_IMAGE_SIZE:
        raise InputError(
            f"image size {size} is too large: at most {MAX_IMAGE_SIZE} (one {MAX_IMAGE_SIZE}x"
            f"{MAX_IMAGE_SIZE} image already needs a 4 GiB activation in the first conv)"
        )
    if dense and size < 32 * POOL_GRID:
        raise InputError(
            f"image size {size} is too small for the dense model: its 7x7 first FC needs at "
            f"least {32 * POOL_GRID}x{32 * POOL_GRID}"
        )


# -- building -------------------------------------------------------------------------------


def make_features(layers: list[Layer], batch_norm: bool) -> nn.Sequential:
    """The one interpreter for every config (torchvision's `make_layers`, plus 1x1 and LRN)."""
    from torch import nn

    modules: list[nn.Module] = []
    cin = 3
    for layer in layers:
        if layer == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif layer == "LRN":
            modules.append(nn.LocalResponseNorm(**LRN_PARAMS))
        else:
            cout, k = (layer, 3) if isinstance(layer, int) else layer
            modules.append(nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2))
            if batch_norm:
                modules.append(nn.BatchNorm2d(cout))
            modules.append(nn.ReLU(inplace=True))
            cin = cout
    return nn.Sequential(*modules)


def _classifier(fc_in: int, spec: ModelSpec) -> nn.Sequential:
    from torch import nn

    return nn.Sequential(
        nn.Linear(fc_in, spec.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=spec.dropout),
        nn.Linear(spec.hidden, spec.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=spec.dropout),
        nn.Linear(spec.hidden, spec.num_classes),
    )


def build_model(spec: ModelSpec, *, init: bool = True) -> nn.Module:
    """The standard network: features, AdaptiveAvgPool2d(7), three FC layers; with `init`,
    torchvision's VGG initialisation (`_init_weights`) over PyTorch's own."""
    import torch
    from torch import nn

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = make_features(spec.layers, spec.batch_norm)
            self.avgpool = nn.AdaptiveAvgPool2d((POOL_GRID, POOL_GRID))
            self.classifier = _classifier(spec.last_width * POOL_GRID * POOL_GRID, spec)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.avgpool(self.features(x))
            return self.classifier(torch.flatten(x, 1))

    model = VGG()
    if init:
        _init_weights(model)
    return model


def build_dense_model(spec: ModelSpec) -> nn.Module:
    """The paper's fully convolutional test-time form (Section 3.2).

    The first FC becomes a 7x7 conv and the other two 1x1 convs; class scores are averaged
    over space, so any input of at least 224x224 works. Keys keep the standard layout
    (`classifier.0/3/6.*`) with conv-shaped weights; use `densify` to convert a trained model.
    """
    from torch import nn

    class DenseVGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = make_features(spec.layers, spec.batch_norm)
            self.classifier = nn.Sequential(
                nn.Conv2d(spec.last_width, spec.hidden, kernel_size=POOL_GRID),
                nn.ReLU(inplace=True),
                nn.Dropout(p=spec.dropout),
                nn.Conv2d(spec.hidden, spec.hidden, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Dropout(p=spec.dropout),
                nn.Conv2d(spec.hidden, spec.num_classes, kernel_size=1),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scores = self.classifier(self.features(x))
            return scores.mean(dim=(2, 3))

    return DenseVGG()


def unfilled(build: Callable[[], nn.Module]) -> nn.Module:
    """The module `build` makes, with its memory allocated but not initialised: for a model
    whose every parameter and buffer is then overwritten by `load_state_dict` (strict), where
    the initialisation nn.Linear/Conv2d run on construction (a pass over every weight: about a
    second for VGG-16) is thrown away. `build` should not initialise again itself
    (`build_model(spec, init=False)`): on the meta device `nn.init.normal_` goes through
    PyTorch's reference implementation, whose first use imports TorchDynamo (seconds).

    `build` runs on PyTorch's "meta" device (shapes only, no data), then `Module.to_empty`
    allocates CPU storage (torch/nn/modules/module.py: "Move the parameters and buffers to the
    specified device without copying storage"). BatchNorm's `num_batches_tracked` counter, which
    old checkpoints lack and `weights.apply_state_dict` keeps from the model, is set to 0, the
    value a freshly built BatchNorm has (torch/nn/modules/batchnorm.py: `torch.tensor(0, ...)`).
    """
    import torch

    with torch.device("meta"):  # PyTorch's own initialisation is a no-op there
        model = build()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.zero_()
    return model


def densify(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """A dense model with the weights of a standard one (FC weights reshaped to conv kernels)."""
    dense = unfilled(lambda: build_dense_model(spec))
    state = {}
    for key, value in model.state_dict().items():
        target = dense.state_dict()[key]
        state[key] = value.reshape(target.shape)
    dense.load_state_dict(state)
    return dense


def _init_weights(model: nn.Module) -> None:
    """torchvision's VGG initialisation, so random-weight models behave like real ones."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def random_state_dict(spec: ModelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights: the same seed and spec give the same tensors on every machine."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
        # Small non-zero biases: the exporter drops all-zero biases from Conv/Gemm, so zero ones
        # would give random-weight bundles a different graph than trained weights give.
        bias_gen = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                    m.bias.copy_(torch.randn(m.bias.shape, generator=bias_gen) * 0.01)
        if spec.batch_norm:
            # Non-trivial running statistics, so BN folding is exercised by parity checks.
            gen = torch.Generator().manual_seed(seed + 1)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.state_dict()


def with_options(spec: ModelSpec, **options: Any) -> ModelSpec:
    return replace(spec, **{k: v for k, v in options.items() if v is not None})
