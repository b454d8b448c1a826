"""The `vggdeploy` command line.

Every command imports its heavy libraries (torch, onnx, onnxruntime, tensorrt) inside its body,
so `vggdeploy --help` and each `<command> --help` start fast and work on any machine. User
errors (`VggDeployError`) print as one line and exit non-zero; other exceptions are bugs and
keep their traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from vggdeploy import __version__
from vggdeploy.cli_options import CONTEXT
from vggdeploy.commands import bench, check, make, serve, ship
from vggdeploy.errors import VggDeployError


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries we call are chatty at INFO; show them only at -vv.
    for noisy in ("onnxscript", "onnx_ir", "torch"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vggdeploy")
@click.option(
    "-v", "--verbose", count=True, help="More log output (-vv: debug, and TensorRT's own log)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Take VGG classifiers from PyTorch to checked ONNX, INT8/FP16 and TensorRT engines.

    \b
    The whole job in one command (export, validate, FP16/INT8, engines where
    TensorRT is present, benchmark, report):
      vggdeploy pipeline vgg16 --out runs/vgg16

    \b
    Or step by step:
      vggdeploy export vgg16 --weights imagenet --out bundles/vgg16
      vggdeploy validate bundles/vgg16
      vggdeploy calibrate bundles/vgg16 --images calib/
      vggdeploy build bundles/vgg16 --precision int8      (on the target GPU)
      vggdeploy bench bundles/vgg16
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = 0 if quiet else verbose
    _setup_logging(verbose, quiet)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and a non-zero exit for user errors."""
    try:
        cli.main(args=argv, prog_name="vggdeploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # One line like every other user error (click's own format is a usage block).
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            # click turns Ctrl-C into Abort, so the KeyboardInterrupt branch below never sees it.
            click.echo("interrupted (no partial files were left behind)", err=True)
            sys.exit(130)
        click.echo("aborted", err=True)
        sys.exit(1)
    except VggDeployError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted (no partial files were left behind)", err=True)
        sys.exit(130)
    sys.exit(0)


for _command in (
    check.models,
    make.export,
    check.validate,
    check.predict,
    make.calibrate,
    make.convert,
    check.evaluate,
    make.build,
    bench.bench,
    ship.pipeline,
    check.inspect_cmd,
    ship.pack,
    ship.unpack,
    ship.package,
    serve.serve,
    serve.verify_endpoint,
):
    cli.add_command(_command)


if __name__ == "__main__":
    main()
