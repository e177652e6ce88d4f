"""The command line (click). Turns `LitwatchError` into one line on stderr and the
exit code SPEC.md gives; nothing else here decides anything."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__, logs
from .config import Settings, find_config, load
from .errors import ConfigError, LitwatchError, StoreError, UsageError, first_line

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .service import PollProgress

F = TypeVar("F", bound=Callable[..., Any])


def _fail(e: LitwatchError) -> None:
    if isinstance(e, ConfigError):
        for line in e.problems:
            click.echo(line, err=True)
    else:
        click.echo(f"litwatch: {e}", err=True)
    sys.exit(e.exit_code)


def handle_errors(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LitwatchError as e:
            _fail(e)
        except KeyboardInterrupt:
            click.echo("litwatch: interrupted", err=True)
            sys.exit(130)
        except Exception as e:
            # the store wraps database errors as StoreError; should a raw driver error
            # still escape, it is one line too. SQLAlchemy is looked up, not imported:
            # a command that never loaded it (`--help`, `init`) cannot raise its errors.
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is None or not isinstance(e, sa_exc.DBAPIError):
                raise
            _fail(StoreError(f"database error: {first_line(e)}"))

    return wrapper  # type: ignore[return-value]


class Ctx:
    def __init__(self, config: str | None, verbose: int) -> None:
        self.config_arg = config
        self.verbose = verbose
        self.missing_database: Path | None = None

    def settings(self) -> Settings:
        return load(find_config(self.config_arg))

    def read_only_service(self) -> Any:
        """A Service for a command that only reads (status, history): a SQLite file that
        does not exist yet is not created; the command reads an empty in-memory
        database instead (`missing_database` names the file)."""
        from .service import Service

        settings = self.settings()
        missing = missing_sqlite_file(settings.database)
        if missing is not None:
            self.missing_database = missing
            settings = settings.model_copy(update={"database": "sqlite://"})
        return Service(settings)

    def service(self, progress: PollProgress | None = None) -> Any:
        from .service import Service

        return Service(self.settings(), progress=progress)


class _Bars:
    """`litwatch poll`'s progress on a terminal (a `service.PollProgress`): one rich
    progress bar per query on stderr — the windows it searched, records fetched of
    those it will fetch, and what it stored."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.status: dict[str, str] = {}

    def _task(self, name: str, total: int | None, status: str) -> TaskID:
        self.status[name] = status
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, status=status)
        else:
            self.progress.update(self.tasks[name], total=total, status=status)
        return self.tasks[name]

    def searched(self, name: str, searched: str, total: int) -> None:
        self._task(name, total, f"searched {searched}")

    def fetched(self, name: str, n: int) -> None:
        self.progress.advance(self.tasks[name], n)

    def stored(self, name: str, summary: str) -> None:
        if name not in self.tasks:  # the search failed: nothing was fetched
            self._task(name, 0, summary)
            return
        self.progress.update(self.tasks[name], status=f"{self.status[name]}; {summary}")


