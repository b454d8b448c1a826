"""Check a live Open Inference Protocol service against its bundle (`verify-endpoint`)."""

from vggdeploy.endpoint.client import Client, Endpoint, EndpointError
from vggdeploy.endpoint.verify import EndpointReport, VerifyOptions, verify_endpoint

__all__ = [
    "Client",
    "Endpoint",
    "EndpointError",
    "EndpointReport",
    "VerifyOptions",
    "verify_endpoint",
]
