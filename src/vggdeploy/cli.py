"""The `vggdeploy` command line.

Every command imports its heavy libraries (torch, onnx, onnxruntime, tensorrt) inside its body,
so `vggdeploy --help` and each `<command> --help` start fast and work on any machine. User
errors (`VggDeployError`) print as one line and exit non-zero; other exceptions are bugs and
keep their traceback. Every line printed here goes through `report.escape.shown`, since error
messages quote file names and bundle text. SIGTERM and SIGHUP (what `kill`, a container runtime
or a closed terminal send) are turned into the same KeyboardInterrupt as Ctrl-C, so every
command cleans up the same way for all three.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from vggdeploy import __version__
from vggdeploy.cli_options import CONTEXT, guard_outputs
from vggdeploy.commands import bench, check, make, pipeline, serve, ship
from vggdeploy.errors import VggDeployError, os_error_message
from vggdeploy.report.escape import shown

#: the signals that stop a command the way Ctrl-C does (clean-up, exit 130, one line)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: the name of the stop signal that arrived last (for the one line printed)
_received: list[str] = []


def _stop(signum: int, frame: object) -> None:
    _received.append(signal.Signals(signum).name)
    raise KeyboardInterrupt


def _install_stop_handlers() -> dict[int, object]:
    """Make every stop signal act as Ctrl-C; returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}


class _EscapedLog(logging.Filter):
    """Log messages quote file names and bundle text: each record leaves as one escaped line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = shown(record.getMessage()), None
        return True


def _error(message: str, label: str = "error") -> None:
    click.echo(f"{label}: {shown(message)}", err=True)


def _interrupted() -> None:
    how = f" by {_received[-1]}" if _received and _received[-1] != "SIGINT" else ""
    click.echo(f"interrupted{how} (no partial files were left behind)", err=True)
    sys.exit(130)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(message)s" if verbose == 0 else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_EscapedLog())
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

    \b
    Exit status:
      0    done
      1    a problem to fix (one line names it and the fix)
      2    a check ran and failed (parity, validation, precision), or the
           command line is malformed (unknown option, bad choice)
      3    done, but unreadable images were skipped (each on its own line;
           calibrate, validate and evaluate; --strict stops at the first)
      130  interrupted (Ctrl-C, SIGTERM, SIGHUP); no partial files are left
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = 0 if quiet else verbose
    _setup_logging(verbose, quiet)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and a non-zero exit for user errors."""
    previous = _install_stop_handlers()
    try:
        _run(argv)
    finally:  # a caller in the same process (a test) gets its own handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="vggdeploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        # One line like every other user error (click's own format is a usage block).
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        # click's own messages may span lines ("Choose from:\n\t..."): joined, not escaped
        _error(" ".join(f"{exc.format_message()}{hint}".split()))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            # click turns Ctrl-C into Abort, so the KeyboardInterrupt branch below never sees it.
            _interrupted()
        click.echo("aborted", err=True)
        sys.exit(1)
    except VggDeployError as exc:
        _error(str(exc), exc.label)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except OSError as exc:
        # Space, permissions and over-long names are the user's to fix: one line. Any other
        # OS error is a bug and keeps its traceback.
        message = os_error_message(exc)
        if message is None:
            raise
        _error(message)
        sys.exit(1)
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
    pipeline.pipeline,
    check.inspect_cmd,
    ship.pack,
    ship.unpack,
    ship.package,
    serve.serve,
    serve.verify_endpoint,
):
    cli.add_command(guard_outputs(_command))


if __name__ == "__main__":
    main()
