"""Mail: building the `EmailMessage` (stable Message-ID, List-Id, Auto-Submitted,
List-Unsubscribe with one-click List-Unsubscribe-Post when the web view has a URL) and
the transports: SMTP (starttls | ssl | none, AUTH, one connection per run) and file
(one .eml per message, written atomically). Errors become `DeliveryError`, temporary
(4xx, refused connection: retry later) or permanent (5xx for a recipient)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import smtplib
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from types import TracebackType
from typing import Protocol

from .config import MailSettings
from .errors import DeliveryError


def build_message(
    *,
    mail: MailSettings,
    digest: str,
    recipient: str,
    subject: str,
    text: str,
    html: str | None,
    unsubscribe: str | None = None,
) -> EmailMessage:
    """`unsubscribe`: the recipient's one-click https link (web.base_url set): the
    message then carries List-Unsubscribe (the link, and a mailto to the sender when
    it has a real domain) and List-Unsubscribe-Post (RFC 2369, RFC 8058)."""
    sender = parseaddr(mail.from_)[1]
    sender_domain = sender.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = mail.from_
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    # Fixed now, stored in the outbox: a message re-sent after a crash keeps it (RFC 5322 §3.6.4).
    msg["Message-ID"] = message_id(digest, sender_domain)
    msg["List-Id"] = mail.list_id or f"{digest} <{_token(digest)}.litwatch.{sender_domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg["X-Litwatch-Digest"] = digest
    # Each message its own: Gmail does not thread a run's mail with last week's alike subject.
    msg["X-Entity-Ref-ID"] = msg["Message-ID"].strip("<>").partition("@")[0]
    if unsubscribe is not None:
        links = [f"<{unsubscribe}>"]
        if "." in sender_domain and sender_domain != "localhost":
            links.append(f"<mailto:{sender}?subject=unsubscribe%20{_token(digest)}>")
        msg["List-Unsubscribe"] = ", ".join(links)
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg


def message_id(digest: str, domain: str) -> str:
    """`<time.random.digest@domain>`: unique (48 random bits per second), and short
    enough that `Message-ID:` stays on one line; `make_msgid`'s long form gets folded."""
    return f"<{int(time.time()):x}.{secrets.token_hex(6)}.{_token(digest)[:24]}@{domain}>"


