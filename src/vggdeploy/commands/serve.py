"""Commands that put a bundle behind an endpoint and check the endpoint: serve, verify-endpoint."""

from __future__ import annotations

import click

from vggdeploy.cli_options import (
    CONTEXT,
    comma_list,
    emit,
    json_option,
    parse_int_list,
    runtime_option,
)
from vggdeploy.errors import InputError


@click.command(context_settings=CONTEXT)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@runtime_option(
    "What answers the requests (repeatable or comma-separated; one per precision). Default: "
    "onnxruntime on every ONNX file of the bundle."
)
@click.option("--port", default=8080, show_default=True, type=int, help="HTTP/REST port.")
@click.option("--grpc-port", default=8081, show_default=True, type=int, help="gRPC port.")
def serve(bundle: str, runtimes: tuple[str, ...], port: int, grpc_port: int) -> None:
    """Serve BUNDLE over the Open Inference Protocol (KServe v2), HTTP and gRPC.

    \b
    KServe's Python model server (pip install 'vggdeploy[serve]') with the bundle's own
    runtime behind it; one model per precision, named <model>-<precision> (vgg16-fp32,
    vgg16-int8). Each model takes either the bundle's input tensor (FP32 [N,3,H,W],
    preprocessed, as Triton takes it) or `image` (BYTES [N], encoded image files, preprocessed
    on the server as the bundle says); both are in its metadata (GET /v2/models/<name>).
    KServe's servers listen on every interface of this machine. Stop with Ctrl-C. Check it with:
      vggdeploy verify-endpoint http://localhost:8080 --bundle BUNDLE --images DIR
    """
    from vggdeploy.bundle import Bundle
    from vggdeploy.serving import FAULT_ENV, serve_bundle, test_fault

    loaded = Bundle.load(bundle)
    if fault := test_fault():
        click.echo(
            f"warning: {FAULT_ENV}={fault}: TEST ONLY, this server answers wrongly on purpose",
            err=True,
        )

    def announce(models: list) -> None:
        for m in models:
            click.echo(f"serving {m.name}: {m.runtime.label}", err=True)
        click.echo(
            f"HTTP on port {port}, gRPC on port {grpc_port} (every interface); Ctrl-C stops",
            err=True,
        )

    serve_bundle(
        loaded, comma_list(runtimes), http_port=port, grpc_port=grpc_port, announce=announce
    )


__all__ = ["serve", "emit", "json_option", "parse_int_list", "InputError"]
