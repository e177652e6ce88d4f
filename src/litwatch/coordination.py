"""Coordination between every litwatch process sharing one database: claims and leases
on the database's clock, the heartbeat that renews them, the fencing token a holder's
committing transaction checks, and the request budget (NCBI's rate) they all share.

One clock: every lease and due-time comparison here reads `now` from the database in
the same transaction (`Store.db_now`). The host clock (`clock`, injectable so that a
test can skew it) is only compared with times written by the host clock.

A claim (`Coordinator.claim`) locks the task's `leases` row (`FOR UPDATE SKIP LOCKED`
on PostgreSQL), and takes it when no other live holder has it and, with `due`, when
the task is due; it records the start as the task's `last_run` and bumps the row's
fencing token. While held (`Coordinator.hold`), the heartbeat renews the lease every
third of its time to live, and every transaction the holding thread commits first
checks that the lease is still its own with that token (`Store.fences`): a holder whose
heartbeat stalled and whose task was taken over is stopped before it commits.

The request budget (`RequestBudget`) is a sliding window of the last `rate` request
starts, kept in one row per external service: each request reserves its start in one
short transaction (a row lock on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so all
processes together send at most `rate` requests in any second (plus a margin)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Connection

from .errors import LitwatchError, StoreConflict, StoreError, first_line
from .store.ports import ClaimsPort
from .store.rows import Lease

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0
MIN_LEASE_SECONDS = 1.0
WAIT_STEP = 0.25  # seconds between two tries of a busy claim
# The in-process limiter's margin is 20 ms; a slot reserved here is used by another
# process, whose request reaches NCBI after a delay that varies with load (waking up,
# the connection): keep 100 ms between a request and the one `rate` places later.
BUDGET_MARGIN = 0.1
BUDGET_WAIT = 60.0  # seconds a request waits at most for the budget's row lock
LATE_GUARD = 0.005  # seconds kept between the budget's check and the request going out
JITTER = 0.02  # seconds a sleep may overshoot on a busy host, allowed for in every reservation

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The host's clock, naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def lease_ttl() -> timedelta:
    """How long a claim holds without renewal: a dead instance's task is free after this.
    The heartbeat renews every third of it. LITWATCH_LEASE_SECONDS, default 15."""
    seconds = float(os.environ.get("LITWATCH_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))
    return timedelta(seconds=max(MIN_LEASE_SECONDS, seconds))


def host_name() -> str:
    """The host this process names in its claims: LITWATCH_HOSTNAME, else the host name
    (set it where several hosts or containers share one name)."""
    return os.environ.get("LITWATCH_HOSTNAME") or socket.gethostname()


def new_owner() -> str:
    """`host:pid:boot.start.process.owner`: the host, the process id, and who exactly
    holds a claim: this boot of the host (its boot id), the process's start (clock
    ticks since boot, /proc/<pid>/stat), a random id drawn once per process start, and
    a random id per owner. A pid reused since (in a container litwatch is always PID 1)
    does not hide that the holder is gone (`dead_here`)."""
    return f"{host_name()}:{os.getpid()}:{_identity()}.{uuid.uuid4().hex[:4]}"


_IDENTITY: tuple[int, str] | None = None


def _identity() -> str:
    """`boot.start.process` for this process, drawn again after a fork."""
    global _IDENTITY
    pid = os.getpid()
    if _IDENTITY is None or _IDENTITY[0] != pid:
        _IDENTITY = (pid, f"{_boot_id()[:8] or '-'}.{_start_ticks(pid) or '-'}.{uuid.uuid4().hex[:8]}")
    return _IDENTITY[1]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip().replace("-", "")
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """When process `pid` started (clock ticks since boot), "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


class LeaseLost(LitwatchError):
    """This process no longer holds a claim it worked under: its time ran out (a paused
    process, a stalled heartbeat, a database out of reach), or another process took it
    over. The transaction that found out is rolled back; whoever claims it next does the
    work."""

    def __init__(self, task: str, *, taken: bool = True) -> None:
        self.task = task
        why = (
            "lost the claim to another litwatch process"
            if taken
            else ("our claim ran out (was this process paused, or the database out of reach?)")
        )
        super().__init__(f"{task}: {why}; stopped before committing")


