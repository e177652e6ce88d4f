"""The daemon behind `litwatch run`: APScheduler 3 jobs built from the config (the YAML is
the truth, not a job store), the claim on the database that lets several instances
share one schedule, catch-up at start, SIGTERM/SIGINT/SIGHUP, and the health server.

Jobs: one per query (`poll:<name>`: its PubMed search and its feeds), one for the
shared notice search (`poll:*notices`, as often as the most frequent PubMed query), one
per digest (`digest:<name>`), and one retrying queued mail with backoff (`outbox`).

Every run of a task is claimed first (`Store.claim`, a row of `leases` locked with
`FOR UPDATE SKIP LOCKED` on PostgreSQL): the claim checks, inside the lock, that the
task is due against when it last ran *by any instance*, records the start, and holds a
lease renewed by a heartbeat while the job runs. So three instances whose timers all
fire poll once, and a dead instance's work is taken over once its lease expires.
On SQLite, one instance only: a second one is refused by a file lock."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import DigestSettings, QuerySettings, Settings, find_config, load
from .errors import ConfigError, LitwatchError, StoreError
from .health import HealthServer, Metrics
from .service import NOTICES, SHARED, DigestResult, PollResult, Service, utcnow
from .tasks import NOTICES_TASK, Plan, digest_task, first_run, latest, notices_plan, plan_of, poll_task

log = logging.getLogger(__name__)

OUTBOX_EVERY = timedelta(seconds=60)  # queued mail is retried this often (each message has its own backoff)
STOP_GRACE = 8.0  # seconds a running job may finish after SIGTERM; exit 0 within 10 s
FEED_WAIT = 10.0  # seconds a query waits for another instance fetching the same feed


def lease_ttl() -> timedelta:
    """How long a claim holds without renewal: a dead instance's task is free after this.
    The heartbeat renews every third of it. LITWATCH_LEASE_SECONDS, default 60."""
    return timedelta(seconds=max(3.0, float(os.environ.get("LITWATCH_LEASE_SECONDS", "60"))))


def run_forever(config: str | None) -> int:
    """`litwatch run`: schedule until SIGTERM/SIGINT, then stop cleanly; returns 0."""
    path = find_config(config)
    return Daemon(path, load(path)).run()


@dataclass(frozen=True)
class Task:
    name: str  # the lease key (tasks.py)
    kind: str  # "poll" | "notices" | "digest"
    plan: Plan
    query: QuerySettings | None = None
    digest: DigestSettings | None = None


def build_tasks(settings: Settings, now: datetime) -> dict[str, Task]:
    tasks = [Task(poll_task(q.name), "poll", plan_of(q), query=q) for q in settings.queries]
    notices = notices_plan(settings, now)
    if notices is not None:
        tasks.append(Task(NOTICES_TASK, "notices", notices))
    tasks += [Task(digest_task(d.name), "digest", plan_of(d), digest=d) for d in settings.digests]
    return {t.name: t for t in tasks}


def single_instance_lock(database: str) -> IO[str] | None:
    """SQLite is for one instance: hold `<db file>.lock` (flock) while running."""
    if not database.startswith("sqlite"):
        return None
    import fcntl

    db = sa.engine.make_url(database).database
    if not db or db == ":memory:":
        return None
    lock_path = Path(db).resolve().with_name(Path(db).name + ".lock")
    f = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StoreError(
            f"another `litwatch run` is already using {db} (it holds {lock_path}); SQLite is for one "
            "instance: stop the other one, or use PostgreSQL to run several"
        ) from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class Daemon:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.metrics = Metrics()
        self.ttl = lease_ttl()
        self.tasks: dict[str, Task] = {}
        self.stopping = False
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._local: set[str] = set()  # tasks running in this process
        self._leased: set[str] = set()  # tasks this process holds a lease on (renewed)
        self._running = 0
        self._catching_up: set[str] = set()  # polls overdue at start, not run yet
        self.service: Service
        self.scheduler: BackgroundScheduler
        self._heartbeat_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def run(self) -> int:
        lock = single_instance_lock(self.settings.database)
        self.service = Service(self.settings)
        if lock is not None and (freed := self.service.store.free_leases()):
            # the file lock says no other instance is alive: its leases died with it
            log.info("freed %d task lease(s) left by a stopped instance", freed)
        self._install_signals()
        self.scheduler = BackgroundScheduler(
            timezone=ZoneInfo(self.settings.timezone),
            executors={"default": ThreadPoolExecutor(8)},
            # A late run is always wanted once: the claim on the database decides whether
            # it is still due, so no run is dropped for lateness (misfire_grace_time=None).
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.scheduler.start()
        self._schedule()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="litwatch-heartbeat", daemon=True)
        self._heartbeat_thread.start()
        health = self._start_health()
        log.info(
            "run started instance=%s database=%s jobs=%d health_port=%s",
            self.owner,
            self.service.store.safe_url,
            len(self.scheduler.get_jobs()),
            health.port if health else "-",
        )
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                self.reload()
        return self._shutdown(health, lock)

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self._stop.set()
            self._wake.set()

        def hup(signum: int, _frame: FrameType | None) -> None:
            self._reload.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _shutdown(self, health: HealthServer | None, lock: IO[str] | None) -> int:
        self.stopping = True
        log.info("stopping instance=%s running_jobs=%d", self.owner, self._running)
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_GRACE
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        abandoned = self._running
        for task in list(self._leased):  # let another instance take over at once
            with contextlib.suppress(Exception):
                self.service.store.release_lease(self.owner, task)
        if health is not None:
            health.stop()
        if abandoned:
            # A poll or send stuck on the network: its transaction rolls back when the
            # process ends (ARCHITECTURE.md rules 1-2), so abandoning it is safe.
            log.warning("stopped instance=%s abandoned_jobs=%d (their transactions roll back)", self.owner, abandoned)
            logging.shutdown()
            os._exit(0)
        self.service.close()
        if lock is not None:
            lock.close()
        log.info("stopped instance=%s", self.owner)
        return 0

    def reload(self) -> None:
        """SIGHUP: rebuild the jobs from the config file; a bad one is reported and the
        running config kept."""
        try:
            settings = load(self.path)
            if settings.database != self.settings.database:
                raise LitwatchError("`database` changed: that takes a restart")
            service = Service(settings, store=self.service.store)
        except ConfigError as e:
            log.error("config reload failed, keeping the running config: %s", " | ".join(e.problems))
            return
        except LitwatchError as e:
            log.error("config reload failed, keeping the running config: %s", e)
            return
        if settings.health_port != self.settings.health_port:
            log.warning("config reload: a new health_port takes effect at the next start")
        self.settings, self.service = settings, service
        self.scheduler.remove_all_jobs()
        self._schedule()
        log.info(
            "config reloaded file=%s queries=%d digests=%d jobs=%d",
            self.path,
            len(settings.queries),
            len(settings.digests),
            len(self.scheduler.get_jobs()),
        )

    # ------------------------------------------------------------------ jobs

    def _schedule(self) -> None:
        svc, tz = self.service, self.settings.timezone
        now = utcnow()
        self.tasks = build_tasks(self.settings, now)
        anchors = self._anchors(svc, self.tasks.values())
        self._catching_up = set()
        zone = ZoneInfo(tz)
        for task in self.tasks.values():
            anchor = anchors.get(task.name)
            first = first_run(task.plan, anchor, tz, now, wait_first=task.kind == "digest")
            if anchor is not None and first <= now:
                log.info("catch-up task=%s last_run=%s: overdue, running it now", task.name, _iso(anchor))
            if first <= now and task.kind != "digest":
                self._catching_up.add(task.name)
            trigger: Any = (
                IntervalTrigger(seconds=task.plan.every.total_seconds(), start_date=_aware(first), timezone=zone)
                if task.plan.every is not None
                else CronTrigger.from_crontab(task.plan.cron, timezone=zone)
            )
            self.scheduler.add_job(
                self._run_task, trigger, args=[task.name], id=task.name, name=task.name, next_run_time=_aware(first)
            )
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                svc.store.plan(task.name, first)
        self.scheduler.add_job(
            self._retry_outbox,
            IntervalTrigger(seconds=OUTBOX_EVERY.total_seconds(), timezone=zone),
            id="outbox",
            name="outbox",
            next_run_time=datetime.now(UTC),  # mail left queued by a crash goes out at start
        )

    def _anchors(self, svc: Service, tasks: Any) -> dict[str, datetime | None]:
        """When each task last ran, from the sources' and digests' own state and the
        leases: a query's oldest last success over its sources, a digest's last run."""
        with svc.store.transaction() as tx:
            states = {(r.query, r.source): r.last_ok for r in svc.store.all_poll_states(tx)}
            leases = svc.store.leases(tx)
            digests = {t.digest.name: svc.store.digest_state(tx, t.digest.name) for t in tasks if t.digest}
        out: dict[str, datetime | None] = {}
        for t in tasks:
            lease = leases.get(t.name)
            out[t.name] = latest(_state_anchor(t, states, digests), lease.last_run if lease is not None else None)
        return out

    def _state_anchor(self, svc: Service, task: Task) -> datetime | None:
        with svc.store.transaction() as tx:
            states = {(r.query, r.source): r.last_ok for r in svc.store.all_poll_states(tx)}
            digests = {task.digest.name: svc.store.digest_state(tx, task.digest.name)} if task.digest else {}
        return _state_anchor(task, states, digests)

    def _run_task(self, name: str) -> None:
        task = self.tasks.get(name)
        if task is None or self.stopping:
            return
        svc, tz = self.service, self.settings.timezone
        if task.digest is not None and self._catching_up & {poll_task(q) for q in task.digest.queries}:
            # overdue at start: the digest goes out after its queries' catch-up polls, so
            # it has what appeared while the service was down (without holding a worker)
            self._fire_at(name, datetime.now(UTC) + timedelta(seconds=1))
            return
        with self._busy(), self._local_hold(name) as mine:
            if not mine:
                self._retry_soon(task)  # the outbox retry is sending this digest's mail
                return
            try:
                anchor = self._state_anchor(svc, task)
                claim = svc.store.claim(
                    self.owner,
                    name,
                    ttl=self.ttl,
                    due=lambda last, now: task.plan.is_due(latest(anchor, last), tz, now),
                )
                if not claim.won:
                    if claim.busy:
                        self._retry_soon(task)
                    else:
                        self._wake_when_due(task, latest(anchor, claim.last_run), claim.now)
                    return
                self._leased.add(name)
                try:
                    self._do(task, svc)
                finally:
                    self._leased.discard(name)
                    svc.store.release_lease(self.owner, name, next_run=task.plan.after(claim.now, tz))
            except sa.exc.SQLAlchemyError as e:
                self.metrics.add("job_errors")
                log.error("task=%s failed: database error: %s", name, _first_line(e))
            except Exception:
                self.metrics.add("job_errors")
                log.exception("task=%s failed", name)
            finally:
                self._catching_up.discard(name)

    def _retry_soon(self, task: Task) -> None:
        """Held elsewhere right now (running there, or its holder died and the lease has
        not expired yet): look again soon rather than a whole period later; the claim
        then says whether it still has to run."""
        delay = min(task.plan.period(self.settings.timezone, utcnow()) / 4, timedelta(seconds=30))
        self._fire_at(task.name, datetime.now(UTC) + max(delay, timedelta(seconds=1)))

    def _fire_at(self, name: str, when: datetime) -> None:
        job = self.scheduler.get_job(name)
        if job is not None and job.next_run_time is not None and when < job.next_run_time:
            with contextlib.suppress(LookupError):
                self.scheduler.modify_job(name, next_run_time=when)

    def _wake_when_due(self, task: Task, anchor: datetime | None, db_now: datetime) -> None:
        """Not due yet: another instance ran it since this timer was set. Fire when it is
        due by the database's record, so instances converge on one phase and a claim
        that came a moment too early does not skip a whole cycle."""
        if task.plan.every is None or anchor is None:
            return  # cron timers fire at the same wall-clock times everywhere
        due = task.plan.after(anchor, self.settings.timezone) + (utcnow() - db_now)  # in this host's clock
        self._fire_at(task.name, max(_aware(due), datetime.now(UTC) + timedelta(milliseconds=200)))

    def _do(self, task: Task, svc: Service) -> None:
        for attempt in (1, 2):
            try:
                if task.kind == "digest":
                    assert task.digest is not None
                    self._digest(svc, task.digest)
                elif task.kind == "notices":
                    self._polled(svc.poll_notices(), log_it=True)
                else:
                    assert task.query is not None
                    self._poll(svc, task.query)
                return
            except sa.exc.IntegrityError as e:
                # Another instance stored the same record a moment earlier (two queries
                # matching one paper): the transaction rolled back; polls are idempotent.
                if attempt == 2 or self.stopping:
                    raise
                log.info("task=%s: concurrent write (%s), retrying once", task.name, _first_line(e))

    def _poll(self, svc: Service, q: QuerySettings) -> None:
        if q.pubmed:
            self._polled(svc.poll_pubmed(q))
        if q.feeds:
            with contextlib.ExitStack() as stack:
                for f in q.feeds:
                    if not stack.enter_context(self._exclusive(svc, f"feed:{f}", FEED_WAIT)):
                        log.warning("poll query=%s: feed %s is being fetched elsewhere; next time", q.name, f)
                        return
                for r in svc.poll_feeds([q]):
                    self._polled(r)

    def _polled(self, r: PollResult, log_it: bool = False) -> None:
        self.metrics.add("polls")
        self.metrics.add("poll_errors", 0 if r.ok else 1)
        self.metrics.add("events", r.events)
        if log_it:
            log.info(
                "poll query=%s source=%s found=%d new=%d events=%d requests=%d error=%s",
                r.name,
                r.source,
                r.found,
                r.new,
                r.events,
                r.requests,
                r.error or "-",
            )

    def _digest(self, svc: Service, d: DigestSettings) -> None:
        results = svc.digest([d.name], respect_backoff=True)
        self._mailed(results)
        log.info(
            "digest name=%s messages=%d sent=%d failed=%d items=%d",
            d.name,
            len(results),
            sum(1 for r in results if r.sent),
            sum(1 for r in results if r.error),
            sum(r.items for r in results if r.sent),
        )

    def _mailed(self, results: list[DigestResult]) -> None:
        self.metrics.add("mails_sent", sum(1 for r in results if r.sent))
        self.metrics.add("mail_failures", sum(1 for r in results if r.error))

    def _retry_outbox(self) -> None:
        """Queued mail whose retry time has come, digest by digest under the digest's
        lease, so it never goes out twice from two instances or two jobs."""
        if self.stopping:
            return
        svc = self.service
        with self._busy():
            try:
                with svc.store.transaction() as tx:
                    names = svc.store.queued_digests(tx, svc.now())
                for name in names:
                    with self._exclusive(svc, digest_task(name), 0) as mine:
                        if mine and not self.stopping:
                            results: list[DigestResult] = []
                            svc.send_queued([name], respect_backoff=True, results=results)
                            self._mailed(results)
            except sa.exc.SQLAlchemyError as e:
                self.metrics.add("job_errors")
                log.error("task=outbox failed: database error: %s", _first_line(e))
            except Exception:
                self.metrics.add("job_errors")
                log.exception("task=outbox failed")

    # ------------------------------------------------------------------ exclusion

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    @contextlib.contextmanager
    def _local_hold(self, name: str) -> Iterator[bool]:
        """Only one job of this process works on `name` at a time (the digest job and
        the outbox retry share a digest; two queries may share a feed)."""
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
    def _exclusive(self, svc: Service, name: str, wait: float) -> Iterator[bool]:
        """Hold `name` in this process and by lease across instances (no schedule check),
        waiting up to `wait` seconds for it."""
        deadline = time.monotonic() + wait
        while True:
            with self._local_hold(name) as mine:
                if mine and svc.store.claim(self.owner, name, ttl=self.ttl).won:
                    self._leased.add(name)
                    try:
                        yield True
                    finally:
                        self._leased.discard(name)
                        svc.store.release_lease(self.owner, name)
                    return
            if time.monotonic() >= deadline or self.stopping:
                yield False
                return
            time.sleep(0.2)

    def _heartbeat(self) -> None:
        """Renew this instance's leases every third of their time to live."""
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            held = sorted(self._leased)
            try:
                lost = self.service.store.renew_leases(self.owner, held, self.ttl)
            except sa.exc.SQLAlchemyError as e:
                log.warning("lease renewal failed: %s", _first_line(e))
                continue
            for task in lost:
                if task in self._leased:
                    log.warning("lease lost task=%s: another instance may run it too", task)

    # ------------------------------------------------------------------ health

    def _start_health(self) -> HealthServer | None:
        port = self.settings.health_port
        if port is None:
            return None
        try:
            return HealthServer(port, self.health, self.render_metrics).start()
        except OSError as e:
            raise StoreError(f"cannot serve health_port {port}: {e.strerror}") from None

    def health(self) -> tuple[bool, str]:
        thread = getattr(self.scheduler, "_thread", None)
        if not self.scheduler.running or thread is None or not thread.is_alive():
            return False, "scheduler not running"
        if self._heartbeat_thread is None or not self._heartbeat_thread.is_alive():
            return False, "lease heartbeat not running"
        try:
            self.service.store.ping()
        except sa.exc.SQLAlchemyError as e:
            return False, f"database: {_first_line(e)}"
        return True, f"scheduler running, {len(self.scheduler.get_jobs())} jobs, database answers"

    def render_metrics(self) -> str:
        gauges: dict[str, tuple[str, float]] = {"leases_held": ("Tasks this instance holds now.", len(self._leased))}
        try:
            with self.service.store.transaction() as tx:
                box = self.service.store.outbox_summary(tx)
            gauges["outbox_queued"] = ("Digest messages queued for delivery.", box["queued"])
        except sa.exc.SQLAlchemyError:
            pass  # /healthz says why; a gauge that is absent is better than a wrong one
        return self.metrics.render(gauges)


def _state_anchor(
    task: Task, states: dict[tuple[str, str], datetime | None], digests: dict[str, Any]
) -> datetime | None:
    """A query's last success: the oldest over its sources (a source never polled makes
    it None: poll now). A digest's last run. The notice search's last success."""
    if task.kind == "digest":
        assert task.digest is not None
        row = digests.get(task.digest.name)
        return row.last_run if row is not None else None
    if task.kind == "notices":
        return states.get((SHARED, NOTICES))
    assert task.query is not None
    q = task.query
    keys = ([(q.name, "pubmed")] if q.pubmed else []) + [(SHARED, f"feed:{f}") for f in q.feeds]
    found = [states.get(k) for k in keys]
    if not found or any(v is None for v in found):
        return None
    return min(v for v in found if v is not None)


def _aware(naive_utc: datetime) -> datetime:
    return naive_utc.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str:
    return value.replace(microsecond=0).isoformat() + "Z" if value else "-"


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
