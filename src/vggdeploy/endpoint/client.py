"""One Open Inference Protocol client over HTTP or gRPC, with `tritonclient`.

`tritonclient.http` and `tritonclient.grpc` have the same calls with different return types
(the gRPC metadata is a protobuf unless `as_json=True`); this wrapper gives both one shape and
turns every client error into one `EndpointError` line. A client serves one thread: tritonclient's
HTTP client is built on geventhttpclient and is not shared between threads here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vggdeploy.errors import InputError
from vggdeploy.host import install_hint

PROTOCOLS = ("http", "grpc")
#: numpy dtype of each Open Inference Protocol datatype we send
SEND_DTYPES = {"FP32": np.float32, "FP16": np.float16}


class EndpointError(InputError):
    """The service could not be reached or refused a request."""


@dataclass(frozen=True)
class Endpoint:
    """Where the service is: `host:port`, the protocol, and whether to use TLS."""

    address: str
    protocol: str
    ssl: bool = False

    @classmethod
    def parse(cls, url: str, protocol: str | None = None) -> Endpoint:
        """`http://host:port`, `https://host:port`, `grpc://host:port` or `host:port`; the
        protocol is `protocol` if given, else the scheme's (`grpc://` -> grpc, else http)."""
        text = url.strip()
        try:
            parts = urlsplit(text if "://" in text else f"//{text}")
        except ValueError as exc:  # "Invalid IPv6 URL", a bracketed host that is no address
            raise InputError(f"URL {url!r}: {exc}; use e.g. http://localhost:8080") from None
        scheme = parts.scheme.lower()
        if scheme not in ("", "http", "https", "grpc", "grpcs"):
            raise InputError(f"URL {url!r}: use http://HOST:PORT or grpc://HOST:PORT")
        if not parts.hostname:
            raise InputError(f"URL {url!r} has no host: use e.g. http://localhost:8080")
        try:
            port = parts.port
        except ValueError:
            raise InputError(f"URL {url!r}: the port is not a number from 0 to 65535") from None
        if parts.path not in ("", "/") or parts.query:
            raise InputError(
                f"URL {url!r}: give only the server (http://HOST:PORT), not a path; "
                "choose the model with --model"
            )
        chosen = protocol or ("grpc" if scheme.startswith("grpc") else "http")
        if chosen not in PROTOCOLS:
            raise InputError(f"--protocol {chosen!r}: use http or grpc")
        if port is None:
            port = {"https": 443, "http": 80}.get(scheme, 8081 if chosen == "grpc" else 8080)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(f"{host}:{port}", chosen, scheme in ("https", "grpcs"))

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}"


class Client:
    """One connection to the service."""

    def __init__(self, endpoint: Endpoint, timeout_s: float = 30.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._mod: Any = _module(endpoint.protocol)
        try:
            if endpoint.protocol == "http":
                self._client = self._mod.InferenceServerClient(
                    endpoint.address,
                    ssl=endpoint.ssl,
                    connection_timeout=timeout_s,
                    network_timeout=timeout_s,
                )
            else:
                self._client = self._mod.InferenceServerClient(endpoint.address, ssl=endpoint.ssl)
        except Exception as exc:  # tritonclient raises plain exceptions for a bad address
            raise EndpointError(f"{endpoint}: cannot create a client ({_reason(exc)})") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a client whose connection already failed
            self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # InferenceServerException, socket and gevent errors
            raise EndpointError(f"{self.endpoint}: {what} failed ({_reason(exc)})") from None

    def server_live(self) -> bool:
        return bool(self._call("the liveness check", self._client.is_server_live))

    def model_ready(self, name: str) -> bool:
        try:
            return bool(self._client.is_model_ready(name))
        except Exception:  # a model the server does not know is "not ready" (KServe: 404)
            return False

    def metadata(self, name: str) -> dict[str, Any]:
        """The model's metadata as the protocol's JSON object (name, inputs, outputs)."""
        if self.endpoint.protocol == "grpc":
            meta = self._call("model metadata", self._client.get_model_metadata, name, as_json=True)
        else:
            meta = self._call("model metadata", self._client.get_model_metadata, name)
        for tensors in ("inputs", "outputs"):
            for t in meta.get(tensors, []):
                t["shape"] = [int(d) for d in t.get("shape", [])]
        return meta

    def infer(self, model: str, name: str, datatype: str, data: np.ndarray, output: str) -> Any:
        """Send one input; the output `output` as a NumPy array."""
        tensor = self._mod.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        kwargs: dict[str, Any] = {"outputs": [self._mod.InferRequestedOutput(output)]}
        if self.endpoint.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._call(f"inference on {model}", self._client.infer, model, [tensor], **kwargs)
        out = result.as_numpy(output)
        if out is None:
            raise EndpointError(f"{self.endpoint}: {model} answered without output {output!r}")
        return out


def _module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
    except ImportError:
        raise InputError(
            f"verify-endpoint over {protocol} needs tritonclient: " + install_hint("tritonclient")
        ) from None
    return mod


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