def _token(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", name)


class RecipientRefused(DeliveryError):
    """The server refused this recipient only (RCPT TO): the others can still be sent."""


class MessageTooLarge(DeliveryError):
    """552 to the message's size (at MAIL FROM's SIZE or after DATA): it goes out again
    in smaller parts."""


class ClaimLost(DeliveryError):
    """Raised by a `Guard` at the point of no return: this process may no longer hold
    the message's claim (it was paused past it, or another process took it over), so
    the message is not handed over; the conversation is cut before the end of DATA."""


# Called at the point of no return (before the end of DATA, before the file is put in
# place): raises `ClaimLost` when the message must not be handed over.
Guard = Callable[[], None]


class Transport(Protocol):
    def __enter__(self) -> Transport: ...

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None: ...

    def send(self, mime: bytes, recipient: str, message_id: str, guard: Guard | None = None) -> None: ...


def transport_for(mail: MailSettings) -> Transport:
    if mail.transport == "file":
        return FileTransport(Path(mail.directory))
    return SmtpTransport(mail)


class FileTransport:
    """One `<message-id>.eml` per message. A re-send overwrites the same file, so a
    crash between writing and marking cannot leave two copies."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ready = False

    def __enter__(self) -> FileTransport:
        return self  # the directory is made at the first message: a run with none leaves no trace

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def send(self, mime: bytes, recipient: str, message_id: str, guard: Guard | None = None) -> None:
        if not self.ready:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DeliveryError(f"cannot create mail directory {self.directory}: {e.strerror}") from None
            self.ready = True
        name = re.sub(r"[^A-Za-z0-9.@_-]", "_", message_id.strip("<>")) + ".eml"
        target = self.directory / name
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
            with os.fdopen(fd, "wb") as f:
                f.write(mime)
                f.flush()
                os.fsync(f.fileno())
            if guard is not None:
                guard()  # the point of no return: the rename
            os.replace(tmp, target)
            tmp = None
            # the rename itself must be on disk before the message is marked sent
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise DeliveryError(f"cannot write {target}: {e.strerror}") from None
        finally:
            if tmp is not None:  # a failed write leaves no half file behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


class SmtpTransport:
    """One SMTP connection for a whole digest run, opened at the first message."""

    def __init__(self, mail: MailSettings) -> None:
        self.mail = mail
        self.smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        user = f"{self.mail.username}@" if self.mail.username else ""
        return f"smtp://{user}{self.mail.host}:{self.mail.smtp_port}"

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
            self.smtp = None

    def _connect(self) -> smtplib.SMTP:
        m = self.mail
        assert m.host
        context = ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if m.security == "ssl":
                smtp = smtplib.SMTP_SSL(m.host, m.smtp_port, timeout=m.timeout, context=context)
            else:
                smtp = smtplib.SMTP(m.host, m.smtp_port, timeout=m.timeout)
                if m.security == "starttls":
                    smtp.starttls(context=context)
            if m.username:
                password = m.password.get_secret_value() if m.password else ""
                smtp.login(m.username, password)
        except smtplib.SMTPAuthenticationError as e:
            raise DeliveryError(
                f"{self.where}: login refused ({e.smtp_code}); check mail.username and mail.password"
            ) from None
        except smtplib.SMTPNotSupportedError as e:
            raise DeliveryError(f"{self.where}: {e}; check mail.security") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
            raise DeliveryError(f"{self.where}: cannot connect: {_describe(e)}") from None
        return smtp

    def send(self, mime: bytes, recipient: str, message_id: str, guard: Guard | None = None) -> None:
        if self.smtp is None:
            self.smtp = self._connect()
        sender = parseaddr(self.mail.from_)[1]
        try:
            refused = _sendmail(self.smtp, sender, recipient, mime, guard)
        except ClaimLost:
            self._drop()  # mid-DATA without the final dot: the server discards the message
            raise
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            raise _refused(self.where, recipient, code, text) from None
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
            if e.smtp_code != 552:
                self._drop()
                raise self._failed(e, sender, recipient) from None
            # 552 to MAIL FROM's SIZE or after DATA: too large for this server (RFC 1870,
            # RFC 5321 4.5.3.1.10); smtplib has reset the session, the connection goes on
            reply = f"{e.smtp_code} {_text(e.smtp_error)}"
            raise MessageTooLarge(
                f"{self.where}: message to {recipient} too large: {reply}", permanent=True, reply=reply
            ) from None
        except smtplib.SMTPResponseException as e:
            self._drop()
            raise self._failed(e, sender, recipient) from None
        except (smtplib.SMTPException, OSError) as e:
            self._drop()
            raise DeliveryError(f"{self.where}: sending to {recipient} failed: {_describe(e)}") from None
        if refused:
            code, text = next(iter(refused.values()))
            raise _refused(self.where, recipient, code, text)

    def _failed(self, e: smtplib.SMTPResponseException, sender: str, recipient: str) -> DeliveryError:
        reply = f"{e.smtp_code} {_text(e.smtp_error)}"
        if isinstance(e, smtplib.SMTPSenderRefused):
            # MAIL FROM refused (530 authentication required, 553 sender not allowed): a
            # config problem, not this message's; it stays queued until the config is fixed
            return DeliveryError(
                f"{self.where}: sender {sender} refused: {reply}; check mail.from, mail.username and mail.password"
            )
        return DeliveryError(
            f"{self.where}: sending to {recipient} failed: {reply}", permanent=e.smtp_code >= 500, reply=reply
        )

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None


def _sendmail(
    smtp: smtplib.SMTP, sender: str, recipient: str, mime: bytes, guard: Guard | None
) -> dict[str, tuple[int, bytes]]:
    """`smtplib.SMTP.sendmail` for one recipient, with the same replies and exceptions,
    driven step by step so that `guard` runs after the body is sent and before the final
    ".": the end of DATA is the point after which the server has the message."""
    smtp.ehlo_or_helo_if_needed()
    options = [f"size={len(mime)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
    code, resp = smtp.mail(sender, options)
    if code != 250:
        _reset(smtp, code)
        raise smtplib.SMTPSenderRefused(code, resp, sender)
    code, resp = smtp.rcpt(recipient)
    if code not in (250, 251):
        _reset(smtp, code)
        raise smtplib.SMTPRecipientsRefused({recipient: (code, resp)})
    smtp.putcmd("data")
    code, resp = smtp.getreply()
    if code != 354:
        _reset(smtp, code)
        raise smtplib.SMTPDataError(code, resp)
    body = re.sub(rb"(?m)^\.", b"..", mime)
    if body[-2:] != b"\r\n":
        body += b"\r\n"
    smtp.send(body)
    if guard is not None:
        guard()  # the point of no return: the final "." hands the message over
    smtp.send(b".\r\n")
    code, resp = smtp.getreply()
    if code != 250:
        _reset(smtp, code)
        raise smtplib.SMTPDataError(code, resp)
    return {}


def _reset(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal, as `sendmail` does: 421 closes; anything else resets the session."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


def _refused(where: str, recipient: str, code: int, text: bytes | str) -> RecipientRefused:
    reply = f"{code} {_text(text)}"
    # RFC 5321 4.5.3.1.10: a 552 to RCPT (mailbox over its quota) is to be taken as 452: temporary
    permanent = code >= 500 and code != 552
    return RecipientRefused(f"{where}: {recipient} refused: {reply}", permanent=permanent, reply=reply)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, smtplib.SMTPServerDisconnected):
        # smtplib turns a read timeout into "Connection unexpectedly closed: timed out"
        return "timed out" if isinstance(e.__context__, TimeoutError) else "server closed the connection"
    return f"{type(e).__name__}: {e}"


__all__ = [
    "Address",
    "ClaimLost",
    "DeliveryError",
    "Guard",
    "FileTransport",
    "MessageTooLarge",
    "RecipientRefused",
    "SmtpTransport",
    "build_message",
    "transport_for",
]
