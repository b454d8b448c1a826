"""Commands that put a bundle behind an endpoint and check the endpoint: serve, verify-endpoint."""

from __future__ import annotations

import click

from vggdeploy.cli_options import (
    CONTEXT,
    comma_list,
    echo_text,
    emit,
    json_option,
    parse_int_list,
    runtime_option,
)


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
    from vggdeploy.serving import FAULT_ENV, fault_from_env, serve_bundle

    loaded = Bundle.load(bundle)
    if fault := fault_from_env():
        click.echo(
            f"warning: {FAULT_ENV}={fault}: TEST ONLY, this server answers wrongly on purpose",
            err=True,
        )

    def announce(models: list) -> None:
        for m in models:
            echo_text(f"serving {m.name}: {m.runtime.label}", err=True)
        click.echo(
            f"HTTP on port {port}, gRPC on port {grpc_port} (every interface); Ctrl-C stops",
            err=True,
        )

    serve_bundle(
        loaded, comma_list(runtimes), http_port=port, grpc_port=grpc_port, announce=announce
    )


@click.command("verify-endpoint", context_settings=CONTEXT)
@click.argument("url")
@click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="The bundle the service was made from.",
)
@click.option(
    "--images",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Images to send (at most 256, sorted).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Served model(s) to check (repeatable or comma-separated). Default: every model of "
    "this bundle the service has ready, by the names `serve` and `package` give.",
)
@click.option(
    "--concurrency", default="1", show_default=True, metavar="N[,N...]", help="Client counts."
)
@click.option(
    "--protocol",
    type=click.Choice(["http", "grpc"]),
    help="Default: grpc for a grpc:// URL, else http.",
)
@click.option(
    "--requests",
    type=int,
    help="Requests per concurrency level (default: the larger of 32, the images, 4 x clients).",
)
@click.option(
    "--send",
    type=click.Choice(["auto", "images", "tensors"]),
    default="auto",
    show_default=True,
    help="images: encoded files as BYTES (the server preprocesses; over HTTP each file goes as "
    "its base64 text, what `vggdeploy serve` takes there); tensors: preprocessed here as the "
    "bundle says; auto: images when the model declares a BYTES input.",
)
@click.option("--precision", help="The served precision (default: from the model name).")
@click.option(
    "--local-runtime",
    default="onnxruntime",
    show_default=True,
    metavar="SPEC",
    help="What runs the same images here, stage by stage, for comparison.",
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per request.")
@json_option("the report")
def verify_endpoint(
    url: str,
    bundle: str,
    images: str,
    models: tuple[str, ...],
    concurrency: str,
    protocol: str | None,
    requests: int | None,
    send: str,
    precision: str | None,
    local_runtime: str,
    timeout: float,
    json_path: str | None,
) -> None:
    """Check the live service at URL (Triton, KServe, `vggdeploy serve`) against BUNDLE.

    \b
    Every image goes through each model once and the answers are compared with the bundle's
    reference (PyTorch fp32) with the tolerances `validate` uses for the served precision; a
    model that disagrees gets its likely cause (channel order swapped, normalization missing
    or doubled, labels shifted). Then N clients at a time send a fixed number of requests:
    every answer is checked, lost ones are counted, latency p50/p95/p99 and throughput are
    reported; beside it, the same images run here stage by stage (as bench --end-to-end).
    Exits with code 2 when the service disagrees or an answer is lost. Example:
      vggdeploy verify-endpoint http://localhost:8080 --bundle b --images imgs --concurrency 1,4
    """
    import sys

    from vggdeploy.bundle import Bundle
    from vggdeploy.endpoint import VerifyOptions
    from vggdeploy.endpoint import verify_endpoint as run_verify
    from vggdeploy.report.endpoint import format_endpoint

    levels = parse_int_list(concurrency, "--concurrency")
    options = VerifyOptions(
        models=tuple(comma_list(models)),
        concurrency=tuple(levels),
        requests=requests,
        send=send,
        precision=precision,
        timeout_s=timeout,
        local_runtime=local_runtime,
    )

    def echo_err(text: str) -> None:
        echo_text(text, err=True)

    report = run_verify(
        url, Bundle.load(bundle), images, options, protocol=protocol, progress=echo_err
    )
    emit(format_endpoint(report), report.to_dict(), json_path)
    if not report.passed:
        sys.exit(2)
