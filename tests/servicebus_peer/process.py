"""Run the test peer in a subprocess that a test can kill (SIGKILL) and start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PeerProcess:
    """One peer on ``127.0.0.1:port``; ``kill()`` + ``start()`` restart it on the same journal."""

    def __init__(
        self,
        *,
        port: int | None = None,
        lock_seconds: float = 30.0,
        max_message_size: int = 256 * 1024,
        data_dir: str | Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.lock_seconds = lock_seconds
        self.max_message_size = max_message_size
        self.data_dir = str(data_dir) if data_dir else None
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=test;SharedAccessKey=test;"
            "UseDevelopmentEmulator=true"
        )

    @property
    def url(self) -> str:
        return f"sb://127.0.0.1:{self.port}/?emulator=true"

    def start(self, timeout: float = 15.0) -> None:
        command = [
            sys.executable,
            "-m",
            "tests.servicebus_peer",
            "--port",
            str(self.port),
            "--lock-seconds",
            str(self.lock_seconds),
            "--max-message-size",
            str(self.max_message_size),
        ]
        if self.data_dir:
            command += ["--data-dir", self.data_dir]
        if self.verbose:
            command.append("-v")
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Service Bus test peer exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.stop()
        raise RuntimeError(f"the Service Bus test peer did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client, like a crashed broker."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
