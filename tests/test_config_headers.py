"""`check` catches every value that would fail later (issue 24): a mail header value
(digest subject, mail.from, mail.list_id, a recipient) with CR, LF or NUL names file,
line and key; a digest that fails to build anyway is that digest's failure, never the
end of the run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from helpers import TODAY, basic_config, invoke
from helpers.fake_eutils import FakeEutils
from litwatch.config import load
from litwatch.service import Service
from test_config import GOOD

MAILED = GOOD.replace(
    '  from: "litwatch <lw@example.org>"\n', '  from: "litwatch <lw@example.org>"\n  list_id: "lw <lw.example.org>"\n'
).replace('    cron: "0 7 * * MON"\n', '    cron: "0 7 * * MON"\n    subject: "Weekly"\n')


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ('    subject: "Weekly"', '    subject: "Weekly\\r\\nBcc: x@example.org"', "cfg.yaml:30: digests[0].subject:"),
        ('    subject: "Weekly"', '    subject: "Weekly\\nnews"', "cfg.yaml:30: digests[0].subject:"),
        ('    subject: "Weekly"', '    subject: "Week\\0ly"', "cfg.yaml:30: digests[0].subject:"),
        ('  from: "litwatch <lw@example.org>"', '  from: "lit\\r\\nwatch <lw@example.org>"', "cfg.yaml:10: mail.from:"),
        ('  list_id: "lw <lw.example.org>"', '  list_id: "lw\\n <lw.example.org>"', "cfg.yaml:11: mail.list_id:"),
        (
            "    to: [team@example.org]",
            '    to: ["Team\\r\\nBcc: x <team@example.org>"]',
            "cfg.yaml:27: digests[0].to:",
        ),
    ],
)
def test_check_refuses_a_header_value_with_a_line_break_or_nul(tmp_path: Path, old: str, new: str, where: str) -> None:
    assert old in MAILED
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(MAILED.replace(old, new))
    r = invoke("--config", str(cfg), "check")
    print(r.stderr.strip())
    assert r.returncode == 2, r.stdout
    (line,) = [x for x in r.stderr.splitlines() if "mail header" in x]
    assert line.startswith(f"{cfg.parent}/{where}"), line
    assert "Traceback" not in r.stderr


def test_a_digest_that_fails_to_build_is_its_own_failure_and_the_next_is_sent(
    tmp_path: Path, eutils: FakeEutils, store_url: str
) -> None:
    eutils.add("1", terms="TRAIL", edat=TODAY - timedelta(days=1), title="A TRAIL paper")
    digests = (
        "\ndigests:\n  - name: broken\n    to: [a@example.org]\n    queries: [trail]\n"
        "  - name: fine\n    to: [b@example.org]\n    queries: [trail]\n"
    )
    settings = load(basic_config(tmp_path, eutils.url, db=store_url, digests=digests))
    # a value the mail library refuses that `check` did not see (as a subject with a
    # line break was, before): the first digest cannot be built
    broken = settings.digests[0].model_copy(update={"subject": "Weekly\nnews"})
    settings = settings.model_copy(update={"digests": (broken, settings.digests[1])})
    svc = Service(settings)
    try:
        assert all(r.ok for r in svc.poll())
        results = svc.digest()
        lines = [r.line() for r in results]
        print("\n".join(lines))
        assert any(r.name == "broken" and r.error and "could not be built" in r.line() for r in results), lines
        assert any(r.name == "fine" and r.sent for r in results), lines
        assert len(list((tmp_path / "outbox").iterdir())) == 1
        assert svc.status()["digests"][0]["pending_events"] == 1  # the broken digest's events wait
    finally:
        svc.close()
