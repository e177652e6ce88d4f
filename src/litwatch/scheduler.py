"""The daemon behind `litwatch run`: APScheduler 3 jobs built from the config (the YAML is
the truth, not a job store), the claim on the database that lets several instances
share one schedule, catch-up at start, SIGTERM/SIGINT/SIGHUP, and the web server
(health_port, web.port).

Jobs: one per query (`poll:<name>`: its PubMed search and its feeds), one for the
shared notice search (`poll:*notices`, as often as the most frequent PubMed query), one
per digest (`digest:<name>`), and one retrying queued mail with backoff (`outbox`).

Every run of a task is claimed first (`coordination.Coordinator`, on the database's
clock): the claim checks, inside the lock, that the task is due against when it last
ran *by any instance*, records the start, and holds a lease renewed by a heartbeat
while the job runs, checked before each of the job's commits (the fencing token). So
three instances whose timers all fire poll once, and a dead instance's work is taken
over once its lease expires (15 s by default). Job bodies call the service only.
On SQLite, one instance only: a second one is refused by a file lock."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from .config import DigestSettings, QuerySettings, Settings, find_config, load
from .coordination import Clock, Coordinator, LeaseLost, utcnow
from .errors import ConfigError, LitwatchError, StoreConflict, StoreError
from .outbox import DigestResult
from .service import PollResult, Service
from .tasks import (
    CROSSREF_TASK,
    NOTICES_TASK,
    Plan,
    PlanTrigger,
    SourceTimes,
    crossref_plan,
    digest_task,
    first_run,
    last_success,
    next_retry,
    notices_plan,
    plan_of,
    poll_task,
    retry_base,
    task_sources,
)
from .web.metrics import Metrics
from .web.server import WebServer

log = logging.getLogger(__name__)

OUTBOX_EVERY = timedelta(seconds=60)  # queued mail is retried this often (each message has its own backoff)
STOP_GRACE = 8.0  # seconds a running job may finish after SIGTERM; exit 0 within 10 s
FEED_WAIT = 10.0  # seconds a query waits for another instance fetching the same feed
# PubMed queries due within this long of each other share one cycle: one fetch of the
# union of what they found (polls/pubmed.py) instead of one per query
SHARE_CYCLE = timedelta(seconds=5)


def run_forever(config: str | None) -> int:
    """`litwatch run`: schedule until SIGTERM/SIGINT, then stop cleanly; returns 0."""
    path = find_config(config)
    return Daemon(path, load(path)).run()


@dataclass(frozen=True)
class Task:
    name: str  # the lease key (tasks.py)
    kind: str  # "poll" | "notices" | "crossref" | "digest"
    plan: Plan
    query: QuerySettings | None = None
    digest: DigestSettings | None = None


def build_tasks(settings: Settings, now: datetime) -> dict[str, Task]:
    tasks = [Task(poll_task(q.name), "poll", plan_of(q), query=q) for q in settings.queries]
    notices = notices_plan(settings, now)
    if notices is not None:
        tasks.append(Task(NOTICES_TASK, "notices", notices))
    crossref = crossref_plan(settings, now)
    if crossref is not None:
        tasks.append(Task(CROSSREF_TASK, "crossref", crossref))
    tasks += [Task(digest_task(d.name), "digest", plan_of(d), digest=d) for d in settings.digests]
    return {t.name: t for t in tasks}


def single_instance_lock(database: str) -> IO[bytes] | None:
    """SQLite is for one instance: hold a lock (flock) on the database file itself while
    running, so that every name of it (a hard link, a symlink, a bind mount) finds it
    held. SQLite's own locks on the file are POSIX locks, separate from this one; the
    file stays open until the daemon has closed its connections."""
    if not database.startswith("sqlite"):
        return None
    import fcntl

    db = _sqlite_file(database)
    if db is None:
        return None
    path = Path(db).resolve()
    try:
        f = open(path, "ab")  # noqa: SIM115 - held for the process's life; an empty file is a new database
    except OSError as e:
        raise StoreError(f"cannot open the database {db}: {e.strerror}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StoreError(
            f"another `litwatch run` is already using {db} (under this or another name); SQLite is for one "
            "instance: stop the other one, or use PostgreSQL to run several"
        ) from None
    return f


class Daemon:
    def __init__(self, path: Path, settings: Settings, clock: Clock = utcnow) -> None:
        self.path = path
        self.settings = settings
        self.clock = clock  # this host's clock (tests skew it); leases use the database's
        self.metrics = Metrics()
        self.tasks: dict[str, Task] = {}
        self.stopping = False
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._running = 0
        self._catching_up: set[str] = set()  # polls overdue at start, not run yet
        self.service: Service
        self.scheduler: BackgroundScheduler

    # ------------------------------------------------------------------ life cycle

    def run(self) -> int:
        lock = single_instance_lock(self.settings.database)
        self.service = Service(self.settings, now=self.clock)
        self.coordination.start()
        if lock is not None and (freed := self.coordination.free_dead()):
            # the file lock says no other `run` is alive: its leases died with it
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
        health = self._start_health()
        log.info(
            "run started instance=%s database=%s jobs=%d health_port=%s web_port=%s",
            self.owner,
            self.service.safe_url,
            len(self.scheduler.get_jobs()),
            next((str(s.port) for s, pages in health if not pages), "-"),
            next((str(s.port) for s, pages in health if pages), "-"),
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

    def _shutdown(self, health: list[tuple[WebServer, bool]], lock: IO[bytes] | None) -> int:
        self.stopping = True
        log.info("stopping instance=%s running_jobs=%d", self.owner, self._running)
        self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_GRACE
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        abandoned = self._running
        self.coordination.close()  # give up every lease: another instance takes over at once
        for server, _ in health:
            server.stop()
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
            service = self.service.reconfigured(settings)
        except ConfigError as e:
            log.error("config reload failed, keeping the running config: %s", " | ".join(e.problems))
            return
        except LitwatchError as e:
            log.error("config reload failed, keeping the running config: %s", e)
            return
        if (settings.health_port, settings.health_bind, settings.web) != (
            self.settings.health_port,
            self.settings.health_bind,
            self.settings.web,
        ):
            log.warning("config reload: a new health_port, health_bind or web section takes effect at the next start")
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

    @property
    def owner(self) -> str:
        return self.coordination.owner

    @property
    def coordination(self) -> Coordinator:
        return self.service.coordination

    def _schedule(self) -> None:
        svc, tz = self.service, self.settings.timezone
        now, db_now = self.clock(), self.coordination.db_now()
        self.tasks = build_tasks(self.settings, now)
        anchors = svc.task_anchors()
        leases = self.coordination.leases()
        self._catching_up = set()
        zone = ZoneInfo(tz)
        for task in self.tasks.values():
            lease = leases.get(task.name)
            last_run = lease.last_run if lease is not None else None
            # like with like: the database's last run with its clock, else the
            # sources' last success (written by a host clock) with this host's
            host_anchor = _state_anchor(task, *anchors)
            retry = self._retry(task, anchors[0])
            if last_run is not None:
                first = first_run(task.plan, last_run, tz, db_now, wait_first=task.kind == "digest")
                first_host, overdue = first + (now - db_now), first <= db_now
            else:
                first_host = first_run(task.plan, host_anchor, tz, now, wait_first=task.kind == "digest")
                first, overdue = first_host - (now - db_now), first_host <= now
            if retry is not None and retry < first_host:
                # a source failing when the last instance stopped: tried again on its back-off
                first_host, first = retry, retry - (now - db_now)
            if (last_run or host_anchor) is not None and overdue:
                log.info("catch-up task=%s last_run=%s: overdue, running it now", task.name, _iso(last_run))
            if overdue and task.kind != "digest":
                self._catching_up.add(task.name)
            trigger: Any = (
                IntervalTrigger(seconds=task.plan.every.total_seconds(), start_date=_aware(first_host), timezone=zone)
                if task.plan.every is not None
                else PlanTrigger(task.plan, tz)
            )
            self.scheduler.add_job(
                self._run_task,
                trigger,
                args=[task.name],
                id=task.name,
                name=task.name,
                next_run_time=_aware(max(first_host, now)),
            )
            with contextlib.suppress(StoreError):
                self.coordination.plan(task.name, first)
        self.scheduler.add_job(
            self._retry_outbox,
            IntervalTrigger(seconds=OUTBOX_EVERY.total_seconds(), timezone=zone),
            id="outbox",
            name="outbox",
            next_run_time=datetime.now(UTC),  # mail left queued by a crash goes out at start
        )

    def _due(self, task: Task, anchors: Anchors) -> Any:
        """The claim's due check: the task's last run by any instance (database clock)
        against the database's `now`; without one, the sources' last success (host
        clock) against this host's clock. Never one clock against the other. A task
        with a failing source is due again when its back-off has passed (host clock,
        as the failure was written): `tasks.retry_at` — unless the task has run since
        (another instance's retry: the failure it read may be stale by then)."""
        tz = self.settings.timezone
        host_anchor = _state_anchor(task, *anchors)
        retry = self._retry(task, anchors[0])

        def due(last_run: datetime | None, db_now: datetime) -> bool:
            if retry is not None and retry <= self.clock():
                # the retry time on the database's clock; a run started since (within
                # half the first back-off: timers wobble) was that retry
                retry_db = retry - (self.clock() - db_now)
                if last_run is None or last_run < retry_db - retry_base() / 2:
                    return True
            if last_run is not None:
                return task.plan.is_due(last_run, tz, db_now)
            return task.plan.is_due(host_anchor, tz, self.clock())

        return due

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
        with self._busy(), self.coordination.local(name) as mine:
            if not mine:
                self._retry_soon(task)  # the outbox retry is sending this digest's mail
                return
            polled = {name}  # this task and the queries that share its cycle
            try:
                with self.coordination.hold(name, due=self._due(task, svc.task_anchors())) as held:
                    claim = held.claim
                    if not claim.won:
                        if claim.busy:
                            self._retry_soon(task)
                        else:
                            self._wake_when_due(task, claim.last_run, claim.now)
                        return
                    held.next_run = task.plan.after(claim.now, tz)
                    with contextlib.ExitStack() as company:
                        companions = self._companions(task, svc, company)
                        polled |= {poll_task(q.name) for q in companions}
                        self._do(task, svc, companions)
                    self._retry_failing(task, companions, svc)
            except LeaseLost as e:
                self.metrics.add("job_errors")
                log.warning("task=%s stopped: %s", name, e)
            except StoreError as e:
                self.metrics.add("job_errors")
                log.error("task=%s failed: database error: %s", name, _first_line(e))
            except Exception:
                self.metrics.add("job_errors")
                log.exception("task=%s failed", name)
            finally:
                # a companion's catch-up is done too: its own job, held off meanwhile,
                # looks again only later, and a digest waiting on it must not wait for that
                self._catching_up -= polled

    def _retry_soon(self, task: Task) -> None:
        """Held elsewhere right now (running there, or its holder died and the lease has
        not expired yet): look again soon rather than a whole period later; the claim
        then says whether it still has to run."""
        delay = min(task.plan.period(self.settings.timezone, self.clock()) / 4, timedelta(seconds=30))
        self._fire_at(task.name, datetime.now(UTC) + max(delay, timedelta(seconds=1)))

    def _fire_at(self, name: str, when: datetime) -> None:
        job = self.scheduler.get_job(name)
        if job is not None and job.next_run_time is not None and when < job.next_run_time:
            with contextlib.suppress(LookupError):
                self.scheduler.modify_job(name, next_run_time=when)

    def _wake_when_due(self, task: Task, last_run: datetime | None, db_now: datetime) -> None:
        """Not due yet: another instance ran it since this timer was set. Fire when it is
        due by the database's record, so instances converge on one phase and a claim
        that came a moment too early does not skip a whole cycle."""
        if task.plan.every is None or last_run is None:
            return  # cron timers fire at the same wall-clock times everywhere
        # due by the database's clock, then as this host's timer sees it
        due = task.plan.after(last_run, self.settings.timezone) + (self.clock() - db_now)
        self._fire_at(task.name, max(_aware(due), datetime.now(UTC) + timedelta(milliseconds=200)))

    def _companions(self, task: Task, svc: Service, stack: contextlib.ExitStack) -> list[QuerySettings]:
        """Other PubMed queries whose jobs fire within `SHARE_CYCLE`: claimed here (in this
        process and by lease, due by the same check their own job makes) for the block of
        `stack`, so they poll in this cycle; their own job then finds them not due."""
        if task.query is None or not task.query.pubmed:
            return []
        horizon = datetime.now(UTC) + SHARE_CYCLE
        out = []
        tz = self.settings.timezone
        for job in self.scheduler.get_jobs():
            other = self.tasks.get(job.id)
            if other is None or other is task or other.query is None or not other.query.pubmed:
                continue
            if job.next_run_time is None or job.next_run_time > horizon:
                continue
            if not stack.enter_context(self.coordination.local(other.name)):
                continue  # its own job is running it
            held = stack.enter_context(self.coordination.hold(other.name, due=self._due(other, svc.task_anchors())))
            if held.claim.won and held.mine:
                held.next_run = other.plan.after(held.claim.now, tz)
                out.append(other.query)
        if out:
            log.info("poll query=%s: sharing the cycle with %s", task.query.name, ", ".join(q.name for q in out))
        return out

    def _do(self, task: Task, svc: Service, companions: list[QuerySettings] | None = None) -> None:
        for attempt in (1, 2):
            try:
                if task.kind == "digest":
                    assert task.digest is not None
                    self._digest(svc, task.digest)
                elif task.kind in ("notices", "crossref"):
                    for r in svc.poll_shared(task.kind):
                        self._polled(r, log_it=True)
                else:
                    assert task.query is not None
                    queries = [task.query, *(companions or [])]
                    for r in svc.poll_queries(queries, wait=FEED_WAIT, should_stop=lambda: self.stopping):
                        self._polled(r)
                return
            except StoreConflict as e:  # (LeaseLost is not retried)
                # Another instance stored the same record a moment earlier (two queries
                # matching one paper): the transaction rolled back; polls are idempotent.
                if attempt == 2 or self.stopping:
                    raise
                log.info("task=%s: concurrent write (%s), retrying once", task.name, _first_line(e))

    def _retry(self, task: Task, states: dict[tuple[str, str], SourceTimes]) -> datetime | None:
        """When `task` is due again for a failing source (host clock), or None."""
        if task.kind == "digest":
            return None
        period = task.plan.period(self.settings.timezone, self.clock())
        return next_retry(task_sources(task.kind, task.query), states, retry_base(), period)

    def _retry_failing(self, task: Task, companions: list[QuerySettings], svc: Service) -> None:
        """After a poll: each polled task with a failing source fires again when its
        back-off has passed, not a whole period later (issue 22)."""
        states = svc.task_anchors()[0]
        for t in [task, *(self.tasks.get(poll_task(q.name)) for q in companions)]:
            retry = self._retry(t, states) if t is not None else None
            if t is not None and retry is not None:
                log.info("task=%s: a source is failing; trying again at %s", t.name, _iso(retry))
                self._fire_at(t.name, max(_aware(retry), datetime.now(UTC) + timedelta(milliseconds=200)))

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
                for name in svc.queued_digests():
                    with self.coordination.exclusive(digest_task(name)) as mine:
                        if mine.won and not self.stopping:
                            results: list[DigestResult] = []
                            svc.send_queued([name], respect_backoff=True, results=results)
                            self._mailed(results)
            except LeaseLost as e:
                self.metrics.add("job_errors")
                log.warning("task=outbox stopped: %s", e)
            except StoreError as e:
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

    # ------------------------------------------------------------------ health

    def _start_health(self) -> list[tuple[WebServer, bool]]:
        """One server (uvicorn, web/server.py) per port: `health_port` serves /healthz
        and /metrics only; `web.port` the web view with them (issue 26)."""
        from .web.app import make_app

        wanted: list[tuple[str, str, int, bool]] = []
        if self.settings.health_port is not None:
            wanted.append(("health_port", self.settings.health_bind, self.settings.health_port, False))
        web = self.settings.web
        if web is not None and web.port is not None:
            wanted.append(("web.port", web.bind, web.port, True))
        started: list[tuple[WebServer, bool]] = []
        for what, bind, port, pages in wanted:
            app = make_app(self.service, self.settings, health=self.health, metrics=self.render_metrics, pages=pages)
            try:
                started.append((WebServer(app, bind=bind, port=port).start(), pages))
            except OSError as e:
                for server, _ in started:
                    server.stop()
                raise StoreError(f"cannot serve {what} {port} on {bind}: {e.strerror}") from None
        return started

    def health(self) -> tuple[bool, str]:
        thread = getattr(self.scheduler, "_thread", None)
        if not self.scheduler.running or thread is None or not thread.is_alive():
            return False, "scheduler not running"
        if not self.coordination.alive:
            return False, "lease heartbeat not running"
        try:
            self.service.ping()
        except StoreError as e:
            # the error names host and user: the log has it, the body only says what failed
            log.warning("health: database does not answer: %s", _first_line(e))
            return False, "database does not answer"
        return True, f"scheduler running, {len(self.scheduler.get_jobs())} jobs, database answers"

    def render_metrics(self) -> str:
        held = len(self.coordination.held)
        gauges: dict[str, tuple[str, float]] = {"leases_held": ("Tasks this instance holds now.", held)}
        try:
            gauges["outbox_queued"] = ("Digest messages queued for delivery.", self.service.outbox_queued())
        except StoreError:
            pass  # /healthz says why; a gauge that is absent is better than a wrong one
        return self.metrics.render(gauges)


Anchors = tuple[dict[tuple[str, str], SourceTimes], dict[str, datetime | None]]


def _state_anchor(
    task: Task, states: dict[tuple[str, str], SourceTimes], digests: dict[str, datetime | None]
) -> datetime | None:
    """A query's last success: the oldest over its sources (a source never polled makes
    it None: poll now). A digest's last run. The notice search's, Crossref's last
    success. All as written by a host's clock: compared with a host's clock only."""
    if task.kind == "digest":
        assert task.digest is not None
        return digests.get(task.digest.name)
    return last_success(task_sources(task.kind, task.query), states)


def _sqlite_file(database: str) -> str | None:
    """The file of a SQLite URL (`sqlite:///relative.db`, `sqlite:////abs.db`), None for
    another database or one in memory."""
    if not database.startswith("sqlite"):
        return None
    _, sep, rest = database.partition(":///")
    path = rest.split("?", 1)[0]
    return path if sep and path and path != ":memory:" else None


def _aware(naive_utc: datetime) -> datetime:
    return naive_utc.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str:
    return value.replace(microsecond=0).isoformat() + "Z" if value else "-"


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
