"""Logging setup for entry points (the library itself only adds a NullHandler)."""

from __future__ import annotations

import json
import logging
import sys

from stream.config import LogFormat


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python logs every reconnect and coordinator step at INFO.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    # "Task ran for 0.1s": the client's IO thread waiting for the GIL while the
    # worker scores a batch; expected, and not actionable.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