@dataclass(frozen=True)
class Claim:
    """What a claim decided: `won`; the database's `now`; the task's `last_run` (on the
    database's clock) before this claim; `busy` when another process holds the task
    (`holder`); `token`, the fencing token of a won claim."""

    won: bool
    now: datetime
    last_run: datetime | None
    busy: bool = False
    holder: str = ""
    token: int = 0


@dataclass
class Holding:
    """A claim while it is held; `next_run` (database clock) is noted when released."""

    task: str
    claim: Claim
    next_run: datetime | None = None
    mine: bool = True  # False: held by an outer `hold` of this process (re-entry)


@dataclass(frozen=True)
class Exclusive:
    """What `Coordinator.exclusive` got: `won`, else who has it (`holder`)."""

    won: bool
    holder: str = ""


@dataclass
class _Held:
    token: int
    lost: bool = False
    depth: int = 1


@dataclass(frozen=True, eq=False)
class _Fence:
    """Run before a commit (`Store.fences`): the claims the thread works under, by task
    and token, are still this process's."""

    coordinator: Coordinator
    tokens: Mapping[str, int]

    def __call__(self, tx: Connection) -> None:
        self.coordinator.check_fences(tx, self.tokens)


@dataclass
class Coordinator:
    """Claims for one process (`owner`), with the heartbeat that renews them."""

    store: ClaimsPort
    clock: Clock = utcnow
    ttl: timedelta = field(default_factory=lease_ttl)
    owner: str = field(default_factory=new_owner)
    heartbeat: bool = True  # False: never renew (a test's stalled heartbeat)

    def __post_init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._local: set[str] = set()  # names a thread of this process works on (`local`)

    # ------------------------------------------------------------------ claims

    def claim(
        self, task: str, *, due: Callable[[datetime | None, datetime], bool] | None = None, start: bool | None = None
    ) -> Claim:
        """Claim `task` for `ttl`, in one transaction: only if no other live holder has
        it and, with `due`, only if `due(last_run, db_now)` says it is due. `start`
        (default: when `due` is given) records the database's `now` as `last_run`."""
        start = due is not None if start is None else start
        with self.store.transaction(fenced=False) as tx:
            row = self.store.lock_lease(tx, task)
            now = self.store.db_now(tx)
            if row is None:
                return Claim(False, now, None, busy=True)
            # a holder that ran on this host and is gone (SIGKILL, OOM) holds nothing: its
            # task is taken at once instead of after the lease runs out
            live = row.until > now and row.owner != "" and not dead_here(row.owner)
            if live and (row.owner != self.owner or task in self._held):
                return Claim(False, now, row.last_run, busy=True, holder=row.owner)
            if due is not None and not due(row.last_run, now):
                return Claim(False, now, row.last_run)
            token = row.token + 1
            self.store.take_lease(
                tx, task, owner=self.owner, until=now + self.ttl, token=token, last_run=now if start else None
            )
            return Claim(True, now, row.last_run, token=token)

    @contextlib.contextmanager
    def hold(
        self,
        task: str,
        *,
        due: Callable[[datetime | None, datetime], bool] | None = None,
        start: bool | None = None,
        wait: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[Holding]:
        """Claim `task` (trying again for up to `wait` seconds while another process
        holds it) and hold it for the block: renewed by the heartbeat, checked before
        every commit of this thread, released at the end. Yields the `Holding`; when
        `holding.claim.won` is false the block runs without it. Re-entrant: a task this
        process already holds is yielded as held (`mine` false: the outer block owns it)."""
        with self._lock:
            outer = self._held.get(task)
            if outer is not None:
                outer.depth += 1
        if outer is not None:
            try:
                yield Holding(task, Claim(True, self.clock(), None, token=outer.token), mine=False)
            finally:
                with self._lock:
                    outer.depth -= 1
            return
        deadline = time.monotonic() + wait
        claim = self.claim(task, due=due, start=start)
        while not claim.won and claim.busy and time.monotonic() < deadline and not should_stop():
            time.sleep(WAIT_STEP)
            claim = self.claim(task, due=due, start=start)
        holding = Holding(task, claim)
        if not claim.won:
            yield holding
            return
        with self._lock:
            self._held[task] = _Held(claim.token)
        self._ensure_heartbeat()
        # one fence for every claim this thread holds of this coordinator: one query
        # before a commit, not one per claim (a cycle holds each of its queries)
        fences = self.store.fences
        others = tuple(f for f in fences.get() if not (isinstance(f, _Fence) and f.coordinator is self))
        outer_fence = next((f for f in fences.get() if isinstance(f, _Fence) and f.coordinator is self), None)
        tokens = {**(outer_fence.tokens if outer_fence is not None else {}), task: claim.token}
        reset = fences.set((*others, _Fence(self, tokens)))
        try:
            yield holding
        finally:
            fences.reset(reset)
            with self._lock:
                self._held.pop(task, None)
            try:
                self._release(task, claim.token, holding.next_run)
            except Exception as e:  # noqa: BLE001 - it expires on its own within `ttl`
                log.warning("could not release %s (it expires within %ss): %s", task, self.ttl.seconds, e)

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[bool]:
        """Yields whether this thread is the only one of this process working on `name`
        (a claim is re-entrant for the whole process: two threads of one daemon, say
        two queries' jobs fetching one feed, are kept apart here)."""
        with self._lock:
            mine = name not in self._local
            if mine:
                self._local.add(name)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._local.discard(name)

    @contextlib.contextmanager
    def exclusive(
        self, name: str, *, wait: float = 0.0, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[Exclusive]:
        """Hold `name` in this process (one thread) and by lease across processes, no
        schedule checked, waiting up to `wait` seconds for it; yields what it got."""
        deadline = time.monotonic() + wait
        while True:
            holder = self.owner
            with self.local(name) as mine:
                if mine:
                    with self.hold(name) as held:
                        if held.claim.won:
                            yield Exclusive(True)
                            return
                        holder = held.claim.holder
            if time.monotonic() >= deadline or should_stop():
                yield Exclusive(False, holder)
                return
            time.sleep(WAIT_STEP)

    def check_fences(self, tx: Connection, tokens: Mapping[str, int]) -> None:
        """Raise `LeaseLost` (each lost claim marked) unless this process still holds
        every task of `tokens` with its token."""
        held = self.store.leases_held(tx, self.owner, tokens)
        lost = [t for t in tokens if t not in held]
        if lost:
            with self._lock:
                for task in lost:
                    if task in self._held:
                        self._held[task].lost = True
            row = self.store.leases(tx).get(lost[0])
            raise LeaseLost(lost[0], taken=row is not None and row.owner != self.owner)

    def check(self, task: str) -> None:
        """Raise `LeaseLost` unless this process still holds `task` (before an action
        that no transaction covers, such as handing a message to the mail server)."""
        with self._lock:
            held = self._held.get(task)
        if held is None or held.lost:
            raise LeaseLost(task)
        with self.store.transaction(fenced=False) as tx:
            self.check_fences(tx, {task: held.token})

    def _release(self, task: str, token: int, next_run: datetime | None) -> None:
        with self.store.transaction(fenced=False) as tx:
            self.store.release_lease(tx, task, self.owner, token, next_run=next_run)

    @property
    def held(self) -> list[str]:
        with self._lock:
            return sorted(t for t, h in self._held.items() if not h.lost)

    # ------------------------------------------------------------------ heartbeat

    def renew(self) -> list[str]:
        """Extend this process's live leases; returns the tasks it lost (expired, or
        taken over). A lost lease is never renewed again: its holder stops."""
        with self._lock:
            held = {t: h.token for t, h in self._held.items() if not h.lost}
        if not held:
            return []
        with self.store.transaction(fenced=False) as tx:
            kept = self.store.renew_leases(tx, self.owner, held, self.store.db_now(tx) + self.ttl)
        lost = [t for t in held if t not in kept]
        with self._lock:
            for t in lost:
                if t in self._held and self._held[t].token == held[t]:
                    self._held[t].lost = True
        for t in lost:
            log.warning("lease lost task=%s: it ran out or another instance took it over; this one stops it", t)
        return lost

    def _ensure_heartbeat(self) -> None:
        if not self.heartbeat or (self._thread is not None and self._thread.is_alive()) or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._beat, name="litwatch-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            try:
                self.renew()
            except Exception as e:  # noqa: BLE001 - a lost connection: try again next beat
                log.warning("lease renewal failed: %s", first_line(e))

    def start(self) -> None:
        """Start the heartbeat now (the daemon: `health` reports it)."""
        self._ensure_heartbeat()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """Stop the heartbeat and give up every lease still held (another process may
        take over at once)."""
        self._stop.set()
        with self._lock:
            held = {t: h.token for t, h in self._held.items()}
            self._held.clear()
        for task, token in held.items():
            with contextlib.suppress(Exception):
                self._release(task, token, None)

    # ------------------------------------------------------------------ the schedule's records

    def db_now(self) -> datetime:
        with self.store.transaction(fenced=False) as tx:
            return self.store.db_now(tx)

    def plan(self, task: str, when: datetime) -> None:
        """Note when the daemon will next run `task` (database clock), for `status`."""
        with self.store.transaction(fenced=False) as tx:
            self.store.plan(tx, task, when)

    def free_dead(self) -> int:
        """Expire the leases of processes on this host that are no longer running, so
        `status` does not show them held (`claim` already takes them over at once).
        Returns how many were freed."""
        freed = 0
        with self.store.transaction(fenced=False) as tx:
            for row in self.store.leases(tx).values():
                if row.until > _EPOCH and dead_here(row.owner):
                    self.store.release_lease(tx, row.task, row.owner, row.token)
                    freed += 1
        return freed

    def leases(self) -> dict[str, Lease]:
        with self.store.transaction(fenced=False) as tx:
            return self.store.leases(tx)


class RequestBudget:
    """At most `per_second` request starts in any second, across every process on the
    database: `wait()` reserves the next free start in the database and sleeps until it.
    Has the in-process limiter's interface (`sources.http.Limiter`).

    The slot is on the database's clock, and the process may reach it late: the clock is
    read somewhere within one round trip, and the commit takes more round trips before
    the process can start. Each reservation therefore records the *latest* moment its
    request may start (the slot, plus the clock read's round trip, plus the commit time
    this process has measured), and the next slots are counted from those, while the
    request starts no earlier than the slot itself. Should a commit take longer than the
    recorded allowance, that reservation is given up (it only wastes a slot) and another
    taken: whatever an instance's latency to the database, no second holds more than
    `per_second` starts."""

    def __init__(
        self,
        store: ClaimsPort,
        name: str,
        per_second: int,
        *,
        margin: float = BUDGET_MARGIN,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.name = name
        self.per_second = per_second
        self.margin = margin
        self.sleep = sleep
        self._commits: list[float] = []  # the latest commit times measured (seconds)

    def reserve(self) -> float:
        """Reserve the next start; returns the seconds to wait before it."""
        start_at, _ = self._reserve()
        return max(0.0, start_at - time.monotonic())

    def wait(self) -> None:
        """Wait for a reserved start. A process that reaches it later than its
        reservation allows (its commit was slow, or it was not scheduled in time: a
        loaded host, a pause) takes another instead of starting late."""
        while True:
            start_at, latest = self._reserve()
            delay = start_at - time.monotonic()
            if delay > 0:
                self.sleep(delay)
            if time.monotonic() <= latest:
                return
            log.debug("request budget %s: reached its start too late; reserving again", self.name)

    def _reserve(self) -> tuple[float, float]:
        """(the earliest, the latest) moment, on this process's monotonic clock, at which
        the reserved request may start; retried while the row's lock is not granted."""
        give_up_at = time.monotonic() + BUDGET_WAIT
        while True:
            try:
                return self._reserve_once()
            except StoreConflict as e:
                # the row's lock was not granted in time (PostgreSQL's lock_timeout): its
                # holder may be stopped; the server ends its idle transaction soon
                if time.monotonic() >= give_up_at:
                    raise StoreError(f"request budget {self.name}: not granted within {BUDGET_WAIT:g}s") from e
                log.warning("request budget %s: waiting for a stalled holder (%s)", self.name, first_line(e))

    def _reserve_once(self) -> tuple[float, float]:
        with self.store.transaction(immediate=True, fenced=False) as tx:
            _, starts = self.store.budget_starts(tx, self.name)  # the row, locked
            before = time.monotonic()  # the clock is read within this round trip
            now = self.store.clock_epoch(tx)
            read = time.monotonic()
            allowance = (read - before) + self._commit_allowance(read - before)
            starts = sorted(starts)[-self.per_second :] if self.per_second else []
            slot = now
            if len(starts) >= self.per_second:
                slot = max(now, starts[0] + 1.0 + self.margin)
                starts = starts[1:]
            self.store.set_budget_starts(tx, self.name, [*starts, round(slot + allowance, 6)])
        self._commits = [*self._commits[-4:], time.monotonic() - read]
        # the database's clock is at `now` somewhere between `before` and `read`: it
        # reaches the slot no earlier than `read + (slot - now)`, and the recorded start
        # (slot + allowance) no earlier than `before + (slot + allowance - now)`
        return read + (slot - now), before + (slot + allowance - now) - LATE_GUARD

    def _commit_allowance(self, read_trip: float) -> float:
        """How long this process's commit takes, with room: half again the longest of the
        last few, or, before any, three clock reads' round trips."""
        return 1.5 * max(self._commits) + JITTER if self._commits else 3 * read_trip + JITTER


class DailyRequests:
    """At most `per_day` requests per UTC day across every process on the database
    (openFDA: 1,000 a day without an API key). The day's count lives in the request
    budget row `name`, as ``[day ordinal, requests made]`` in its `starts` column, read
    and written under the row's lock; a request takes its slot before it is sent. Has
    `sources.openfda.DayBudget`'s interface; the day is the one of the `now` given (UTC)."""

    def __init__(self, store: ClaimsPort, name: str, per_day: int) -> None:
        self.store = store
        self.name = name
        self.per_day = per_day

    def remaining(self, now: datetime) -> int:
        with self.store.transaction(immediate=True, fenced=False) as tx:
            return self.per_day - self._used(tx, now)

    def take(self, now: datetime) -> bool:
        with self.store.transaction(immediate=True, fenced=False) as tx:
            used = self._used(tx, now)
            if used >= self.per_day:
                return False
            self._set(tx, now, used + 1)
            return True

    def spend(self, n: int, now: datetime) -> None:
        if n == 0:
            return
        with self.store.transaction(immediate=True, fenced=False) as tx:
            self._set(tx, now, max(0, self._used(tx, now) + n))

    def _set(self, tx: Connection, now: datetime, used: int) -> None:
        self.store.set_budget_starts(tx, self.name, [float(now.date().toordinal()), float(used)])

    def _used(self, tx: Connection, now: datetime) -> int:
        _, kept = self.store.budget_starts(tx, self.name)
        if len(kept) == 2 and int(kept[0]) == now.date().toordinal():
            return int(kept[1])
        return 0  # another day (or never): nothing used yet


_EPOCH = datetime(1970, 1, 1)


def busy(holder: str) -> str:
    """Why a claim was not won, for a person: who holds it."""
    return f"another litwatch process ({holder or 'unknown'}) is working on it"


def dead_here(owner: str | None) -> bool:
    """The owner (`host:pid:boot.start.process.owner`, `new_owner`) is a process of this
    host that is no longer running: its pid is gone, or is now another process's (another
    start time, or this very process under another identity: a restart as PID 1), or the
    host has rebooted since. Another host's process is judged by its lease's time only;
    an owner of an older litwatch (`host:pid:random`) by its pid alone, erring on the
    safe side (alive) when the pid is in use."""
    parts = (owner or "").rsplit(":", 2)
    if len(parts) != 3 or parts[0] != host_name() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    ident = parts[2].split(".")
    if len(ident) == 4:  # boot.start.process.owner
        boot, start, process, _ = ident
        mine = _identity().split(".")
        if boot not in ("-", mine[0]):
            return True  # the host has rebooted since: every process of before is gone
        if pid == os.getpid():
            return process != mine[2]  # an earlier process that had this pid
        now_start = _start_ticks(pid)
        if start != "-" and now_start and now_start != start:
            return True  # the pid belongs to a process started since
    elif pid == os.getpid():
        return False  # this process: its own claims are live
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


__all__ = [
    "Claim",
    "Coordinator",
    "DailyRequests",
    "Holding",
    "LeaseLost",
    "RequestBudget",
    "lease_ttl",
    "Exclusive",
    "busy",
    "utcnow",
]
