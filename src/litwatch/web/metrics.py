"""`/metrics`: the Prometheus text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/): counters since this
process started, and gauges read when asked. No secrets."""

from __future__ import annotations

import threading

_COUNTERS = {
    "polls": "Source polls done by this instance (PubMed, notices, feeds).",
    "poll_errors": "Source polls that failed.",
    "events": "Events (new, approval, erratum, retraction, concern, update) created.",
    "mails_sent": "Digest messages handed to the mail server or written to the outbox directory.",
    "mail_failures": "Digest messages whose delivery failed (they stay queued or are marked failed).",
    "job_errors": "Scheduler jobs that ended with an unexpected error.",
}


class Metrics:
    """Counters since this process started; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(_COUNTERS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        out = []
        with self._lock:
            values = dict(self._values)
        for name, help_ in _COUNTERS.items():
            out += [
                f"# HELP litwatch_{name}_total {help_}",
                f"# TYPE litwatch_{name}_total counter",
                f"litwatch_{name}_total {values[name]}",
            ]
        for name, (help_, value) in gauges.items():
            out += [f"# HELP litwatch_{name} {help_}", f"# TYPE litwatch_{name} gauge", f"litwatch_{name} {value:g}"]
        return "\n".join(out) + "\n"
