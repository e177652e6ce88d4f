"""Issue 17's "done when", tried as a new user would: the example config as shipped
(config/litwatch.yaml), only its addresses pointed at local servers — the fake
E-utilities, Drugs@FDA (openFDA), the EMA medicines file, the FDA press-release feed,
a journal feed and Crossref — then `litwatch poll` and `litwatch digest` as processes.

The approvals section of the weekly digest shows, each once and with the words that
matched: the FDA approval (the Drugs@FDA record and the FDA press release of the same
approval on one line, both links), the EU opinion and the EU authorisation (EMA), and
the "First Approval" paper about the same substance next to them. The FDA's press
item about a recall that names a myeloma drug is not an approval."""

from __future__ import annotations

import copy
import json
import re
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from helpers import TODAY, run_cli
from helpers.fake_biorxiv import FakeBiorxiv
from helpers.fake_crossref import FakeCrossref
from helpers.fake_eutils import FakeEutils
from helpers.fake_openfda import FakeOpenFda
from helpers.feedhost import FeedHost

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "litwatch.yaml"
MYELOMA_PUBMED = '"multiple myeloma"[mh] AND (therap*[tiab] OR trial[pt])'


def _ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def _dmy(d: date) -> str:
    return d.strftime("%d/%m/%Y")


def _rfc822(d: date) -> str:
    return d.strftime("%a, %d %b %Y 12:00:00 GMT")


def trailnova(approved: date) -> dict[str, Any]:
    """tests/data/openfda's TRAILNOVA (aponermin) BLA, approved `approved`."""
    apps = json.loads((DATA / "openfda" / "applications.json").read_text(encoding="utf-8"))["results"]
    app = copy.deepcopy(next(a for a in apps if a["application_number"] == "BLA761901"))
    for sub in app["submissions"]:
        sub["submission_status_date"] = _ymd(approved)
        for doc in sub.get("application_docs", []):
            doc["date"] = _ymd(approved)
    return dict(app)


def ema_file(opinion: date, authorised: date) -> bytes:
    """tests/data/ema's excerpt plus an aponermin medicine for myeloma: a positive CHMP
    opinion on `opinion`, the EU authorisation on `authorised`."""
    doc = json.loads((DATA / "ema" / "medicines-excerpt.json").read_text(encoding="utf-8"))
    base = next(m for m in doc["data"] if m["name_of_medicine"] == "Pomalidomide Teva")
    med = {k: ("No" if v == "Yes" else v) for k, v in base.items()}  # not a generic: a new medicine
    med.update(
        name_of_medicine="Trailnova",
        active_substance="aponermin",
        international_non_proprietary_name_common_name="aponermin",
        therapeutic_area_mesh="Multiple Myeloma",
        therapeutic_indication="Trailnova is indicated for relapsed or refractory multiple myeloma.",
        medicine_status="Authorised",
        opinion_status="Positive",
        opinion_adopted_date=_dmy(opinion),
        marketing_authorisation_date=_dmy(authorised),
        european_commission_decision_date=_dmy(authorised),
        last_updated_date=_dmy(authorised),
        ema_product_number="EMEA/H/C/009999",
        medicine_url="https://www.ema.europa.eu/en/medicines/human/EPAR/trailnova",
    )
    doc["data"].append(med)
    return json.dumps(doc).encode()


def press_feed(approved: date) -> bytes:
    items = [
        (
            "FDA approves aponermin for relapsed or refractory multiple myeloma",
            "https://www.fda.gov/news-events/press-announcements/fda-approves-aponermin",
            "The U.S. Food and Drug Administration today approved Trailnova (aponermin) for adults with "
            "relapsed or refractory multiple myeloma.",
            approved,
        ),
        (
            "Example Pharma recalls one lot of daratumumab vials used in multiple myeloma",
            "https://www.fda.gov/safety/recalls/example-daratumumab-lot",
            "The company is voluntarily recalling one lot because of particulate matter.",
            approved + timedelta(days=1),
        ),
    ]
    body = "".join(
        f"<item><title>{t}</title><link>{u}</link><description>{s}</description>"
        f"<guid>{u}</guid><pubDate>{_rfc822(d)}</pubDate></item>"
        for t, u, s, d in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>FDA Press Announcements</title>'
        f"<link>https://www.fda.gov/</link><description>Press</description>{body}</channel></rss>"
    ).encode()


EMPTY_RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Blood</title><link>https://x/</link><description>toc</description></channel></rss>'


