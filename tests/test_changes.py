"""Change tracking end to end: poll, deliver, then PubMed changes known records and
adds notices; the next poll + digest shows exactly those events, once, in the right
sections, to every query that ever matched the record."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

import sqlalchemy as sa

from helpers import TODAY, basic_config, fetched_yesterday, invoke
from helpers.fake_eutils import FakeEutils

NOTICE_TERM = '"published erratum"[pt] OR "retraction of publication"[pt] OR "retraction notice"[pt] OR "expression of concern"[pt]'
YESTERDAY = TODAY - timedelta(days=1)


def messages(outbox: Path, seen: set[Path]) -> list[tuple[str, str]]:
    out = []
    for f in sorted(outbox.glob("*.eml")):
        if f in seen:
            continue
        seen.add(f)
        msg = message_from_bytes(f.read_bytes(), policy=policy.default)
        out.append((str(msg["Subject"]), msg.get_body(("plain",)).get_content().replace("\r\n", "\n")))
    return out


def section(text: str, title: str) -> str:
    start = text.find(f"== {title}")
    if start < 0:
        return ""
    end = text.find("\n== ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_errata_retractions_concerns_updates_once(tmp_path: Path, eutils: FakeEutils) -> None:
    base = {"terms": "TRAIL", "edat": YESTERDAY, "mdat": YESTERDAY}
    eutils.add("1", title="TRAIL agonist trial", abstract="We tested it.", doi="10.1/a", **base)
    eutils.add("2", title="DR5 antibody in myeloma", **base)
    eutils.add("3", title="Aponermin pharmacology", **base)
    eutils.add("4", title="Old TRAIL review", **base)
    eutils.add("5", title="TRAIL resistance", **base)
    # one digest, one recipient, so each test step yields one message
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: trail\n    pubmed: TRAIL\n  - name: later\n    pubmed: LATER\n",
        digests="digests:\n  - name: d\n    to: [a@example.org]\n    queries: [trail]\n"
        "  - name: later-digest\n    to: [b@example.org]\n    queries: [later]\n",
    )
    outbox = tmp_path / "outbox"
    seen: set[Path] = set()
    assert invoke("--config", str(cfg), "poll").returncode == 0
    assert invoke("--config", str(cfg), "digest").returncode == 0
    (first,) = messages(outbox, seen)
    assert first[0] == "d: 5 new papers"

    # PubMed changes: 1 gets an erratum (ErratumIn, mdat bumped); 2 is retracted (title,
    # pubtype and RetractionIn together); 3's title changes; 4 drops out of the query but
    # an expression-of-concern notice naming it appears; 5 only gets new MeSH terms.
    eutils.change(
        "1",
        mdat=TODAY,
        title="TRAIL agonist trial",
        abstract="We tested it.",
        doi="10.1/a",
        links=(("ErratumIn", "901"),),
    )
    eutils.change(
        "2",
        mdat=TODAY,
        title="RETRACTED: DR5 antibody in myeloma",
        pubtypes=("Journal Article", "Retracted Publication"),
        links=(("RetractionIn", "902"),),
    )
    eutils.change("3", mdat=TODAY, title="Aponermin pharmacology and toxicology")
    eutils.records["4"].terms = set()
    eutils.change("5", mdat=TODAY, title="TRAIL resistance", mesh=("Humans", "Drug Resistance"))
    eutils.add(
        "901",
        terms=NOTICE_TERM,
        edat=TODAY,
        title="Erratum: TRAIL agonist trial",
        pubtypes=("Published Erratum",),
        links=(("ErratumFor", "1"),),
    )
    eutils.add(
        "902",
        terms=NOTICE_TERM,
        edat=TODAY,
        title="Retraction: DR5 antibody",
        pubtypes=("Retraction of Publication",),
        links=(("RetractionOf", "2"),),
    )
    eutils.add(
        "903",
        terms=NOTICE_TERM,
        edat=TODAY,
        title="Expression of concern: Old TRAIL review",
        pubtypes=("Expression of Concern",),
        links=(("ExpressionOfConcernFor", "4"),),
    )
    eutils.add(
        "904",
        terms=NOTICE_TERM,
        edat=TODAY,
        title="Erratum for someone else",
        pubtypes=("Published Erratum",),
        links=(("ErratumFor", "777"),),
    )
    fetched_yesterday(tmp_path / "litwatch.db")
    r = invoke("--config", str(cfg), "poll")
    assert r.returncode == 0, r.stdout + r.stderr
    assert invoke("--config", str(cfg), "digest").returncode == 0
    (second,) = messages(outbox, seen)
    subject, text = second
    assert subject == "d: 1 erratum, 1 retraction, 1 expression of concern, 1 update"
    notices = section(text, "Errata, retractions and concerns")
    assert notices.index("[Retraction — PubMed] RETRACTED: DR5 antibody") < notices.index(
        "[Expression of concern — PubMed] Old TRAIL review"
    )
    assert notices.index("[Expression of concern — PubMed]") < notices.index("[Erratum — PubMed] TRAIL agonist trial")
    assert "Notice: Erratum: TRAIL agonist trial https://pubmed.ncbi.nlm.nih.gov/901/" in " ".join(notices.split())
    retraction = notices[: notices.index("[Expression of concern — PubMed]")]
    # the title change rides with the retraction
    assert "Changed title:\n     - DR5 antibody in myeloma\n     + RETRACTED: DR5 antibody in myeloma" in retraction
    updates = section(text, "Updates")
    assert "Aponermin pharmacology and toxicology" in updates and "+ Aponermin pharmacology and toxicology" in updates
    assert "TRAIL resistance" not in text  # MeSH-only change: a version, no mail
    assert "Erratum for someone else" not in text and "== New papers" not in text
    assert not section(text, "Updates").count("DR5")

    # nothing new: no mail; a re-poll finds the same changes again and stores nothing
    assert invoke("--config", str(cfg), "poll").returncode == 0
    r = invoke("--config", str(cfg), "digest")
    assert "nothing to send" in r.stdout and messages(outbox, seen) == []

    hist = invoke("--config", str(cfg), "history", "5")
    assert hist.returncode == 0 and "v2" in hist.stdout and "mesh" in hist.stdout
    hist = invoke("--config", str(cfg), "history", "10.1/a")
    assert hist.returncode == 0 and "pubmed 1: 2 version(s)" in hist.stdout and "ErratumIn 901" in hist.stdout
    r = invoke("--config", str(cfg), "history", "424242")
    assert r.returncode == 2 and "no stored record" in r.stderr


def test_event_reaches_every_query_that_ever_matched(tmp_path: Path, eutils: FakeEutils) -> None:
    eutils.add("1", terms={"TRAIL", "myeloma"}, edat=YESTERDAY, title="Shared paper")
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: a\n    pubmed: TRAIL\n  - name: b\n    pubmed: myeloma\n",
        digests="digests:\n  - name: da\n    to: [a@example.org]\n    queries: [a]\n  - name: db\n    to: [b@example.org]\n    queries: [b]\n",
    )
    invoke("--config", str(cfg), "poll")
    invoke("--config", str(cfg), "digest")
    eutils.records["1"].terms = {"TRAIL"}  # b no longer matches
    eutils.change(
        "1", mdat=TODAY, title="Shared paper", links=(("RetractionIn", "5"),), pubtypes=("Retracted Publication",)
    )
    eutils.records["1"].terms = {"TRAIL"}
    fetched_yesterday(tmp_path / "litwatch.db")
    invoke("--config", str(cfg), "poll")
    r = invoke("--config", str(cfg), "digest")
    assert "da → a@example.org: da: 1 retraction" in r.stdout
    assert "db → b@example.org: db: 1 retraction" in r.stdout


def test_reordered_xml_gives_no_version_and_status_change_no_mail(tmp_path: Path, eutils: FakeEutils) -> None:
    eutils.add(
        "1", terms="TRAIL", edat=YESTERDAY, title="Paper", mesh=("A", "B", "C"), pubtypes=("Journal Article", "Review")
    )
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: t\n    pubmed: TRAIL\n",
        digests="digests:\n  - name: d\n    to: [a@example.org]\n    queries: [t]\n",
    )
    invoke("--config", str(cfg), "poll")
    invoke("--config", str(cfg), "digest")
    eutils.change("1", mdat=TODAY, title="  Paper ", mesh=("C", "A", "B"), pubtypes=("Review", "Journal Article"))
    fetched_yesterday(tmp_path / "litwatch.db")
    invoke("--config", str(cfg), "poll")
    db = sa.create_engine(f"sqlite:///{tmp_path / 'litwatch.db'}")
    with db.connect() as c:
        assert c.execute(sa.text("select count(*) from versions")).scalar_one() == 1
    eutils.change(
        "1",
        mdat=TODAY,
        title="Paper",
        mesh=("C", "A", "B"),
        pubtypes=("Review", "Journal Article"),
        status="PubMed-not-MEDLINE",
    )
    fetched_yesterday(tmp_path / "litwatch.db")
    invoke("--config", str(cfg), "poll")
    with db.connect() as c:
        assert c.execute(sa.text("select count(*) from versions")).scalar_one() == 2
        assert c.execute(sa.text("select count(*) from events")).scalar_one() == 1  # only the first `new`
    r = invoke("--config", str(cfg), "digest")
    assert "nothing to send" in r.stdout


def test_notice_before_its_record(tmp_path: Path, eutils: FakeEutils) -> None:
    """A notice that names a record litwatch has not stored yet gives no event; when the
    record arrives it is a new paper that already shows its standing (corrected)."""
    eutils.add("10", terms="OTHER", edat=YESTERDAY, title="Something else")
    cfg = basic_config(
        tmp_path,
        eutils.url,
        queries="queries:\n  - name: t\n    pubmed: TRAIL\n  - name: o\n    pubmed: OTHER\n",
        digests="digests:\n  - name: d\n    to: [a@example.org]\n    queries: [t]\n",
    )
    invoke("--config", str(cfg), "poll")  # first notice cycle sets its watermark
    eutils.add(
        "950",
        terms=NOTICE_TERM,
        edat=TODAY,
        title="Erratum: Late paper",
        pubtypes=("Published Erratum",),
        links=(("ErratumFor", "11"),),
    )
    invoke("--config", str(cfg), "poll")
    eutils.add("11", terms="TRAIL", edat=TODAY, title="Late paper", links=(("ErratumIn", "950"),))
    invoke("--config", str(cfg), "poll")
    r = invoke("--config", str(cfg), "digest", "--dry-run")
    assert "== New papers (1) ==" in r.stdout and "Late paper" in r.stdout and "Status: corrected" in r.stdout
    assert "Errata" not in r.stdout
