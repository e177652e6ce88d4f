"""Mail delivery over real SMTP on loopback (aiosmtpd): plain, STARTTLS and implicit
TLS with a self-signed certificate made here, AUTH accepted and refused, a temporary
refusal of one recipient. What arrives is parsed with `email`; the outbox is read
from the database. Outages (451) and permanent refusals (550): test_digest.py."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from helpers import TODAY, Got, MailBox, SmtpServer, basic_config, invoke, smtp_mail
from helpers.fake_eutils import FakeEutils

PASSWORD = "pw-Zq8#not-for-logs"


# ----------------------------------------------------------------------------- server side


@dataclass
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost (the `cryptography` package)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "litwatch test SMTP")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("cert")
    (d / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Cert(d / "cert.pem", d / "key.pem")


# ----------------------------------------------------------------------------- client side


def seed(fake: FakeEutils) -> None:
    fake.add("201", terms="TRAIL", edat=TODAY, title="TRAIL agonists in the clinic")
    fake.add("202", terms={"TRAIL", "multiple myeloma"}, edat=TODAY, title="TRAIL and myeloma, with a résumé")


def config(
    tmp_path: Path, fake: FakeEutils, port: int, security: str, *, user: bool = False, to: str = "[team@example.org]"
) -> Path:
    auth = '  username: litwatch\n  password: "${SMTP_PASSWORD}"\n' if user else ""
    mail = smtp_mail(port, security=security, auth=auth, timeout=10)
    digests = f"digests:\n  - name: weekly\n    to: {to}\n    queries: [trail, myeloma]\n"
    return basic_config(tmp_path, fake.url, mail=mail, digests=digests)


def outbox(tmp_path: Path) -> list[Any]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'litwatch.db'}")
    with eng.connect() as c:
        rows = list(
            c.execute(
                sa.text("select recipient, message_id, state, attempts, last_error from outbox order by id")
            ).mappings()
        )
    eng.dispose()
    return rows


def digest(cfg: Path, **env: str) -> Any:
    return invoke("--config", str(cfg), "digest", env={"SMTP_PASSWORD": PASSWORD, **env})


def polled(tmp_path: Path, fake: FakeEutils, port: int, security: str, **kw: Any) -> Path:
    seed(fake)
    cfg = config(tmp_path, fake, port, security, **kw)
    r = invoke("--config", str(cfg), "poll", env={"SMTP_PASSWORD": PASSWORD})
    assert r.returncode == 0, r.stdout + r.stderr
    return cfg


def check_message(got: Got, recipient: str, message_id: str) -> None:
    m = got.msg
    assert got.rcpt_tos == [recipient] and m["To"] == recipient
    assert m["From"] == "litwatch <litwatch@example.org>"
    # a long Message-ID is folded onto its own line (RFC 5322 CFWS): compare it unfolded
    assert m["Message-ID"].strip() == message_id and message_id.endswith("@example.org>")
    assert abs(parsedate_to_datetime(m["Date"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert m["List-Id"] == "weekly <weekly.litwatch.example.org>"
    assert m["Auto-Submitted"] == "auto-generated"
    assert m.get_content_type() == "multipart/alternative"
    text = m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = m.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for pmid in ("201", "202"):
        assert f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/" in text and f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/" in html
    assert "TRAIL and myeloma, with a résumé" in text


# ----------------------------------------------------------------------------- tests


def test_plain_smtp_one_connection_headers_fixed_when_queued(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    box = MailBox()
    port = smtp_server(box).port
    cfg = polled(tmp_path, eutils, port, "none", to="[team@example.org, boss@example.org, x@example.org]")
    r = digest(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = outbox(tmp_path)
    assert [(row["state"], row["attempts"], row["last_error"]) for row in rows] == [("sent", 1, None)] * 3
    assert len(box.got) == 3 and len({g.peer for g in box.got}) == 1  # one connection for the run
    assert len({row["message_id"] for row in rows}) == 3
    for got, row in zip(box.got, rows, strict=True):
        check_message(got, row["recipient"], row["message_id"])
        assert not got.tls and not got.authenticated


def test_starttls_verifies_the_certificate(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer], cert: Cert
) -> None:
    box = MailBox()
    port = smtp_server(box, tls_context=cert.server_context(), require_starttls=True).port
    cfg = polled(tmp_path, eutils, port, "starttls")
    r = digest(cfg)  # the system trust store does not know the test's certificate
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stdout and "kept queued" in r.stdout
    assert "Traceback" not in r.stderr and box.got == []
    r = digest(cfg, SSL_CERT_FILE=str(cert.cert))  # honoured by ssl.create_default_context()
    assert r.returncode == 0, r.stdout + r.stderr
    rows = outbox(tmp_path)
    assert [(row["state"], row["attempts"]) for row in rows] == [("sent", 2)]
    assert len(box.got) == 1 and box.got[0].tls
    check_message(box.got[0], "team@example.org", rows[0]["message_id"])


def test_server_wanting_a_login_none_configured_stays_queued(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    """530 to MAIL FROM is a config problem, not a bad recipient: kept, not given up."""
    box = MailBox()
    port = smtp_server(box, auth_required=True).port
    cfg = polled(tmp_path, eutils, port, "none")
    r = digest(cfg)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "530" in r.stdout and "kept queued" in r.stdout and "mail.username" in r.stdout
    (row,) = outbox(tmp_path)
    assert box.got == [] and (row["state"], row["attempts"]) == ("queued", 1)


def test_implicit_tls(tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer], cert: Cert) -> None:
    box = MailBox()
    port = smtp_server(box, ssl_context=cert.server_context()).port
    cfg = polled(tmp_path, eutils, port, "ssl")
    r = digest(cfg, SSL_CERT_FILE=str(cert.cert))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = outbox(tmp_path)
    assert len(box.got) == 1 and box.got[0].tls
    check_message(box.got[0], "team@example.org", rows[0]["message_id"])


def test_auth_accepted(tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer], cert: Cert) -> None:
    box = MailBox()
    kw = {"tls_context": cert.server_context(), "require_starttls": True, "auth_required": True}
    port = smtp_server(box, authenticator=box.authenticator(True, b"litwatch", PASSWORD.encode()), **kw).port
    cfg = polled(tmp_path, eutils, port, "starttls", user=True)
    r = digest(cfg, SSL_CERT_FILE=str(cert.cert))
    assert r.returncode == 0, r.stdout + r.stderr
    assert box.logins == [(b"litwatch", PASSWORD.encode())]
    assert len(box.got) == 1 and box.got[0].tls and box.got[0].authenticated
    check_message(box.got[0], "team@example.org", outbox(tmp_path)[0]["message_id"])
    assert PASSWORD not in r.stdout + r.stderr


def test_auth_refused_one_line_without_the_password_stays_queued(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer], cert: Cert
) -> None:
    box = MailBox()
    kw = {"tls_context": cert.server_context(), "require_starttls": True, "auth_required": True}
    port = smtp_server(box, authenticator=box.authenticator(False, b"litwatch", PASSWORD.encode()), **kw).port
    cfg = polled(tmp_path, eutils, port, "starttls", user=True)
    r = digest(cfg, SSL_CERT_FILE=str(cert.cert))
    out = r.stdout + r.stderr
    assert r.returncode == 1 and box.got == [] and box.logins
    assert PASSWORD not in out and "Traceback" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "login refused" in lines[0] and "mail.username" in lines[0] and "mail.password" in lines[0]
    (row,) = outbox(tmp_path)
    assert row["state"] == "queued" and row["attempts"] == 1 and "login refused" in row["last_error"]
    assert PASSWORD not in row["last_error"]
    # the password fixed, the same message goes out
    box2 = MailBox()
    port2 = smtp_server(box2, authenticator=box2.authenticator(True, b"litwatch", PASSWORD.encode()), **kw).port
    cfg.write_text(cfg.read_text().replace(f"port: {port}", f"port: {port2}"))
    r = digest(cfg, SSL_CERT_FILE=str(cert.cert))
    assert r.returncode == 0, r.stdout + r.stderr
    assert [g.msg["Message-ID"].strip() for g in box2.got] == [row["message_id"]]


def test_temporary_refusal_of_one_recipient_does_not_hold_up_the_others(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    box = MailBox()
    box.refuse["team@example.org"] = "452 4.2.2 mailbox full"
    port = smtp_server(box).port
    cfg = polled(tmp_path, eutils, port, "none", to="[team@example.org, boss@example.org]")
    r = digest(cfg)
    assert r.returncode == 1 and "452" in r.stdout and "kept queued" in r.stdout
    assert [g.rcpt_tos for g in box.got] == [["boss@example.org"]]
    team, boss = outbox(tmp_path)
    assert (team["state"], team["attempts"], boss["state"]) == ("queued", 1, "sent")
    assert "452 4.2.2 mailbox full" in team["last_error"]
    del box.refuse["team@example.org"]
    r = digest(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [g.msg["Message-ID"].strip() for g in box.got] == [boss["message_id"], team["message_id"]]
    assert [row["state"] for row in outbox(tmp_path)] == ["sent", "sent"]


def test_one_connection_one_attempt_per_message_per_run(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    """Two digests, queued and new mail: one SMTP connection for the run; a message
    that fails is tried once per run, not again by the same run."""
    refusing = MailBox(fail_data="451 4.3.0 try again later")
    port = smtp_server(refusing).port
    cfg = polled(tmp_path, eutils, port, "none", to="[team@example.org, boss@example.org]")
    cfg.write_text(cfg.read_text() + "  - name: other\n    to: [x@example.org]\n    queries: [trail]\n")
    for run in (1, 2):
        r = digest(cfg)
        assert r.returncode == 1 and r.stdout.count("FAILED, kept queued") == 3, r.stdout
        rows = outbox(tmp_path)
        assert [(row["state"], row["attempts"]) for row in rows] == [("queued", run)] * 3
        assert len(refusing.tried) == 2 * run  # per digest, after a 451 the rest waits
    eutils.add("203", terms="TRAIL", edat=TODAY, title="Found while the server refused")
    box = MailBox()
    port2 = smtp_server(box).port
    cfg.write_text(cfg.read_text().replace(f"port: {port}", f"port: {port2}"))
    assert invoke("--config", str(cfg), "poll", env={"SMTP_PASSWORD": PASSWORD}).returncode == 0
    r = digest(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len({g.peer for g in box.got}) == 1, r.stdout  # one connection for both digests
    mids = [g.msg["Message-ID"].strip() for g in box.got]
    assert mids[:2] == [row["message_id"] for row in rows if row["recipient"] != "x@example.org"]
    assert len(mids) == 6 and len(set(mids)) == 6  # the 3 queued ones as they were, 3 new ones with 203


def test_backoff_is_respected_by_the_scheduler_path(
    tmp_path: Path, eutils: FakeEutils, smtp_server: Callable[..., SmtpServer]
) -> None:
    """`litwatch run` digests with respect_backoff: a message waiting for its retry
    time is not sent, and nothing newer is built for its recipient before it."""
    from litwatch.config import load
    from litwatch.service import Service

    refusing = MailBox(fail_data="421 4.3.2 busy")
    port = smtp_server(refusing).port
    cfg = polled(tmp_path, eutils, port, "none")
    assert digest(cfg).returncode == 1
    (row,) = outbox(tmp_path)
    assert row["attempts"] == 1
    eutils.add("203", terms="TRAIL", edat=TODAY, title="Found while the server refused")
    assert invoke("--config", str(cfg), "poll", env={"SMTP_PASSWORD": PASSWORD}).returncode == 0
    svc = Service(load(cfg, env={"SMTP_PASSWORD": PASSWORD}))
    try:
        svc.digest(respect_backoff=True)  # the retry is a minute away
    finally:
        svc.close()
    assert refusing.tried == [row["message_id"]]
    assert [(r["message_id"], r["attempts"]) for r in outbox(tmp_path)] == [(row["message_id"], 1)]


def test_a_server_that_never_answers_times_out(tmp_path: Path, eutils: FakeEutils) -> None:
    import socket

    with socket.socket() as listener:  # accepts (the kernel's backlog) and never says 220
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        cfg = polled(tmp_path, eutils, listener.getsockname()[1], "none")
        cfg.write_text(cfg.read_text().replace("  timeout: 10\n", "  timeout: 1\n"))
        r = digest(cfg)
    assert r.returncode == 1 and "timed out" in r.stdout and "kept queued" in r.stdout, r.stdout + r.stderr
    (row,) = outbox(tmp_path)
    assert (row["state"], row["attempts"]) == ("queued", 1) and "timed out" in row["last_error"]


def test_file_transport_writes_whole_files_and_leaves_no_half_file(tmp_path: Path) -> None:
    from litwatch.errors import DeliveryError
    from litwatch.mail import FileTransport

    box = tmp_path / "outbox"
    with FileTransport(box) as t:
        t.send(b"Subject: one\r\n\r\nbody\r\n", "a@example.org", "<1.abc@example.org>")
        t.send(b"Subject: one again\r\n\r\nbody\r\n", "a@example.org", "<1.abc@example.org>")  # a re-send
        (box / "2.abc@example.org.eml").mkdir()  # the rename onto it fails
        with pytest.raises(DeliveryError, match="cannot write .*2.abc@example.org.eml"):
            t.send(b"Subject: two\r\n\r\nbody\r\n", "a@example.org", "<2.abc@example.org>")
    assert sorted(p.name for p in box.iterdir()) == ["1.abc@example.org.eml", "2.abc@example.org.eml"]
    assert (box / "1.abc@example.org.eml").read_bytes().startswith(b"Subject: one again")
