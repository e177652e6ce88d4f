"""`litwatch init`: the starter config, written where the user asks and never over an
existing file. It is config/litwatch.yaml (the example README runs) with comments for
a first-time user, the contact address left to fill in, and its own database file and
query names (`my-…`), so that it never shares progress with the example run beside
it; tests/test_init.py keeps the two in step."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

EMAIL_KEY = "  email: you@example.org"

STARTER = """\
# litwatch config: written by `litwatch init`. Edit it, then
#   litwatch --config THIS_FILE check            # is it valid?
#   litwatch --config THIS_FILE check --online   # what would each query find?
#   litwatch --config THIS_FILE run              # poll and mail on schedule
# Every key is described in litwatch's README ("Configuration"). `${NAME}` is the
# environment variable NAME (`${NAME:-default}` gives a default): put secrets there.
#
# This one watches TRAIL agonists (aponermin, DR5 agonists) and multiple myeloma.

# Where records, versions and events are kept; relative to the directory litwatch
# runs in. postgresql+psycopg://user@host/db to run several instances. Not the
# example's litwatch.db: a run of the README's example beside it stays its own.
database: sqlite:///my-litwatch.db

pubmed:
  email: you@example.org   # FILL IN your address: NCBI asks every tool for a contact
  api_key: ${NCBI_API_KEY:-}    # optional, from NCBI: 10 requests/s instead of 3
  first_lookback_days: 30       # the first poll of a new query reaches this far back

mail:
  transport: file               # digests as .eml files in `directory`; smtp to really send
  directory: outbox
  from: "litwatch <litwatch@example.org>"
  # transport: smtp
  # host: smtp.example.org
  # port: 587
  # security: starttls          # starttls | ssl | none
  # username: litwatch
  # password: ${SMTP_PASSWORD}

# Corrections, retractions (with Retraction Watch's) and expressions of concern by DOI,
# from Crossref, for every stored paper and feed item with a DOI. Delete to go without.
crossref:
  email: you@example.org   # FILL IN your address: Crossref's polite pool
  every: 1d                     # stored DOIs are checked again once a day

# Sources of items, scanned with each query's `match`: RSS/Atom feeds, and the
# regulators' own data (kind openfda: Drugs@FDA; kind ema: EMA's medicines file).
feeds:
  - name: fda-press
    url: https://www.fda.gov/about-fda/contact-fda/stay-informed/rss-feeds/press-releases/rss.xml
    approvals: true             # its items that announce an approval are approvals
  - name: blood-toc
    url: https://ashpublications.org/rss/site_1000001/1000001.xml
  - name: fda-approvals
    kind: openfda               # Drugs@FDA: new applications and new indications
    api_key: ${OPENFDA_API_KEY:-} # optional: 120,000 requests a day instead of 1,000
    lookback_days: 30           # how far back the first poll reaches
  - name: ema-medicines
    kind: ema                   # EMA medicines data: positive CHMP opinions, EU authorisations
    stale_days: 14              # report the file stale when its dates stop moving this long
    lookback_days: 30
  - name: medrxiv-oncology
    kind: medrxiv               # medRxiv preprints, matched locally with `match`
    categories: [oncology, hematology]
    lookback_days: 14
  - name: biorxiv-cancer
    kind: biorxiv               # bioRxiv preprints
    categories: [cancer biology, immunology]
    lookback_days: 14

# A query has a PubMed search (`pubmed`), or feeds and a `match`, or both.
# `match`: AND, OR, NOT, "phrases", parentheses, a trailing * (agonist*); case-insensitive,
# on an item's title and summary.
queries:
  - name: my-trail-agonists
    pubmed: '(TRAIL[tiab] OR aponermin[tiab] OR "death receptor 5"[tiab] OR DR5[tiab] OR TNFSF10[tiab]) AND (agonist*[tiab] OR antibod*[tiab])'
    feeds: [fda-press, fda-approvals, ema-medicines, medrxiv-oncology, biorxiv-cancer]
    # Drugs@FDA items carry names and the pharmacologic class, not indications
    match: 'TRAIL OR aponermin OR Apo2L OR "death receptor 5" OR DR5 OR TNFSF10 OR "apoptosis-inducing ligand"'
    every: 6h                   # 30s, 15m, 6h, 1d; or cron: "0 */6 * * *"

  - name: my-multiple-myeloma
    pubmed: '"multiple myeloma"[mh] AND (therap*[tiab] OR trial[pt])'
    feeds: [fda-press, blood-toc, fda-approvals, ema-medicines, medrxiv-oncology, biorxiv-cancer]
    # EMA items name the therapeutic area; Drugs@FDA items only the drug, so the
    # myeloma drugs are named (not those with many generics, each an approval)
    match: >-
      myeloma OR daratumumab OR isatuximab OR elotuzumab OR carfilzomib OR ixazomib
      OR selinexor OR teclistamab OR elranatamab OR talquetamab OR linvoseltamab
      OR belantamab OR idecabtagene OR ciltacabtagene OR aponermin
    every: 12h

# Who gets mailed what, and when. Events: new, approval, erratum, retraction,
# concern, update (default: all).
digests:
  - name: weekly-myeloma
    to: [team@example.org]
    queries: [my-trail-agonists, my-multiple-myeloma]
    cron: "0 7 * * MON"         # in `timezone` below
    events: [new, approval, erratum, retraction, concern, update]
    max_items: 200              # per mail; the rest follows in further mails

  - name: safety-daily
    to: [pv@example.org]
    queries: [my-trail-agonists, my-multiple-myeloma]
    every: 1d
    events: [approval, erratum, retraction, concern]

timezone: Europe/Berlin         # for cron schedules; default UTC
"""  # noqa: E501 - the example's PubMed query stays on one line, as users write it


PLACEHOLDER = "you@example.org"


def placeholder_problems(text: str, source: str, sections: dict[str, str]) -> list[str]:
    """`file:line: key: …` for each contact address still the starter's placeholder.
    `sections`: {"pubmed": its email, "crossref": its email or ""}."""
    out: list[str] = []
    section = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.rstrip()[:-1].strip()
        elif section in sections and line.strip().startswith("email:") and PLACEHOLDER in line:
            if sections[section] == PLACEHOLDER:
                out.append(
                    f"{source}:{n}: {section}.email: {PLACEHOLDER} is the starter's placeholder; "
                    f"fill in your own address ({'NCBI' if section == 'pubmed' else 'Crossref'} asks for a contact)"
                )
    return out


def email_line() -> int:
    """The 1-based line of `pubmed.email` in STARTER: where the user fills in."""
    return email_lines()[0]


def email_lines() -> list[int]:
    """The 1-based lines of the contact addresses to fill in: pubmed.email, crossref.email."""
    return [n for n, line in enumerate(STARTER.splitlines(), 1) if line.startswith(EMAIL_KEY)]


def write_starter(path: Path) -> int:
    """Create `path` with STARTER; refuse if anything is there already. Returns the
    line of the contact address."""
    try:
        # "x": created here or not at all, so a file that appears meanwhile is not clobbered.
        with open(path, "x", encoding="utf-8") as f:
            f.write(STARTER)
    except FileExistsError:
        raise UsageError(f"{path} already exists; not overwriting it (remove it or give another PATH)") from None
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    return email_line()
