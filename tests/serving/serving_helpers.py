"""A real `vggdeploy serve` in a subprocess, on free loopback ports, always stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: how long a server may take to load the tiny bundle and start listening
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    http: int
    grpc: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False


@contextlib.contextmanager
def running_server(
    bundle: Path, log: Path, fault: str | None = None, args: Sequence[str] = ()
) -> Iterator[Server]:
    """`vggdeploy serve bundle [args]` until the block ends (terminated, then killed)."""
    env = {k: v for k, v in os.environ.items() if k != "VGGDEPLOY_SERVE_TEST_FAULT"}
    if fault:
        env["VGGDEPLOY_SERVE_TEST_FAULT"] = fault
    http, grpc = free_port(), free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vggdeploy", "serve", str(bundle)]
            + ["--port", str(http), "--grpc-port", str(grpc), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = Server(http, grpc, process, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not server.ready():
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}): {log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready in {READY_TIMEOUT_S} s: {log}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
