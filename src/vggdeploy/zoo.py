"""The `models` stage: the zoo as data (names, paper config, layers, parameters, GFLOPs)."""

from __future__ import annotations

from typing import Any

from vggdeploy.models import check_image_size, count_flops, count_parameters, list_specs
from vggdeploy.weights import IMAGENET_URLS


def zoo_table(image_size: int = 224) -> dict[str, Any]:
    check_image_size(image_size)
    rows = [
        {
            "name": spec.name,
            "config": spec.config,
            "batch_norm": spec.batch_norm,
            "weight_layers": spec.weight_layers,
            "parameters": count_parameters(spec),
            "gflops": round(count_flops(spec, image_size) / 1e9, 2),
            "imagenet_weights": spec.name in IMAGENET_URLS,
        }
        for spec in list_specs()
    ]
    return {"image_size": image_size, "flops": "2 x multiply-accumulates", "models": rows}
