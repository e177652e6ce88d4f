"""Logging set-up: one line per record, key=value by default or JSON with
LITWATCH_LOG_FORMAT=json. Secrets never reach the log: URLs are logged without query
strings (sources.http.redact) and passwords are SecretStr in the config."""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: int = logging.WARNING) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LITWATCH_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "apscheduler", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
