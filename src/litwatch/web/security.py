"""The web view's guards (issue 26): HTTP basic auth against a password kept only as a
scrypt hash, security headers with a strict Content-Security-Policy on every answer,
and no cross-site POST. Pure ASGI middleware, so it also covers error answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Pages: own styles and images only, no script at all, forms post only here, never framed.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# An archived mail's HTML: sandboxed (no script, no forms, its own opaque origin), its
# inline styles allowed, remote images not fetched (they would tell the sender who reads).
MAIL_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"

# Paths open without a password: probes, and the unsubscribe links (their token is their key).
OPEN = ("/healthz", "/metrics", "/u/", "/static/")


class PasswordHash:
    """scrypt (RFC 7914) of the configured password with a random salt, made once at
    start; the password itself is not kept."""

    def __init__(self, password: str) -> None:
        self.salt = secrets.token_bytes(16)
        self.digest = self._hash(password)

    def _hash(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode(), salt=self.salt, n=2**14, r=8, p=1, dklen=32)

    def check(self, password: str) -> bool:
        return hmac.compare_digest(self._hash(password), self.digest)


class Guard:
    """Security headers on every answer; basic auth when `password` is set; POSTs only
    from this site (Sec-Fetch-Site / Origin), except where `cross_site_ok` says (the
    one-click unsubscribe, which mail providers POST from their own servers)."""

    def __init__(self, app: ASGIApp, *, password: PasswordHash | None, cross_site_ok: tuple[str, ...] = ()) -> None:
        self.app = app
        self.password = password
        self.cross_site_ok = cross_site_ok
        self._ok_headers: set[bytes] = set()  # Authorization values already checked (hashed anyway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.lower(): v for k, v in scope.get("headers", [])}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
                if b"content-security-policy" not in present:
                    extra += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        if self.password is not None and not path.startswith(OPEN) and not self._authorized(headers):
            await _plain(send_with_headers, 401, "login needed\n", [(b"www-authenticate", b'Basic realm="litwatch"')])
            return
        if scope.get("method") == "POST" and not path.startswith(self.cross_site_ok) and _cross_site(headers):
            await _plain(send_with_headers, 403, "cross-site request refused\n")
            return
        await self.app(scope, receive, send_with_headers)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        assert self.password is not None
        value = headers.get(b"authorization", b"")
        if not value.lower().startswith(b"basic "):
            return False
        key = hashlib.sha256(value).digest()
        if key in self._ok_headers:
            return True
        try:
            _, _, given = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not self.password.check(given):
            return False
        if len(self._ok_headers) < 64:
            self._ok_headers.add(key)
        return True


def _cross_site(headers: dict[bytes, bytes]) -> bool:
    site = headers.get(b"sec-fetch-site")
    if site is not None:
        return site not in (b"same-origin", b"none")
    origin = headers.get(b"origin")
    if origin is None:
        return False  # not a browser's cross-site form post (browsers send Origin with POST)
    host = headers.get(b"host", b"")
    return origin.split(b"://", 1)[-1] != host


async def _plain(send: Send, status: int, body: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
