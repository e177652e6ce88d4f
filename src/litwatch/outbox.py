"""The outbox: messages queued with the deliveries that bind their events, claimed,
sent, marked; refusals kept and queued again on request. Contains no rendering: a
message too large for the server is cut into parts by the `Splitter` the caller gives.

A message's life (the `state` column):

    queued ──claim──► sending (owner, until) ──► sent
       ▲                  │ ├──► queued again, at `retry_at(attempts, now)` (4xx, server down)
       │                  │ ├──► refused, with the recipient and the server's reply (5xx)
       │                  │ └──► split into smaller queued parts (552 too large)
       └── stale claim ───┘      (its holder died mid-send)
       └── `litwatch digest --retry-failed` ◄── refused

The claim is one checked UPDATE (`… WHERE state = 'queued'` or the claim is stale)
before the SMTP conversation, so of several processes sharing a database one sends a
message; only the claim's owner marks it (checked too). A stale claim goes back to
`queued`: its message may have reached the server, and goes out again with the same
Message-ID — after a crash, the one repeat SPEC.md allows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from .config import MailSettings
from .coordination import dead_here, new_owner
from .errors import DeliveryError, StoreError
from .mail import ClaimLost, MessageTooLarge, RecipientRefused, Transport, transport_for
from .store.ports import OutboxPort
from .store.rows import OutboxMessage, SendingMessage

log = logging.getLogger(__name__)

RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=6)


def retry_at(attempts: int, now: datetime) -> datetime:
    """When a message that failed temporarily `attempts` times is tried again: one
    minute after the first failure, doubling, at most six hours apart."""
    delay: timedelta = RETRY_FIRST * 2 ** min(max(attempts, 1) - 1, 16)
    return now + min(delay, RETRY_MAX)


def sending_ttl(timeout: float) -> timedelta:
    """How long a sending claim holds: longer than any one SMTP conversation can take
    (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA and its reply, QUIT: each bounded
    by `mail.timeout`), so that a live sender is never overtaken by another process."""
    return timedelta(seconds=10 * timeout + 5)


def build_failed(name: str, to: Sequence[str], error: Exception) -> DigestResult:
    """A digest that could not be built: its failure, logged with its cause; the run
    goes on with the next digest. Its events stay pending."""
    log.error("digest %s could not be built: %s: %s", name, type(error).__name__, error)
    log.debug("digest %s: the cause", name, exc_info=error)
    return DigestResult(name, ", ".join(to), error=f"{type(error).__name__}: {error}", unbuilt=True)


@dataclass
class _Held:
    """A message's sending claim as this process knows it: `deadline` on this process's
    monotonic clock, taken from *before* the transaction that granted or renewed the
    claim, so it never ends later than the claim does on the database's clock (a pause,
    a SIGSTOP, a frozen VM all count: the monotonic clock runs on through them)."""

    deadline: float


@dataclass
class DigestResult:
    name: str
    recipient: str
    items: int = 0
    events: int = 0
    subject: str = ""
    message_id: str = ""
    sent: bool = False
    error: str | None = None
    permanent: bool = False  # the error: kept as refused, sent again only by --retry-failed
    split: int = 0  # too large for the server: sent as this many smaller messages
    busy: bool = False  # another process is sending it
    unbuilt: bool = False  # the digest could not be built (`error` says why); its events stay pending
    retried: str = ""  # --retry-failed: the refused message is queued again, for this recipient
    withdrawn: bool = False  # --retry-failed: its recipient is no longer listed
    text: str = ""
    html: str = ""

    def line(self) -> str:
        if self.withdrawn and self.retried:
            return (
                f"{self.name} → {self.recipient}: {self.subject}: refused, and no longer a recipient: "
                f"queued again for {self.retried}"
            )
        if self.withdrawn:
            return f"{self.name} → {self.recipient}: {self.subject}: refused, and no longer a recipient: not sent again"
        if self.retried:
            return f"{self.name} → {self.recipient}: {self.subject}: refused before, queued again"
        if self.busy:
            return f"{self.name} → {self.recipient}: {self.subject}: being sent by another litwatch process"
        if self.unbuilt:
            return f"{self.name} → {self.recipient}: FAILED, could not be built (its events stay pending): {self.error}"
        if self.split:
            return (
                f"{self.name} → {self.recipient}: {self.subject}: too large for the server, "
                f"split into {self.split} messages"
            )
        if self.error and self.permanent:
            return (
                f"{self.name} → {self.recipient}: {self.subject}: REFUSED, kept "
                f"(litwatch digest --retry-failed sends it again): {self.error}"
            )
        if self.error:
            return (
                f"{self.name} → {self.recipient}: {self.subject or 'queued message'}: FAILED, kept queued: {self.error}"
            )
        return (
            f"{self.name} → {self.recipient}: {self.subject} ({self.items} items){'' if self.sent else ' [not sent]'}"
        )


@dataclass
class Part:
    """One of the smaller messages a too-large one is split into."""

    message_id: str
    subject: str
    mime: bytes
    items: int
    event_ids: list[int] = field(default_factory=list)


# Re-renders a too-large message (an outbox row) as smaller parts, in the caller's
# transaction; None when it cannot be cut (a single item).
Splitter = Callable[[Connection, OutboxMessage], list[Part] | None]


class Outbox:
    def __init__(self, store: OutboxPort, mail: MailSettings, now: Callable[[], datetime], owner: str = "") -> None:
        self.store = store
        self.mail = mail
        self.now = now
        self.owner = owner or new_owner()
        self.ttl = sending_ttl(mail.timeout)

    def queue(self, tx: Connection, digest: str, recipient: str, part: Part, now: datetime) -> int:
        """The message and the deliveries binding its events, in the caller's
        transaction: committed before any attempt to send it (ARCHITECTURE.md rule 2)."""
        return self.store.queue_message(
            tx,
            digest=digest,
            recipient=recipient,
            message_id=part.message_id,
            subject=part.subject,
            mime=part.mime,
            items=part.items,
            event_ids=part.event_ids,
            now=now,
        )

    # ------------------------------------------------------------------ refusals

    def requeue_refused(self, recipients: Mapping[str, Sequence[str]]) -> list[DigestResult]:
        """`--retry-failed` for the digests in `recipients` (digest -> the recipients the
        config lists now). A refused message to a listed recipient goes back to the
        queue as it was (same Message-ID, same events), ahead of anything newer. One to a
        recipient the config no longer lists goes to its corrected address: a recipient
        listed since (never sent anything), the most alike if several; with none, it is
        withdrawn (the recipient was removed). Returns what happened to each."""
        out: list[DigestResult] = []
        with self.store.transaction() as tx:
            rows = [r for r in self.store.refused_messages(tx) if r.digest in recipients]
            again = [r.id for r in rows if r.recipient in recipients[r.digest]]
            self.store.requeue_refused(tx, again)
            fixes: dict[str, dict[str, str]] = {}
            for d in {r.digest for r in rows if r.id not in again}:
                added = [to for to in recipients[d] if self.store.recipient_since(tx, d, to) is None]
                gone = list(dict.fromkeys(r.recipient for r in rows if r.digest == d and r.id not in again))
                fixes[d] = corrections(gone, added)
            for r in rows:
                res = DigestResult(r.digest, r.recipient, items=r.items, subject=r.subject, message_id=r.message_id)
                out.append(res)
                if r.id in again:
                    res.retried = r.recipient
                    continue
                res.withdrawn = True
                fixed = fixes[r.digest].get(r.recipient)
                if fixed is None:
                    self.store.readdress_refused(tx, r.id, None)
                    continue
                (msg,) = self.store.messages(tx, [r.id])
                self.store.readdress_refused(tx, r.id, (fixed, _readdressed(bytes(msg.mime), fixed)))
                res.retried = fixed
        for res in out:
            log.info(
                "outbox refused digest=%s to=%s message_id=%s: %s",
                res.name,
                res.recipient,
                res.message_id,
                f"queued again for {res.retried}" if res.retried else "withdrawn (no longer a recipient)",
            )
        return out

    def refused(self, tx: Connection, digest: str | None = None) -> list[dict[str, object]]:
        return [
            {
                "digest": r.digest,
                "recipient": r.recipient,
                "reply": r.reply or r.last_error,
                "message_id": r.message_id,
                "subject": r.subject,
                "items": r.items,
                "refused_at": _iso(r.refused_at or r.created_at),
            }
            for r in self.store.refused_messages(tx, digest)
        ]

    # ------------------------------------------------------------------ sending

    def send(
        self,
        digests: Sequence[str] | None,
        *,
        respect_backoff: bool,
        results: list[DigestResult],
        only_new: bool = False,
        transport: Transport | None = None,
        split: Splitter | None = None,
    ) -> set[str]:
        """Send queued messages (oldest first) over one connection (`transport`'s, if
        given), each claimed first. Returns the recipients whose mail waits: a message
        failed now, waits for its retry time (`respect_backoff`), or is being sent by
        another process — nothing newer is built for them before it. `only_new`: just
        the messages never tried (those queued by this run)."""
        with self.store.transaction() as tx:
            now = self.store.db_now(tx)  # retry times are the database's: one clock for every instance
            busy = self._release_dead(tx, digests)
            queued = self.store.queued_messages(tx, digests=digests, now=None)
        for r in busy if not only_new else ():  # (a run's second pass: said in its first)
            results.append(DigestResult(r.digest, r.recipient, subject=r.subject, message_id=r.message_id, busy=True))
        blocked = {r.recipient for r in busy}
        blocked |= {r.recipient for r in queued if respect_backoff and r.next_attempt_at and r.next_attempt_at > now}
        todo = [r for r in queued if r.recipient not in blocked and not (only_new and r.attempts)]
        if not todo:
            return blocked
        down: str | None = None
        try:
            with ExitStack() as stack:
                transport = transport or stack.enter_context(transport_for(self.mail))
                while todo:
                    row = todo.pop(0)
                    if row.recipient in blocked and down is None:
                        continue  # an older message to them is waiting: keep their order
                    held = self._claim(row)
                    if held is None:  # another process was quicker
                        results.append(
                            DigestResult(
                                row.digest, row.recipient, subject=row.subject, message_id=row.message_id, busy=True
                            )
                        )
                        blocked.add(row.recipient)
                        continue
                    res = DigestResult(
                        row.digest, row.recipient, items=row.items, subject=row.subject, message_id=row.message_id
                    )
                    results.append(res)
                    if down is not None:  # the server is unwell: don't hammer it with the rest
                        res.error = down
                        self._failed(row, down)
                        blocked.add(row.recipient)
                        continue
                    parts, failure = self._send_one(transport, row, res, split, held)
                    todo[:0] = parts  # the parts of a split message go out now, before anything newer
                    if failure is not None and not failure.permanent:
                        blocked.add(row.recipient)
                        # one full mailbox, or a claim lost to a pause, holds up no one else
                        if not isinstance(failure, RecipientRefused | ClaimLost):
                            down = str(failure)
        except DeliveryError as e:  # the transport could not even start (e.g. directory)
            for row in todo:
                results.append(DigestResult(row.digest, row.recipient, subject=row.subject, error=str(e)))
                blocked.add(row.recipient)
        log.info("digest send digests=%s queued=%d waiting=%d", ",".join(digests or ["*"]), len(queued), len(blocked))
        return blocked

    def _release_dead(self, tx: Connection, digests: Sequence[str] | None) -> list[SendingMessage]:
        """Claims whose process died go back to `queued`: a claim that ran out, or one held
        by a process of this host that no longer exists (a SIGKILL, a crash: no need to
        wait for its time to run out). Its message may have reached the server: it goes
        out again with the same Message-ID. Returns the claims that hold."""
        live = []
        for r in self.store.sending(tx, digests=digests):
            if not (r.stale or dead_here(r.owner)):
                live.append(r)
            elif self.store.release_claim(tx, r.id, r.owner):
                log.warning(
                    "outbox message_id=%s: %s stopped while sending it; it goes out again with the same Message-ID",
                    r.message_id,
                    r.owner,
                )
        return live

    def _claim(self, row: OutboxMessage) -> _Held | None:
        start = time.monotonic()
        with self.store.transaction() as tx:
            if not self.store.claim_message(tx, row.id, self.owner, self.ttl):
                return None
        return _Held(start + self.ttl.total_seconds())

    def _guard(self, row: OutboxMessage, held: _Held) -> Callable[[], None]:
        """The check at the point of no return (before the end of DATA): this process
        still holds the message's claim, by its own monotonic deadline (a process paused
        past it knows without asking) and by the database, where the claim is renewed for
        another `ttl` so that it outlasts the rest of the conversation (the final "." and
        one reply, each bounded by `mail.timeout`). Raises `ClaimLost` otherwise."""
        margin = self.mail.timeout + 1

        def check() -> None:
            if time.monotonic() + margin >= held.deadline:
                raise ClaimLost(f"message {row.message_id}: our sending claim ran out (was this process paused?)")
            start = time.monotonic()
            try:
                with self.store.transaction(fenced=False) as tx:
                    renewed = self.store.renew_claim(tx, row.id, self.owner, self.ttl, timedelta(seconds=margin))
            except StoreError as e:
                raise ClaimLost(f"message {row.message_id}: cannot confirm our sending claim: {e}") from None
            if not renewed:
                raise ClaimLost(f"message {row.message_id}: another litwatch process took over its sending claim")
            held.deadline = start + self.ttl.total_seconds()

        return check

    def _send_one(
        self,
        transport: Transport,
        row: OutboxMessage,
        res: DigestResult,
        split: Splitter | None,
        held: _Held,
    ) -> tuple[list[OutboxMessage], DeliveryError | None]:
        """Send one claimed message and record the outcome. Returns the parts it was split
        into (queued already) when the server found it too large, and the failure.

        The outcome is recorded under the message's own claim (owner-checked), never
        fenced by the digest's lease: once the server has the message, a digest lease
        that ran out meanwhile (a pause) must not roll back the record that it was sent."""
        try:
            transport.send(bytes(row.mime), row.recipient, row.message_id, self._guard(row, held))
        except ClaimLost as e:
            res.busy = True
            log.warning("outbox message_id=%s not handed to the server: %s", row.message_id, e)
            try:  # still ours (the database was out of reach): back to the queue, tried again
                with self.store.transaction(fenced=False) as tx:
                    self.store.release_claim(tx, row.id, self.owner)
            except StoreError:
                pass  # it runs out on its own
            return [], e
        except MessageTooLarge as e:
            parts = self._split(row, split)
            if parts:
                res.split = len(parts)
                log.info("outbox message_id=%s too large (%s): split into %d", row.message_id, e.reply, len(parts))
                return parts, None
            res.error, res.permanent = str(e), True
            self._refused(row, e)
            return [], e
        except DeliveryError as e:
            res.error, res.permanent = str(e), e.permanent
            if e.permanent:
                self._refused(row, e)
            else:
                self._failed(row, str(e))
            return [], e
        with self.store.transaction(fenced=False) as tx:
            sent_at = self.store.db_now(tx)
            if self.store.mark_sent(tx, row.id, self.owner, sent_at):
                self.store.set_digest_state(tx, row.digest, last_sent=sent_at)
                res.sent = True
            else:
                log.warning(
                    "outbox message_id=%s: sent, but our claim had run out and another process took it over",
                    row.message_id,
                )
        return [], None

    def _split(self, row: OutboxMessage, split: Splitter | None) -> list[OutboxMessage]:
        if split is None:
            return []
        with self.store.transaction(fenced=False) as tx:
            parts = split(tx, row)
            if not parts or len(parts) < 2:
                return []
            ids = self.store.split_message(tx, row.id, self.owner, parts, self.store.db_now(tx))
            return self.store.messages(tx, ids) if ids else []

    def _failed(self, row: OutboxMessage, error: str) -> None:
        """A temporary failure: tried again after a backoff on the database's clock, so a
        host whose clock is off delays no other instance's retry."""
        with self.store.transaction(fenced=False) as tx:
            when = retry_at(row.attempts + 1, self.store.db_now(tx))
            self.store.mark_failed(tx, row.id, self.owner, error, retry_at=when)

    def _refused(self, row: OutboxMessage, e: DeliveryError) -> None:
        with self.store.transaction(fenced=False) as tx:
            self.store.mark_refused(tx, row.id, self.owner, str(e), e.reply or str(e), self.store.db_now(tx))
        log.warning(
            "outbox message_id=%s to=%s refused for good: %s (kept; `litwatch digest --retry-failed` sends it again)",
            row.message_id,
            row.recipient,
            e.reply or e,
        )


