"""HTTP plumbing shared by every source: one session, a process-wide rate limiter,
retries with exponential backoff and full jitter honouring Retry-After (RFC 9110
§10.2.3), a response size cap and an overall deadline. Knows nothing of XML.

The deadline bounds a call's whole life, body included. Socket time-outs cannot do
that (they bound each read, and a server sending one byte a second satisfies every
read), nor can urllib3's `Timeout(total=...)` (it, too, is per read once connected). So
each attempt arms a timer that shuts the connection's socket down when the deadline
comes: whatever read is blocked then returns at once, and the call fails loudly.

Compressed bodies count against the size cap as they inflate: urllib3 ≥ 2.7
(pyproject.toml) inflates at most what each read asks for (before 2.6, a 194 KB gzip
read in one chunk became 200 MB in memory: CVE-2025-66471; before 2.7, a partly read
one could be inflated whole: CVE-2026-44432). A redirect's body is never read."""

from __future__ import annotations

import email.utils
import logging
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

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
        for prefix in ("http://", "https://"):
            self.session.mount(prefix, _DeadlineAdapter())
        self.session.headers["User-Agent"] = user_agent
        self.session.hooks["response"].append(_drop_redirect_body)
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
            except _DeadlineReached as e:
                raise SourceError(
                    f"{what}: no complete answer from {redact(url)} within the deadline of {policy.deadline:g}s"
                    f"{f' ({attempt} attempts)' if attempt > 1 else ''}",
                    url=redact(url),
                ) from e
            except _TooLarge as e:
                raise SourceError(
                    f"{what}: response larger than {self.max_bytes // 1_000_000} MB from {redact(url)}; refusing it",
                    url=redact(url),
                ) from e
            except requests.TooManyRedirects as e:
                raise SourceError(f"{what}: too many redirects from {redact(url)}", url=redact(url)) from e
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                problem = f"{type(e).__name__}"
                if isinstance(e, requests.Timeout):
                    problem = f"timed out after {policy.timeout:g}s"
                elif isinstance(e, requests.ConnectionError):
                    problem = f"connection failed: {connection_problem(e)}"
                    if FAIL_FAST.is_set():  # `check --online`: no network is news at once, not after retries
                        raise SourceError(f"{what}: {problem} from {redact(url)}", url=redact(url)) from e
                else:  # the server hung up before the end of the body: a cut-off download, try again
                    problem = "answer cut off before its end"
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
                    f"{what}: {problem} from {redact(url)} "
                    f"(gave up after {attempt} attempt{'s' if attempt != 1 else ''})",
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
        left = give_up_at - time.monotonic()
        if left <= 0:
            raise _DeadlineReached()
        if self.limiter is not None:
            self.limiter.wait()
        self.requests_made += 1
        watch = _Watch()
        timer = threading.Timer(max(0.0, give_up_at - time.monotonic()), watch.cut)
        timer.daemon = True
        _current.watch = watch
        timer.start()
        try:
            return self._exchange(method, url, params, data, headers, min(self.policy.timeout, left), give_up_at)
        except Exception as e:
            if watch.fired:
                raise _DeadlineReached() from e
            raise
        finally:
            timer.cancel()
            _current.watch = None
            if watch.fired:
                watch.close()  # in this thread, now that no read is blocked on them

    def _exchange(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        data: dict[str, Any] | None,
        headers: dict[str, str] | None,
        timeout: float,
        give_up_at: float,
    ) -> Fetched:
        watch = _current.watch
        with self.session.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=timeout,
            stream=True,
        ) as resp:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise _TooLarge()
            chunks: list[bytes] = []
            total = 0
            for chunk in resp.iter_content(chunk_size=64 * 1024):  # inflated: urllib3 >= 2.7 caps each read
                total += len(chunk)
                if total > self.max_bytes:
                    raise _TooLarge()
                chunks.append(chunk)
                if time.monotonic() > give_up_at:  # the timer's backstop (a SOCKS proxy's connections)
                    raise _DeadlineReached()
            if watch is not None and watch.fired:  # cut at the deadline: what we have may look complete
                raise _DeadlineReached()
            return Fetched(
                status=resp.status_code,
                url=resp.url,
                headers={k.lower(): v for k, v in resp.headers.items()},
                content=b"".join(chunks),
                redirected_from=[r.url for r in resp.history],
            )


class _TooLarge(Exception):
    pass


def _drop_redirect_body(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """requests reads a redirect's whole body, inflated and uncapped, before following it
    (`Session.resolve_redirects`: `resp.content`), so a gzip bomb in a 302 went around
    the size cap (and urllib3's fixes). Nothing in it is wanted: close the connection,
    body unread, and give requests an empty one."""
    if response.is_redirect:
        response.raw.close()
        response._content = b""
        response._content_consumed = True  # type: ignore[attr-defined]


class _DeadlineReached(Exception):
    pass


class _Watch:
    """The sockets one attempt uses, so a timer can cut them at the deadline.

    Sockets, not connections: http.client hands a `Connection: close` response's socket
    to the response and forgets it. `cut` and a connection that connects after it both
    take the lock, so a socket opened just as the deadline passes is shut down too."""

    def __init__(self) -> None:
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if sock not in self._socks:
                self._socks.append(sock)
            if self.fired:
                _shutdown(sock)

    def cut(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                _shutdown(sock)

    def close(self) -> None:
        with self._lock:
            for sock in self._socks:
                sock.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on it in another thread
    except OSError:
        pass  # already closed


_current = threading.local()  # the `_Watch` of the attempt this thread is making


class _Watched:
    """Mixed into urllib3's connections: each one joins the current attempt's watch when
    it connects and when it sends a request (a kept-alive connection is reused)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._join()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._join()
        super().request(*args, **kwargs)  # type: ignore[misc]

    def _join(self) -> None:
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.add(getattr(self, "sock", None))


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections a deadline can cut (see `_Watch`)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has connection classes of its own
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# Set by `litwatch check --online`: a connection that fails (name, refused, TLS) fails
# the request at once, without retries or their warnings. Time-outs are still retried.
FAIL_FAST = threading.Event()


def connection_problem(e: BaseException) -> str:
    """Why a connection failed, in a person's words: the name did not resolve, the
    host refused, TLS failed, or it timed out (requests wraps urllib3 wraps socket)."""
    import socket
    import ssl

    seen: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in seen and len(seen) < 12:
        seen.append(cur)
        nxt = cur.__cause__ or cur.__context__
        for arg in getattr(cur, "args", ()):
            if isinstance(arg, BaseException) and arg not in seen:
                nxt = nxt or arg
                seen.append(arg)
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException) and reason not in seen:
            nxt = reason
        cur = nxt
    text = " ".join(f"{type(x).__name__} {x}" for x in seen)
    if any(isinstance(x, socket.gaierror) for x in seen) or "NameResolutionError" in text or "Name or service" in text:
        return "the host name could not be resolved (DNS)"
    if any(isinstance(x, ssl.SSLError) for x in seen) or "SSLError" in text or "CERTIFICATE" in text:
        return "TLS failed (certificate or handshake)"
    if any(isinstance(x, ConnectionRefusedError) for x in seen) or "Connection refused" in text:
        return "the host refused the connection"
    if any(isinstance(x, (TimeoutError, socket.timeout)) for x in seen) or "timed out" in text:
        return "timed out"
    if any(isinstance(x, ConnectionResetError) for x in seen) or "reset" in text.lower():
        return "the connection was reset"
    return "network unreachable or closed" if "unreachable" in text.lower() else type(e).__name__
