"""Plain-text reports for the terminal: `history` and `status`. Formatting only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import NoticeReport


def _value(v: Any, limit: int = 300) -> str:
    if v is None or v == "" or v == []:
        return "(none)"
    if isinstance(v, list):
        text = "; ".join(" ".join(map(str, x)) if isinstance(x, list) else str(x) for x in v)
    else:
        text = str(v)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_history(found: list[dict[str, Any]]) -> str:
    out = []
    for rec in found:
        out.append(f"{rec['source']} {rec['key']}: {len(rec['versions'])} version(s)")
        for v in rec["versions"]:
            title = v.fields.get("title", "")
            out.append(f"  v{v.n}  {v.fetched_at:%Y-%m-%d %H:%M:%S}Z  {_value(title, 90) if v.n == 1 else ''}".rstrip())
            for fname, old, new in v.changes:
                out.append(f"      {fname}: {_value(old)}")
                out.append(f"      {' ' * len(fname)}→ {_value(new)}")
        out += _notice_lines(rec.get("notices", []))
        out.append("")
    return "\n".join(out)


def _notice_lines(reports: list[NoticeReport]) -> list[str]:
    """Each notice once (one event, however many sources told us), then who reported it
    and when: "Retraction Watch (retraction) 2026-11-25 12:00:00Z"."""
    if not reports:
        return []
    from .notices import source_label  # only `history` needs it (it imports the Crossref parser)

    by: dict[str, list[NoticeReport]] = {}
    for r in reports:
        by.setdefault(r.dedup or f"{r.kind}:{r.ident}", []).append(r)
    out = [f"  notices: {len(by)}"]
    for group in by.values():
        first = group[0]
        names = [f"DOI {d}" for d in dict.fromkeys(r.notice_doi for r in group if r.notice_doi)]
        names += [f"PMID {k}" for k in dict.fromkeys(r.notice_key for r in group if r.notice_key)]
        issued = next((r.notice_date for r in group if r.notice_date), "")
        what = first.kind if first.kind != "other" else f"other ({first.type}: recorded, not mailed)"
        head = ", ".join([what, *names] + ([f"issued {issued}"] if issued else []))
        out.append(f"    {head}")
        for r in group:
            when = f"{r.reported_at:%Y-%m-%d %H:%M:%S}Z" if r.reported_at else ""
            out.append(f"      {source_label(r.source)} ({r.type or r.kind}) {when}".rstrip())
    return out


def _gaps(q: dict[str, Any]) -> list[str]:
    """A query's records missing from PubMed's answers and skipped days of modifications."""
    out = []
    if q.get("missing"):
        out.append(
            f"    {len(q['missing'])} record(s) missing from PubMed's answers since {q['missing_since']}, "
            f"asked for again at each poll: {', '.join(q['missing'])}"
        )
    if q.get("gave_up"):
        pmids = ", ".join(g["pmid"] for g in q["gave_up"])
        out.append(f"    gave up on {len(q['gave_up'])} record(s) PubMed never answered (deleted?): {pmids}")
    for o in q.get("skipped_modifications", []):
        out.append(f"    modifications skipped: {o['note']}")
    return out


def _retry(source: dict[str, Any]) -> str:
    """When `litwatch run` tries a failing feed or source again."""
    return f"; retry {source['next_retry']}" if source.get("next_retry") else ""


def format_status(st: dict[str, Any]) -> str:
    out = ["Queries:"]
    for q in st["queries"]:
        line = (
            f"  {q['name']}: last success {q['last_success'] or 'never'}, next {q['next_run'] or '-'}, "
            f"{q['records']} records"
        )
        out.append(line)
        if q["last_error"]:
            out.append(f"    failing since {q['failing_since']}: {q['last_error']}")
        out += _gaps(q)
    if st["feeds"]:
        out.append("Feeds:")
        for f in st["feeds"]:
            state = "DISABLED" if f["disabled"] else f"last success {f['last_success'] or 'never'}"
            out.append(f"  {f['name']}: {state}")
            if f["last_error"]:
                out.append(f"    failing since {f['failing_since']}: {f['last_error']}" + _retry(f))
            if f.get("stale"):
                out.append(f"    stale: {f['stale']}")
    if st.get("sources"):
        out.append("Sources:")
        for src in st["sources"]:
            line = f"  {src['name']}: last success {src['last_success'] or 'never'}"
            if src.get("last_recheck") is not None or src["name"] == "crossref":
                line += f", stored DOIs last re-checked {src.get('last_recheck') or 'never'}"
            out.append(line)
            if src["last_error"]:
                out.append(f"    failing since {src['failing_since']}: {src['last_error']}" + _retry(src))
            if src.get("recheck_note") and src.get("recheck_note") != src["last_error"]:
                out.append(f"    re-check: {src['recheck_note']}")
    out.append("Digests:")
    for d in st["digests"]:
        out.append(
            f"  {d['name']}: last sent {d['last_sent'] or 'never'}, {d['pending_events']} pending events, "
            f"next {d['next_run'] or '-'}" + (f", {d['failed_messages']} refused" if d["failed_messages"] else "")
        )
        if d.get("skipped_events"):
            out.append(
                f"    {d['skipped_events']} older events skipped (before a recipient's start, or beyond `backfill`)"
            )
    for u in st.get("unsubscribed", []):
        out.append(
            f"  unsubscribed since {u['since']}: {u['recipient']} from {u['digest']} (by {u['via']}); "
            f"litwatch resubscribe {u['recipient']} {u['digest']} undoes it"
        )
    box = st["outbox"]
    out.append(
        f"Outbox: {box['queued']} queued"
        + (f", oldest {box['oldest_queued']}" if box["oldest_queued"] else "")
        + (f", {box['sending']} being sent" if box.get("sending") else "")
        + (f", {box['failed']} refused" if box["failed"] else "")
    )
    for r in box.get("refused", []):
        out.append(
            f"  refused {r['refused_at']}: {r['digest']} → {r['recipient']}: {r['reply']} "
            f"({r['items']} items, {r['message_id']}); after the fix: litwatch digest --retry-failed {r['digest']}"
        )
    return "\n".join(out) + "\n"
