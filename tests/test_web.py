"""The web view and one-click unsubscribe (issue 26), over a real uvicorn server on
loopback and a database filled by real polls of the fake E-utilities server."""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import TODAY, basic_config, fetched_yesterday, invoke
from helpers.fake_eutils import FakeEutils
from helpers.net import free_port
from litwatch.config import load
from litwatch.errors import ConfigError
from litwatch.service import Service
from litwatch.web.app import make_app
from litwatch.web.server import WebServer

YESTERDAY = TODAY - timedelta(days=1)
SECRET = "s3cret-for-the-tests-only"


@dataclass
class Site:
    cfg: Path
    url: str
    outbox: Path
    server: WebServer
    service: Service
    eutils: FakeEutils

    def mails(self) -> list[EmailMessage]:
        out = []
        for f in sorted(self.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            msg = message_from_bytes(f.read_bytes(), policy=policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out


def web_config(tmp_path: Path, eutils: FakeEutils, port: int, web: str = "") -> Path:
    return basic_config(
        tmp_path,
        eutils.url,
        extra=f"web:\n  port: {port}\n  base_url: http://127.0.0.1:{port}/\n  secret: {SECRET}\n{web}",
    )


def start(cfg: Path, port: int) -> tuple[WebServer, Service]:
    settings = load(cfg)
    service = Service(settings)
    app = make_app(service, settings, health=lambda: (True, "fine"), metrics=lambda: "")
    return WebServer(app, port=port).start(), service


@pytest.fixture
def site(tmp_path: Path, eutils: FakeEutils) -> Iterator[Site]:
    """Three papers polled and mailed; then paper 1's abstract changes: polled and
    mailed again (an `update` with a "What changed" link)."""
    base = {"terms": "TRAIL", "edat": YESTERDAY, "mdat": YESTERDAY}
    eutils.add("1", title="TRAIL agonist trial", abstract="We tested it in mice.", doi="10.1/a", **base)
    eutils.add("2", title="DR5 antibody in myeloma", **base)
    eutils.add("3", title="Aponermin pharmacology", terms="multiple myeloma", edat=YESTERDAY)
    port = free_port()
    cfg = web_config(tmp_path, eutils, port)
    assert invoke("--config", str(cfg), "poll").returncode == 0
    assert invoke("--config", str(cfg), "digest").returncode == 0
    eutils.change("1", mdat=TODAY, title="TRAIL agonist trial", abstract="We tested it in mice and men.", doi="10.1/a")
    fetched_yesterday(tmp_path / "litwatch.db")  # the change comes after the day of the first poll (#28)
    assert invoke("--config", str(cfg), "poll").returncode == 0
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    server, service = start(cfg, port)
    yield Site(cfg, f"http://127.0.0.1:{port}", tmp_path / "outbox", server, service, eutils)
    server.stop()
    service.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def post(
    url: str, body: bytes = b"List-Unsubscribe=One-Click", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    h = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    req = urllib.request.Request(url, data=body, method="POST", headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def link_of(msg: EmailMessage) -> str:
    m = re.match(r"<(https?://[^>]+)>", str(msg["List-Unsubscribe"]))
    assert m, msg["List-Unsubscribe"]
    return m.group(1)


# ----------------------------------------------------------------------------- mail headers


def test_every_mail_carries_one_click_unsubscribe_for_its_recipient_and_digest(site: Site) -> None:
    mails = site.mails()
    assert len(mails) == 4  # two runs, two recipients
    for msg in mails:
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        header = str(msg["List-Unsubscribe"])
        assert header.startswith(f"<{site.url}/u/") and "<mailto:litwatch@example.org?subject=unsubscribe" in header
        assert SECRET not in header
    links = {str(m["To"]): link_of(m) for m in mails}
    assert len(set(links.values())) == 2  # one per recipient
    assert len({m["X-Entity-Ref-ID"] for m in mails}) == 4  # no two runs thread together
    assert not any(m["In-Reply-To"] or m["References"] for m in mails)


def test_without_base_url_no_unsubscribe_header_and_base_url_needs_a_secret(tmp_path: Path, eutils: FakeEutils) -> None:
    cfg = basic_config(tmp_path, eutils.url, extra="web:\n  base_url: https://x.example.org\n")
    with pytest.raises(ConfigError, match="secret"):
        load(cfg)


# ----------------------------------------------------------------------------- unsubscribe


def test_get_of_the_link_changes_nothing_and_shows_a_button(site: Site) -> None:
    msg = next(m for m in site.mails() if m["To"] == "team@example.org")
    status, body, _ = get(link_of(msg))
    assert status == 200 and '<form method="post">' in body and "team@example.org" in body
    assert site.service.unsubscribed() == []


def test_one_click_post_stops_that_recipients_mail_at_once_and_only_theirs(site: Site) -> None:
    msg = next(m for m in site.mails() if m["To"] == "team@example.org")
    status, body = post(link_of(msg))  # as a mail provider does it: no Origin, no cookie, no password
    assert status == 200 and "gets no more mail" in body
    assert [(u.digest, u.recipient, u.via) for u in site.service.unsubscribed()] == [
        ("weekly", "team@example.org", "link")
    ]
    # a new paper: the boss gets it, the team does not; nothing is lost for the boss
    site.eutils.add("4", title="TRAIL new one", terms="TRAIL", edat=TODAY)
    before = len(site.mails())
    assert invoke("--config", str(site.cfg), "poll").returncode == 0
    assert invoke("--config", str(site.cfg), "digest").returncode == 0
    new = site.mails()[before:]
    assert [m["To"] for m in new] == ["boss@example.org"]
    assert "TRAIL new one" in new[0].get_body(("plain",)).get_content()
    st = invoke("--config", str(site.cfg), "status")
    assert "unsubscribed since" in st.stdout and "team@example.org from weekly" in st.stdout
    chk = invoke("--config", str(site.cfg), "check")
    assert chk.returncode == 0 and "team@example.org unsubscribed" in chk.stderr
    # resubscribed: the next mail, not what happened meanwhile
    r = invoke("--config", str(site.cfg), "resubscribe", "team@example.org", "weekly")
    assert r.returncode == 0 and "resubscribed" in r.stdout
    assert invoke("--config", str(site.cfg), "digest").stdout.strip() == "nothing to send"
    site.eutils.add("5", title="TRAIL after the return", terms="TRAIL", edat=TODAY)
    assert invoke("--config", str(site.cfg), "poll").returncode == 0
    assert invoke("--config", str(site.cfg), "digest").returncode == 0
    back = [m for m in site.mails() if m["To"] == "team@example.org"][-1].get_body(("plain",)).get_content()
    assert "TRAIL after the return" in back and "TRAIL new one" not in back


def test_a_forged_or_altered_token_does_nothing(site: Site) -> None:
    link = link_of(site.mails()[0])
    d, r, mac = link.rsplit("/", 1)[1].split(".")
    other = base64.urlsafe_b64encode(b"someone@else.org").decode().rstrip("=")
    for bad in (f"{d}.{other}.{mac}", f"{d}.{r}.AAAA", "nonsense"):
        assert post(f"{site.url}/u/{bad}")[0] == 404
    assert site.service.unsubscribed() == []


def test_cli_unsubscribe_and_unknown_digest(site: Site) -> None:
    r = invoke("--config", str(site.cfg), "unsubscribe", "boss@example.org")
    assert r.returncode == 0 and "weekly: boss@example.org unsubscribed" in r.stdout
    r = invoke("--config", str(site.cfg), "unsubscribe", "boss@example.org", "nope")
    assert r.returncode == 2 and "no digest named 'nope'" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- pages


def test_overview_shows_health_chart_and_unsubscribed(site: Site) -> None:
    site.service.unsubscribe("weekly", "team@example.org", "cli")
    status, body, headers = get(site.url + "/")
    assert status == 200
    assert "trail" in body and "myeloma" in body and "<svg" in body and 'class="k-new"' in body
    assert "team@example.org from weekly" in body
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_events_filter_by_kind_query_text_and_date(site: Site) -> None:
    _, body, _ = get(site.url + "/events")
    assert body.count('class="event"') == 4  # three new papers and one update
    _, body, _ = get(site.url + "/events?kind=update")
    assert body.count('class="event"') == 1 and "TRAIL agonist trial" in body
    _, body, _ = get(site.url + "/events?query=myeloma")
    assert body.count('class="event"') == 1 and "Aponermin" in body
    _, body, _ = get(site.url + "/events?q=men.")
    assert body.count('class="event"') == 1
    _, body, _ = get(site.url + "/events?until=2000-01-01")
    assert "No events match." in body


def test_events_are_paged(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from litwatch.web import app

    monkeypatch.setattr(app, "PAGE", 3)
    site.server.stop()
    site.server, _ = start(site.cfg, site.server.requested_port)
    _, body, _ = get(site.url + "/events")
    assert body.count('class="event"') == 3
    nxt = re.search(r'href="(/events\?before=\d+)"', body)
    assert nxt
    _, body, _ = get(site.url + nxt.group(1))
    assert body.count('class="event"') == 1


def test_record_page_highlights_the_changed_words_and_lists_its_mails(site: Site) -> None:
    status, body, _ = get(site.url + "/record/1")
    assert status == 200
    assert "Version 2" in body and "<del>mice.</del> <ins>mice and men.</ins>" in body
    assert body.count('href="/mail/') >= 2  # sent in both runs' mails
    assert get(site.url + "/record/10.1/a")[0] == 200  # by DOI
    status, body, _ = get(site.url + "/record/999")
    assert status == 404 and "No stored record" in body


def test_digest_what_changed_link_leads_to_the_record(site: Site) -> None:
    last = site.mails()[-1]
    text = last.get_body(("plain",)).get_content()
    html = last.get_body(("html",)).get_content()
    link = re.search(r"What changed: (\S+)", text)
    assert link and link.group(1) == f"{site.url}/record/1"
    assert f'href="{site.url}/record/1"' in html
    assert "<ins>mice and men.</ins>" in get(link.group(1))[1]
    first = site.mails()[0].get_body(("plain",)).get_content()
    assert "What changed" not in first  # new papers only


def test_archive_shows_each_mail_as_sent_sandboxed(site: Site) -> None:
    status, body, _ = get(site.url + "/digests/weekly")
    assert status == 200 and body.count('href="/mail/') == 4
    mail = re.search(r'href="(/mail/\d+)"', body)
    assert mail
    _, page, _ = get(site.url + mail.group(1))
    assert '<iframe class="mail" sandbox=""' in page and "List-Unsubscribe" in page
    status, html, headers = get(site.url + mail.group(1) + "/html")
    assert status == 200 and "TRAIL" in html
    assert headers["content-security-policy"].startswith("sandbox")
    assert get(site.url + "/digests/nope")[0] == 404


# ----------------------------------------------------------------------------- safe by default


def test_binds_loopback_and_elsewhere_needs_a_password_or_proxy(tmp_path: Path, eutils: FakeEutils) -> None:
    web = load(basic_config(tmp_path, eutils.url, extra="web:\n  port: 8090\n")).web
    assert web is not None and web.bind == "127.0.0.1"
    with pytest.raises(ConfigError, match="password"):
        load(basic_config(tmp_path, eutils.url, extra="web:\n  bind: 0.0.0.0\n"))
    web = load(basic_config(tmp_path, eutils.url, extra="web:\n  bind: 0.0.0.0\n  auth: proxy\n")).web
    assert web is not None and web.auth_mode == "proxy"
    r = invoke("--config", str(basic_config(tmp_path, eutils.url, extra="web:\n  bind: 0.0.0.0\n")), "web")
    assert r.returncode == 2 and "web: bind 0.0.0.0 is reachable" in r.stderr and "Traceback" not in r.stderr


def test_password_protects_pages_but_not_probes_or_unsubscribe_links(tmp_path: Path, eutils: FakeEutils) -> None:
    eutils.add("1", title="TRAIL agonist trial", terms="TRAIL", edat=YESTERDAY)
    port = free_port()
    cfg = web_config(tmp_path, eutils, port, web="  bind: 127.0.0.1\n  password: hunter2-long\n")
    assert invoke("--config", str(cfg), "poll").returncode == 0
    assert invoke("--config", str(cfg), "digest").returncode == 0
    server, service = start(cfg, port)
    try:
        url = f"http://127.0.0.1:{port}"
        status, _, headers = get(url + "/")
        assert status == 401 and headers["www-authenticate"].startswith("Basic")
        wrong = "Basic " + base64.b64encode(b"x:wrong").decode()
        assert get(url + "/", {"Authorization": wrong})[0] == 401
        right = "Basic " + base64.b64encode(b"anyone:hunter2-long").decode()
        assert get(url + "/events", {"Authorization": right})[0] == 200
        assert get(url + "/healthz")[0] == 200
        msg = message_from_bytes(next((tmp_path / "outbox").glob("*.eml")).read_bytes(), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        assert post(link_of(msg))[0] == 200
    finally:
        server.stop()
        service.close()


def test_cross_site_posts_are_refused(site: Site) -> None:
    assert post(site.url + "/events", headers={"Origin": "https://evil.example"})[0] == 403
    assert post(site.url + "/events", headers={"Sec-Fetch-Site": "cross-site"})[0] == 403


def test_a_database_error_shows_no_detail(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.service.store.engine = sa.create_engine("postgresql+psycopg://secretuser@127.0.0.1:9/nodb")  # type: ignore[attr-defined]
    for path in ("/", "/events", "/record/1", "/digests/weekly"):
        status, body, _ = get(site.url + path)
        assert status == 503 and "database does not answer" in body, path
        assert "secretuser" not in body and "port 9" not in body and "Traceback" not in body
    assert "secretuser" in caplog.text or "port 9" in caplog.text


def test_a_message_still_queued_for_them_does_not_go_out_after_unsubscribing(
    tmp_path: Path, eutils: FakeEutils
) -> None:
    eutils.add("1", title="TRAIL agonist trial", terms="TRAIL", edat=YESTERDAY)
    cfg = web_config(tmp_path, eutils, free_port())
    outbox = tmp_path / "outbox"
    outbox.write_text("not a directory")  # the mail cannot be written: both messages stay queued
    assert invoke("--config", str(cfg), "poll").returncode == 0
    assert invoke("--config", str(cfg), "digest").returncode == 1
    service = Service(load(cfg))
    try:
        assert service.unsubscribe("weekly", "team@example.org", "link")
    finally:
        service.close()
    outbox.unlink()
    r = invoke("--config", str(cfg), "digest")
    assert r.returncode == 0, r.stdout + r.stderr
    sent = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in outbox.glob("*.eml")]
    assert [m["To"] for m in sent] == ["boss@example.org"]
