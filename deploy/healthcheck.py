#!/usr/bin/env python3
"""Container health check for litwatch (installed in the image as litwatch-healthcheck).

If the config ($LITWATCH_CONFIG) sets `health_port`, GET http://127.0.0.1:PORT/healthz
and succeed on 200. Otherwise run `litwatch status`, which opens the database and exits
0 when litwatch can work. Exit 0 healthy, 1 unhealthy, as HEALTHCHECK expects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

import yaml


def health_port(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None  # let `litwatch status` report what is wrong
    port = doc.get("health_port") if isinstance(doc, dict) else None
    if isinstance(port, str):  # "${HEALTH_PORT}" or "${HEALTH_PORT:-8080}"
        port = re.sub(
            r"\$\{(\w+)(?::-([^}]*))?\}",
            lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""),
            port,
        ).strip()
    try:
        return int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        return None


def main() -> int:
    port = health_port(os.environ.get("LITWATCH_CONFIG", "litwatch.yaml"))
    if port:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return 0 if r.status == 200 else 1
        except OSError as e:
            print(f"healthz: {e}", file=sys.stderr)
            return 1
    done = subprocess.run(["litwatch", "status"], stdout=subprocess.DEVNULL, check=False)
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