def user_config(
    tmp_path: Path, eutils: FakeEutils, fda: FakeOpenFda, host: FeedHost, crossref: FakeCrossref, preprints: FakeBiorxiv
) -> Path:
    """The shipped example with only its addresses (and where it writes) changed."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("database: sqlite:///litwatch.db", f"database: sqlite:///{tmp_path / 'litwatch.db'}")
    text = text.replace("pubmed:\n", f"pubmed:\n  base_url: {eutils.url}\n  timeout: 10\n", 1)
    text = text.replace("  directory: outbox", f"  directory: {tmp_path / 'outbox'}")
    text = text.replace("crossref:", f"crossref:\n  base_url: {crossref.url}", 1)
    text = re.sub(r"(- name: fda-press\n    url: )\S+", rf"\g<1>{host.url('/press.xml')}", text)
    text = re.sub(r"(- name: blood-toc\n    url: )\S+", rf"\g<1>{host.url('/blood.xml')}", text)
    text = text.replace("    kind: openfda", f"    kind: openfda\n    url: {fda.search_url}")
    text = text.replace("    kind: ema", f"    kind: ema\n    url: {host.url('/medicines.json')}")
    for kind in ("medrxiv", "biorxiv"):  # preprints: an empty fake api.biorxiv.org
        text = text.replace(f"    kind: {kind}", f"    kind: {kind}\n    url: {preprints.base}")
    cfg = tmp_path / "litwatch.yaml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_example_config_digest_shows_each_approval_once(tmp_path: Path, eutils: FakeEutils) -> None:
    approved = TODAY - timedelta(days=6)
    eutils.add(
        "41000001",
        terms=MYELOMA_PUBMED,
        edat=TODAY - timedelta(days=2),
        title="Aponermin: First Approval",
        abstract="Aponermin (Trailnova) is a TRAIL receptor agonist approved for relapsed multiple myeloma.",
        mesh=("Multiple Myeloma/drug therapy",),
    )
    crossref = FakeCrossref().start()
    with FakeOpenFda([trailnova(approved)]) as fda, FeedHost() as host, FakeBiorxiv() as preprints:
        host.feed("/press.xml", press_feed(approved))
        host.feed("/blood.xml", EMPTY_RSS)
        host.feed("/medicines.json", ema_file(TODAY - timedelta(days=20), TODAY - timedelta(days=3)))
        cfg = user_config(tmp_path, eutils, fda, host, crossref, preprints)
        env = {"NCBI_API_KEY": "", "OPENFDA_API_KEY": "", "LITWATCH_EMAIL": "new-user@example.org"}
        polled = run_cli("--config", str(cfg), "poll", env=env, cwd=tmp_path)
        mailed = run_cli("--config", str(cfg), "digest", "weekly-myeloma", env=env, cwd=tmp_path)
    crossref.stop()
    print("\n" + polled.stdout + polled.stderr[-1500:] + mailed.stdout + mailed.stderr[-1500:])
    assert "Traceback" not in polled.stderr + mailed.stderr
    assert polled.returncode == 0 and mailed.returncode == 0
    (eml,) = sorted((tmp_path / "outbox").glob("*.eml"))
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    print(text)
    approvals = _section(text, "approval")
    # the FDA approval: Drugs@FDA record and press release on one line, both links
    assert approvals.count("TRAILNOVA") >= 1
    fda_lines = [b for b in _items(approvals) if "BLA761901" in b or "Drugs@FDA" in b]
    assert len(fda_lines) == 1, approvals
    assert "fda-approves-aponermin" in fda_lines[0] and "accessdata.fda.gov" in fda_lines[0]
    # the EU opinion and the EU authorisation, each once
    eu = [b for b in _items(approvals) if "Trailnova" in b and "EMA" in b]
    assert sum("CHMP opinion" in b for b in eu) == 1 and sum("EU authorisation" in b for b in eu) == 1, approvals
    # the First Approval paper, in the approvals section, once
    assert approvals.count("Aponermin: First Approval") == 1
    # the terms that matched are shown
    assert "aponermin" in approvals.lower() and "matched" in approvals.lower()
    # the recall is not an approval (it may be a `new` item elsewhere)
    assert "recalls one lot" not in approvals
    assert text.count("Aponermin: First Approval") == 1 and text.count("fda-approves-aponermin") == 1


def _section(text: str, word: str) -> str:
    """The digest's section whose heading names `word` (up to the next heading)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if word.lower() in line.lower() and _heading(lines, i))
    end = next((j for j in range(start + 1, len(lines)) if _heading(lines, j)), len(lines))
    return "\n".join(lines[start:end])


def _heading(lines: list[str], i: int) -> bool:
    return bool(re.fullmatch(r"== .+ ==", lines[i].strip())) or lines[i].strip() == "--"


def _items(section: str) -> list[str]:
    """The section's items: blocks separated by blank lines, heading dropped."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", section) if b.strip()]
    return [b for b in blocks[1:]] if blocks else []
