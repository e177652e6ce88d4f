"""Unsubscribe tokens: a digest and a recipient, signed (HMAC-SHA256 with `web.secret`,
or $LITWATCH_SECRET) so that a link stops that recipient's mail of that digest and
nothing else. URL-safe; the secret is never logged or shown."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from .config import Settings, WebSettings
from .errors import ConfigError, config_problem

SECRET_ENV = "LITWATCH_SECRET"
NO_SECRET = f"web.base_url needs a secret to sign unsubscribe links: web.secret or ${SECRET_ENV}, 16+ characters"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_of(web: WebSettings, env: dict[str, str] | None = None) -> bytes | None:
    if web.secret is not None:
        return web.secret.get_secret_value().encode()
    value = (os.environ if env is None else env).get(SECRET_ENV, "")
    return value.encode() if len(value) >= 16 else None


def _mac(secret: bytes, digest: str, recipient: str) -> bytes:
    msg = b"litwatch-unsubscribe\0" + digest.encode() + b"\0" + recipient.lower().encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()[:16]


def make_token(secret: bytes, digest: str, recipient: str) -> str:
    return ".".join((_b64(digest.encode()), _b64(recipient.encode()), _b64(_mac(secret, digest, recipient))))


def read_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """(digest, recipient) when the token is genuine, else None."""
    try:
        d, r, m = token.split(".")
        digest, recipient, mac = _unb64(d).decode(), _unb64(r).decode(), _unb64(m)
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, digest, recipient)):
        return None
    return digest, recipient


def unsubscribe_url(settings: Settings, digest: str, recipient: str) -> str | None:
    """The one-click link for a mail, or None without `web.base_url`."""
    web = settings.web
    if web is None or web.base_url is None:
        return None
    secret = secret_of(web)
    if secret is None:
        raise ConfigError([config_problem(settings.source or "<config>", None, "web.secret", NO_SECRET)])
    return f"{web.base_url}u/{make_token(secret, digest, recipient)}"