@contextmanager
def _poll_progress() -> Iterator[PollProgress | None]:
    """Progress bars on stderr while a poll runs, if stderr is a terminal (else None:
    nothing is drawn and rich is not even imported). Log lines written meanwhile go
    above the bars, not through them."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
    )
    real = sys.stderr
    with progress:  # rich replaces sys.stderr with a proxy that prints above the bars
        handlers = [
            h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is real
        ]
        for h in handlers:
            h.setStream(sys.stderr)
        try:
            yield _Bars(progress)
        finally:
            for h in handlers:
                h.setStream(real)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="FILE", help="Config file (default: $LITWATCH_CONFIG, else ./litwatch.yaml).")
@click.option("--verbose", "-v", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(__version__, prog_name="litwatch")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: int) -> None:
    """litwatch: scheduled literature monitoring with errata and retraction alerts."""
    logs.setup({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    ctx.obj = Ctx(config, verbose)


@main.command()
@click.option(
    "--online",
    is_flag=True,
    help="Also try every query: PubMed's translation, warnings, counts and recent titles; each feed's matches; "
    "whether Crossref answers, and in which pool.",
)
@click.pass_obj
@handle_errors
def check(obj: Ctx, online: bool) -> None:
    """Validate the config. Exit 0 valid, 2 invalid (or PubMed warns), 1 a source did not answer."""
    settings = obj.settings()
    from .errors import ConfigError
    from .starter import placeholder_problems

    emails = {
        "pubmed": settings.pubmed.email or "",
        "crossref": (settings.crossref.email or "") if settings.crossref else "",
    }
    try:
        text = Path(settings.source).read_text(encoding="utf-8")
    except OSError:
        text = ""
    left = placeholder_problems(text, settings.source, emails)
    if left:
        raise ConfigError(left)
    click.echo(
        f"{settings.source}: ok: {plural(len(settings.queries), 'query', 'queries')}, "
        f"{plural(len(settings.feeds), 'feed')}, {plural(len(settings.digests), 'digest')}"
    )
    _warn_unsubscribed(settings)
    _schedules(settings)
    if online:
        _check_online(settings)


def _warn_unsubscribed(settings: Settings) -> None:
    """Recipients in the config who stopped their mail (issue 26): a warning, not an error."""
    from .service import Service

    if not settings.digests:
        return
    if settings.database.startswith("sqlite"):
        path = settings.database.split(":///", 1)[-1]
        if path in ("", ":memory:") or not Path(path).exists():
            return  # `check` creates no database
    try:
        service = Service(settings)
    except StoreError:
        return  # no database yet, or it does not answer: nothing to say about recipients
    try:
        stopped = service.unsubscribed()
    except StoreError:
        return
    finally:
        service.close()
    for d in settings.digests:
        listed = {a.lower() for a in d.to}
        for u in stopped:
            if u.digest == d.name and u.recipient.lower() in listed:
                click.echo(
                    f"warning: digests.{d.name}: {u.recipient} unsubscribed on {u.at:%Y-%m-%d} and gets no mail "
                    f"from it (litwatch resubscribe {u.recipient} {d.name} undoes it)",
                    err=True,
                )


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist yet (None: it exists, or the
    database is not a SQLite file)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not ours to judge here: the store reports it
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _schedules(settings: Settings) -> None:
    """Each schedule's next three times in the config's zone: what `cron:` means."""
    from datetime import UTC, datetime

    from .tasks import next_times, plan_of

    now = datetime.now(UTC).replace(tzinfo=None)
    items = [("query", q.name, q) for q in settings.queries] + [("digest", d.name, d) for d in settings.digests]
    for kind, name, item in items:
        plan = plan_of(item)
        if plan.cron is None:
            click.echo(f"schedule of {kind} {name}: every {item.every or '1d (default)'}, from each run")
            continue
        times = ", ".join(t.strftime("%a %Y-%m-%d %H:%M %Z") for t in next_times(plan, settings.timezone, now))
        click.echo(f'schedule of {kind} {name}: cron "{plan.cron}" in {settings.timezone}: next {times}')


def _check_online(settings: Settings) -> None:
    """What each query would find now; stores nothing (see preview.py). A connection
    that fails is said at once, without retries (`http.FAIL_FAST`, for this call only)."""
    from .sources.http import FAIL_FAST

    FAIL_FAST.set()
    try:
        _preview_online(settings)
    finally:
        FAIL_FAST.clear()


def _preview_online(settings: Settings) -> None:
    from datetime import UTC, datetime

    from .preview import preview

    queries, feeds = preview(settings, datetime.now(UTC).replace(tzinfo=None))
    warned = failed = False
    for q in queries:
        for line in q.lines():
            click.echo(line)
        for w in q.warnings:
            warned = True
            click.echo(f"{q.name}: warning: {w}", err=True)
        failed = failed or q.error is not None
    for f in feeds:
        for line in f.lines():
            click.echo(line)
        failed = failed or f.error is not None
    if settings.crossref is not None:
        from .preview import preview_crossref

        crossref = preview_crossref(settings.crossref, datetime.now(UTC).date())
        for line in crossref.lines():
            click.echo(line)
        failed = failed or crossref.error is not None
    if warned:
        sys.exit(2)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
@handle_errors
def init(obj: Ctx, path: Path | None) -> None:
    """Write a starter config to PATH (default: --config, $LITWATCH_CONFIG, ./litwatch.yaml); never overwrite."""
    from .starter import email_lines, write_starter

    target = path or find_config(obj.config_arg)
    line = write_starter(target)
    crossref = [n for n in email_lines() if n != line]
    also = f" and line {crossref[0]} (crossref.email)" if crossref else ""
    click.echo(
        f"wrote {target}: fill in your contact address at line {line} (pubmed.email){also}, "
        f"then try its queries with: .venv/bin/litwatch --config {target} check --online"
    )


@main.command()
@click.option("--query", "-q", "queries", multiple=True, metavar="NAME", help="Poll only this query (repeatable).")
@click.pass_obj
@handle_errors
def poll(obj: Ctx, queries: tuple[str, ...]) -> None:
    """One poll cycle now. Exit 1 if some source failed (the rest is kept)."""
    with _poll_progress() as progress:
        service = obj.service(progress)
        try:
            results = service.poll(queries)
        finally:
            service.close()
    for r in results:
        click.echo(r.line())
        for w in r.warnings:
            click.echo(f"  warning: {w}", err=True)
    if not all(r.ok for r in results):
        sys.exit(1)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Print the text part; send and mark nothing.")
@click.option("--html", "html", type=click.Path(dir_okay=False, path_type=Path), help="Also write the HTML part here.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="First queue again the messages a server refused for good (5xx), same Message-ID.",
)
@click.pass_obj
@handle_errors
def digest(obj: Ctx, names: tuple[str, ...], dry_run: bool, html: Path | None, retry_failed: bool) -> None:
    """Build and deliver digests with undelivered events. Exit 1 if a delivery failed."""
    service = obj.service()
    try:
        results = service.digest(names, dry_run=dry_run, html_path=html, retry_failed=retry_failed)
    finally:
        service.close()
    if dry_run:
        for r in results:
            if r.text:
                click.echo(r.text, nl=False)
            if r.unbuilt:
                click.echo(r.line(), err=True)
        if not results:
            click.echo("nothing to send", err=True)
        if any(r.unbuilt for r in results):
            sys.exit(1)
        return
    for r in results:
        click.echo(r.line())
    if not results:
        click.echo("nothing to send")
    if any(r.error for r in results):
        sys.exit(1)


@main.command()
@click.pass_obj
@handle_errors
def run(obj: Ctx) -> None:
    """Run the scheduler until SIGTERM/SIGINT."""
    if obj.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    from .scheduler import run_forever

    sys.exit(run_forever(obj.config_arg))


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), help="Listen here (default: web.port, else 8090).")
@click.pass_obj
@handle_errors
def web(obj: Ctx, port: int | None) -> None:
    """Serve the web view, /healthz and /metrics until SIGTERM/SIGINT."""
    if obj.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    from .web.standalone import serve_forever

    sys.exit(serve_forever(obj.settings(), port))


def _digest_names(settings: Settings, names: tuple[str, ...]) -> list[str]:
    known = [d.name for d in settings.digests]
    for n in names:
        if n not in known:
            raise UsageError(f"no digest named {n!r} in {settings.source} (digests: {', '.join(known) or 'none'})")
    return list(names) or known


@main.command()
@click.argument("address")
@click.argument("digests", nargs=-1)
@click.pass_obj
@handle_errors
def unsubscribe(obj: Ctx, address: str, digests: tuple[str, ...]) -> None:
    """Stop ADDRESS's mail from DIGESTS (default: every digest), as its one-click link does."""
    settings = obj.settings()
    service = obj.service()
    try:
        for name in _digest_names(settings, digests):
            done = service.unsubscribe(name, address, "cli")
            click.echo(f"{name}: {address} {'unsubscribed' if done else 'was already unsubscribed'}")
    finally:
        service.close()


