"""HTTP plumbing shared by every source: one session, a process-wide rate limiter,
retries with exponential backoff and full jitter honouring Retry-After (RFC 9110
§10.2.3), a response size cap and an overall deadline. Knows nothing of XML."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from .. import __version__
from ..errors import SourceError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"litwatch/{__version__} (+https://github.com/litwatch/litwatch)"


class Limiter(Protocol):
    """Waits until the next request may start: `RateLimiter` in one process, or
    `coordination.RequestBudget` across every process sharing the database."""

    def wait(self) -> None: ...


class RateLimiter:
    """At most `per_second` request starts in any sliding window of one second.

    Shared by every thread of the process (NCBI counts per IP and API key)."""

    def __init__(self, per_second: int, margin: float = 0.02) -> None:
        self.per_second = per_second
        self.margin = margin
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._sent) >= self.per_second:
                ready = self._sent[0] + 1.0 + self.margin
                if ready > now:
                    time.sleep(ready - now)
                    now = time.monotonic()
                self._sent.popleft()
            self._sent.append(now)


_limiters: dict[tuple[str, int], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(name: str, per_second: int) -> RateLimiter:
    """The process-wide limiter for `name` (e.g. the E-utilities host)."""
    with _limiters_lock:
        key = (name, per_second)
        if key not in _limiters:
            _limiters[key] = RateLimiter(per_second)
        return _limiters[key]


@dataclass
class Fetched:
    status: int
    url: str  # final URL after redirects
    headers: dict[str, str]
    content: bytes
    redirected_from: list[str] = field(default_factory=list)


@dataclass
class RetryPolicy:
    retries: int = 4
    backoff: float = 1.0  # first delay, seconds; doubles each attempt
    max_delay: float = 60.0
    timeout: float = 60.0  # per request (connect and read)
    deadline: float = 600.0  # for one call including all retries


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact(url: str) -> str:
    """The URL without its query string: query strings carry api_key and e-mail."""
    return url.split("?", 1)[0]


class HttpClient:
    def __init__(
        self,
        *,
        policy: RetryPolicy,
        max_bytes: int,
        limiter: Limiter | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.limiter = limiter
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.session.max_redirects = 10
        self.requests_made = 0

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ok: frozenset[int] = frozenset({200}),
    ) -> Fetched:
        """Send with retries; return a response whose status is in `ok`, or raise
        `SourceError` naming `what` (never the query string: it may hold secrets)."""
        policy = self.policy
        give_up_at = time.monotonic() + policy.deadline
        attempt = 0
        while True:
            attempt += 1
            delay: float | None
            try:
                fetched = self._once(method, url, params, data, headers, give_up_at)
            except _TooLarge as e:
                raise SourceError(
                    f"{what}: response larger than {self.max_bytes // 1_000_000} MB from {redact(url)}; refusing it",
                    url=redact(url),
                ) from e
            except requests.TooManyRedirects as e:
                raise SourceError(f"{what}: too many redirects from {redact(url)}", url=redact(url)) from e
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = f"{type(e).__name__}"
                if isinstance(e, requests.Timeout):
                    problem = f"timed out after {policy.timeout:g}s"
                elif isinstance(e, requests.ConnectionError):
                    problem = "connection failed"
                delay = None
                status = None
            except requests.RequestException as e:
                raise SourceError(f"{what}: request to {redact(url)} failed: {type(e).__name__}") from e
            else:
                if fetched.status in ok:
                    return fetched
                status = fetched.status
                problem = f"HTTP {status}"
                if status not in RETRY_STATUSES:
                    raise SourceError(f"{what}: {problem} from {redact(url)}", url=redact(url), status=status)
                delay = retry_after_seconds(fetched.headers.get("retry-after"))
            if attempt > policy.retries:
                raise SourceError(
                    f"{what}: {problem} from {redact(url)} (gave up after {attempt} attempts)",
                    url=redact(url),
                    status=status,
                )
            if delay is None:
                delay = random.uniform(0, min(policy.max_delay, policy.backoff * 2 ** (attempt - 1)))
            delay = min(delay, policy.max_delay)
            if time.monotonic() + delay > give_up_at:
                raise SourceError(
                    f"{what}: {problem} from {redact(url)}; deadline of {policy.deadline:g}s reached",
                    url=redact(url),
                    status=status,
                )
            log.warning("%s: %s from %s, retry %d in %.1fs", what, problem, redact(url), attempt, delay)
            time.sleep(delay)

    def _once(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        data: dict[str, Any] | None,
        headers: dict[str, str] | None,
        give_up_at: float,
    ) -> Fetched:
        if self.limiter is not None:
            self.limiter.wait()
        self.requests_made += 1
        with self.session.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=self.policy.timeout,
            stream=True,
        ) as resp:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise _TooLarge()
            chunks: list[bytes] = []
            total = 0
            for chunk in resp.iter_content(chunk_size=256 * 1024):
                total += len(chunk)
                if total > self.max_bytes:
                    raise _TooLarge()
                chunks.append(chunk)
                if time.monotonic() > give_up_at:  # a server dripping bytes forever
                    raise requests.Timeout("deadline reached while reading")
            return Fetched(
                status=resp.status_code,
                url=resp.url,
                headers={k.lower(): v for k, v in resp.headers.items()},
                content=b"".join(chunks),
                redirected_from=[r.url for r in resp.history],
            )


class _TooLarge(Exception):
    pass
