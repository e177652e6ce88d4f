"""`litwatch history ID` names each notice of a record once, then which sources
reported it and when (SQLite and PostgreSQL), through the CLI's surface."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from helpers import basic_config
from litwatch import events as ev
from litwatch import notices as nt
from litwatch.cli import main
from litwatch.records import PUBMED, Notice, Record
from litwatch.store import Store

T0 = datetime(2026, 11, 2, 9, 30, 0)


def test_history_shows_which_sources_reported_which_notice(tmp_path: Path, store_url: str) -> None:
    original = Record(source=PUBMED, key="22334455", title="TRAIL agonist trial", doi="10.1021/am300292v")
    store = Store(store_url)
    with store.transaction() as tx:
        rid = store.insert_records(tx, [(original, ev.fingerprint(original))], T0)["22334455"]
    retraction = Notice(
        "retraction", "retraction", original.doi, "10.1021/acsami.9b11759", "retraction-watch", "2019-07-26"
    )
    odd = Notice("other", "retraction_of_a_figure", original.doi, "10.1021/odd", "publisher", "2020")
    new = [
        (nt.crossref_report(retraction, rid, T0), nt.crossref_event(retraction, original)),
        (nt.crossref_report(odd, rid, T0), nt.crossref_event(odd, original)),
    ]
    later = [
        (
            nt.pubmed_report(
                "retraction", rid, T0 + timedelta(days=7), notice_pmid="31350000", ref_type="RetractionIn"
            ),
            None,
        )
    ]
    with store.transaction() as tx:
        decided = nt.attribute(new, [], [])
        store.add_notice_reports(tx, [a.report for a in decided], T0)
        (a,) = nt.attribute([(later[0][0], decided[0].event)], store.notice_reports_for(tx, [rid])[rid], [])
        store.add_notice_reports(tx, [a.report], T0)
    store.close()

    cfg = basic_config(tmp_path, "http://127.0.0.1:9/", db=store_url)
    result = CliRunner().invoke(main, ["--config", str(cfg), "history", "10.1021/AM300292V"])
    print(result.output)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("  notices: 2")
    assert lines[start + 1 :] == [
        "    retraction, DOI 10.1021/acsami.9b11759, PMID 31350000, issued 2019-07-26",
        "      Retraction Watch (retraction) 2026-11-02 09:30:00Z",
        "      PubMed (RetractionIn) 2026-11-09 09:30:00Z",
        "    other (retraction_of_a_figure: recorded, not mailed), DOI 10.1021/odd, issued 2020",
        "      publisher notice (retraction_of_a_figure) 2026-11-02 09:30:00Z",
    ]


def test_history_without_notices_says_nothing_of_them(tmp_path: Path, store_url: str) -> None:
    r = Record(source=PUBMED, key="1", title="Plain")
    store = Store(store_url)
    with store.transaction() as tx:
        store.insert_records(tx, [(r, ev.fingerprint(r))], T0)
    store.close()
    cfg = basic_config(tmp_path, "http://127.0.0.1:9/", db=store_url)
    result = CliRunner().invoke(main, ["--config", str(cfg), "history", "1"])
    assert result.exit_code == 0 and "notices" not in result.output