@main.command()
@click.argument("address")
@click.argument("digests", nargs=-1)
@click.pass_obj
@handle_errors
def resubscribe(obj: Ctx, address: str, digests: tuple[str, ...]) -> None:
    """Resume ADDRESS's mail from DIGESTS (default: every digest) with the digest's next mail."""
    settings = obj.settings()
    service = obj.service()
    try:
        for name in _digest_names(settings, digests):
            done = service.resubscribe(name, address)
            click.echo(f"{name}: {address} {'resubscribed' if done else 'was not unsubscribed'}")
    finally:
        service.close()


@main.command()
@click.argument("ident")
@click.pass_obj
@handle_errors
def history(obj: Ctx, ident: str) -> None:
    """Every stored version of a record (PMID, DOI or feed entry id) with diffs."""
    from .report import format_history

    service = obj.read_only_service()
    try:
        found = service.history(ident)
    finally:
        service.close()
    click.echo(format_history(found), nl=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
@handle_errors
def status(obj: Ctx, as_json: bool) -> None:
    """Per query, feed and digest: last success, errors, next run; the outbox."""
    service = obj.read_only_service()
    try:
        st = service.status()
    finally:
        service.close()
    if obj.missing_database is not None and not as_json:
        click.echo(f"no database yet at {obj.missing_database}: nothing polled so far", err=True)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    from .report import format_status

    click.echo(format_status(st), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
