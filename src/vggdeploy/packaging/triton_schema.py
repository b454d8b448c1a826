"""Triton's own schema for `config.pbtxt`: `ModelConfig` from tritonclient, when installed.

`vggdeploy package` parses every config it writes with it, so a generator bug is caught here
rather than when the server loads the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def triton_model_config_pb2() -> Any | None:
    """Triton's `model_config_pb2` module as tritonclient ships it, or None if not installed.

    `tritonclient.grpc`'s package `__init__` refuses to import without the grpc extra, though
    the generated protobuf module itself needs only protobuf: load that file directly then.
    """
    try:
        from tritonclient.grpc import model_config_pb2

        return model_config_pb2
    except ImportError:
        return None
    except RuntimeError:  # "The installation does not include grpc support"
        pass
    except TypeError:
        # "duplicate symbol 'inference.ServerLiveRequest'": kserve (the serve extra) was
        # imported in this process, and its grpc_predict_v2.proto defines the same messages as
        # tritonclient's grpc_service.proto in protobuf's default pool. model_config.proto
        # alone does not clash: load that file directly, as below.
        pass
    import importlib.util
    import sys

    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "_vggdeploy_triton_model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    for location in spec.submodule_search_locations:
        path = Path(location) / "grpc" / "model_config_pb2.py"
        if path.is_file():
            file_spec = importlib.util.spec_from_file_location(name, path)
            if file_spec is None or file_spec.loader is None:
                return None
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            sys.modules[name] = module
            return module
    return None


def parse_config_pbtxt(text: str) -> Any | None:
    """Parse `text` into Triton's own `ModelConfig` message; None if tritonclient is absent.

    Raises `CheckFailedError` if Triton's schema rejects it (a bug in the generator).
    """
    model_config_pb2 = triton_model_config_pb2()
    if model_config_pb2 is None:
        return None
    from google.protobuf import text_format

    from vggdeploy.errors import CheckFailedError

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise CheckFailedError(
            f"generated config.pbtxt does not parse as Triton's ModelConfig: {exc}"
        ) from None
    return config
