"""The web view (issue 26): a Starlette app over the service's read-only web queries,
server-rendered with Jinja2, no JavaScript. Also `/healthz` and `/metrics` (the same
text and codes as the old health server), and the one-click unsubscribe links.

Pages never show a database error's text (it names hosts and users): the log has it,
the page says the database does not answer (503)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import __version__
from ..config import Settings
from ..errors import StoreError, UsageError, first_line
from ..records import EVENT_KINDS
from ..unsubscribe import read_token, secret_of
from .chart import weekly_chart
from .security import MAIL_CSP, Guard, PasswordHash

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger(__name__)

PAGE = 50  # events or mails per page
CHART_TTL = 60.0  # seconds the overview's chart counts are reused


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("litwatch.web", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["version"] = __version__
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if isinstance(v, datetime) else (v or "")
    env.filters["day"] = lambda v: v.strftime("%Y-%m-%d") if isinstance(v, datetime) else (v or "")
    return env


def _word_diff(old: Any, new: Any) -> list[tuple[str, str]]:
    from ..digest.group import word_diff

    def text(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, list):
            return "; ".join(str(x) for x in v)
        return str(v)

    return word_diff(text(old), text(new), context=10**6)


def _parse_day(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def make_app(
    service: Service,
    settings: Settings,
    *,
    health: Callable[[], tuple[bool, str]],
    metrics: Callable[[], str],
    pages: bool = True,
) -> Any:
    """The ASGI app. `pages=False`: only `/healthz` and `/metrics` (the old
    `health_port`)."""
    env = _env()
    web = settings.web
    secret = secret_of(web) if web is not None else None

    def render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx.setdefault("title", "litwatch")
        body = env.get_template(template).render(request=request, settings=settings, **ctx)
        return HTMLResponse(body, status_code=status)

    def failed(request: Request, e: Exception) -> HTMLResponse:
        log.warning("web: %s %s: database does not answer: %s", request.method, request.url.path, first_line(e))
        return render(request, "error.html", 503, message="The database does not answer; try again shortly.")

    # ------------------------------------------------------------------ probes

    def healthz(request: Request) -> Response:
        ok, reason = health()
        return PlainTextResponse(f"{'ok' if ok else 'unhealthy'}: {reason}\n", status_code=200 if ok else 503)

    def metrics_(request: Request) -> Response:
        return Response(metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ pages

    chart_cache: dict[str, tuple[float, Any]] = {}

    def events_per_week() -> Any:
        """The chart's counts, read at most once a minute: with a million events the
        count takes the database a second or two, and a weekly chart needs no fresher."""
        now = time.monotonic()
        hit = chart_cache.get("weeks")
        if hit is not None and now - hit[0] < CHART_TTL:
            return hit[1]
        weeks = service.web_events_per_week(12)
        chart_cache["weeks"] = (now, weeks)
        return weeks

    def overview(request: Request) -> Response:
        try:
            st = service.status()
            weeks = events_per_week()
        except StoreError as e:
            return failed(request, e)
        chart = weekly_chart(weeks, service.now(), [q.name for q in settings.queries])
        return render(request, "overview.html", st=st, chart=chart)

    def events(request: Request) -> Response:
        p = request.query_params
        filters: dict[str, Any] = {
            "queries": [q for q in p.getlist("query") if q],
            "kinds": [k for k in p.getlist("kind") if k in EVENT_KINDS],
            "since": _parse_day(p.get("since")),
            "until": (d + timedelta(days=1)) if (d := _parse_day(p.get("until"))) else None,
            "text": (p.get("q") or "").strip()[:200],
            "before_id": _int(p.get("before")),
            "limit": PAGE + 1,
        }
        try:
            rows = service.web_events(**filters)
        except StoreError as e:
            return failed(request, e)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        next_url = None
        if more and rows:
            args = [(k, v) for k, v in p.multi_items() if k != "before"] + [("before", str(rows[-1].id))]
            next_url = "/events?" + urlencode(args)
        return render(
            request,
            "events.html",
            title="Events · litwatch",
            rows=rows,
            next_url=next_url,
            kinds=EVENT_KINDS,
            queries=[q.name for q in settings.queries],
            chosen={
                "query": set(filters["queries"]),
                "kind": set(filters["kinds"]),
                "since": p.get("since", ""),
                "until": p.get("until", ""),
                "q": filters["text"],
            },
        )

    def record(request: Request) -> Response:
        ident = request.path_params["ident"]
        try:
            found = service.web_record(ident)
        except UsageError:
            return render(request, "error.html", 404, message=f"No stored record with PMID, DOI or feed id {ident!r}.")
        except StoreError as e:
            return failed(request, e)
        return render(request, "record.html", title=f"{ident} · litwatch", ident=ident, found=found, diff=_word_diff)

    def archive(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in {d.name for d in settings.digests}:
            return render(request, "error.html", 404, message=f"No digest named {name!r}.")
        before = _int(request.query_params.get("before"))
        try:
            mails = service.web_archive(name, before)
            stopped = service.unsubscribed(name)
        except StoreError as e:
            return failed(request, e)
        more = f"/digests/{name}?before={mails[-1].id}" if len(mails) == PAGE else None
        return render(
            request, "archive.html", title=f"{name} · litwatch", name=name, mails=mails, more=more, stopped=stopped
        )

    def _mail(request: Request) -> tuple[Any, EmailMessage] | Response:
        oid = _int(request.path_params["id"])
        try:
            found = service.web_message(oid) if oid is not None else None
        except StoreError as e:
            return failed(request, e)
        if found is None:
            return render(request, "error.html", 404, message="No such mail.")
        meta, mime = found
        msg = message_from_bytes(mime, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return meta, msg

    def mail(request: Request) -> Response:
        got = _mail(request)
        if isinstance(got, Response):
            return got
        meta, msg = got
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        headers = [(k, str(v)) for k, v in msg.items()]
        return render(
            request,
            "mail.html",
            title=f"{meta.subject} · litwatch",
            meta=meta,
            headers=headers,
            text=text.get_content() if text is not None else "",
            has_html=html is not None,
        )

    def mail_html(request: Request) -> Response:
        got = _mail(request)
        if isinstance(got, Response):
            return got
        _, msg = got
        html = msg.get_body(("html",))
        if html is None:
            return PlainTextResponse("this mail has no HTML part\n", status_code=404)
        # shown in a sandboxed frame, and sandboxed by its own CSP if opened alone
        return HTMLResponse(
            html.get_content(),
            headers={"Content-Security-Policy": MAIL_CSP, "X-Frame-Options": "SAMEORIGIN"},
        )

    # ------------------------------------------------------------------ unsubscribe

    async def unsubscribe(request: Request) -> Response:
        if request.method == "POST":
            await request.body()  # RFC 8058: List-Unsubscribe=One-Click; any body is fine
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_unsubscribe, request)

    def _unsubscribe(request: Request) -> Response:
        found = read_token(secret, request.path_params["token"]) if secret is not None else None
        if found is None:
            return render(request, "error.html", 404, message="This unsubscribe link is not valid.")
        digest, recipient = found
        if request.method == "GET":  # mail scanners follow links: a GET changes nothing
            return render(request, "unsubscribe.html", title="Unsubscribe", digest=digest, recipient=recipient)
        try:
            service.unsubscribe(digest, recipient, "link")
        except StoreError as e:
            return failed(request, e)
        return render(request, "unsubscribed.html", title="Unsubscribed", digest=digest, recipient=recipient)

    routes = [Route("/healthz", healthz), Route("/metrics", metrics_)]
    if pages:
        routes += [
            Route("/", overview),
            Route("/events", events),
            Route("/record/{ident:path}", record),
            Route("/digests/{name}", archive),
            Route("/mail/{id}", mail),
            Route("/mail/{id}/html", mail_html),
            Route("/u/{token}", unsubscribe, methods=["GET", "POST"]),
            Route("/static/style.css", _style),
        ]

    async def not_found(request: Request, exc: Exception) -> Response:
        if not pages:
            return PlainTextResponse("not found: try /healthz or /metrics\n", status_code=404)
        return render(request, "error.html", 404, message="Nothing here.")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("web: %s %s failed: %s", request.method, request.url.path, first_line(exc))
        return PlainTextResponse("internal error; the log says more\n", status_code=500)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 500: server_error})
    password = web.password.get_secret_value() if web is not None and web.password is not None else None
    guard_password = PasswordHash(password) if password and web is not None and web.auth_mode == "password" else None
    return Guard(app, password=guard_password, cross_site_ok=("/u/",))


_CSS: bytes | None = None


def _style(request: Request) -> Response:
    global _CSS
    if _CSS is None:
        from importlib.resources import files

        _CSS = files("litwatch.web").joinpath("templates/style.css").read_bytes()
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})