def _readdressed(mime: bytes, recipient: str) -> bytes:
    """The stored message with its `To:` header naming `recipient` (the header block is
    rewritten; the body is left byte for byte)."""
    head, sep, body = mime.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out: list[bytes] = []
    skipping = False
    for line in lines:
        if skipping and line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the old To:
        skipping = line.lower().startswith(b"to:")
        out.append(b"To: " + recipient.encode("utf-8") if skipping else line)
    return b"\r\n".join(out) + sep + body


def corrections(gone: Sequence[str], added: Sequence[str]) -> dict[str, str]:
    """Which address listed since corrects which one no longer listed: pairs, most alike
    first (a typo fixed is much like the typo), each address in at most one pair."""
    from difflib import SequenceMatcher

    alike = [
        (SequenceMatcher(None, g.lower(), a.lower()).ratio(), i, j)
        for i, g in enumerate(gone)
        for j, a in enumerate(added)
    ]
    pairs = sorted(alike, key=lambda p: (-p[0], p[1], p[2]))
    out: dict[str, str] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if gone[i] not in out and j not in used:
            out[gone[i]] = added[j]
            used.add(j)
    return out


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat() + "Z" if value else None


__all__ = ["DigestResult", "Outbox", "Part", "Splitter", "retry_at", "sending_ttl"]
