"""What tests share that is not a fixture: fakes of the services litwatch talks to
(fake_eutils, fake_crossref, fake_openfda, feedhost), the one SMTP server (smtp),
config files (config), a poll's fetches moved back a day (days), running the CLI (cli) and the daemon (daemon), PostgreSQL
schemas (pg) and waiting on a condition (wait). Fixtures are in tests/conftest.py.

Import the fakes by module (`from helpers.fake_eutils import FakeEutils`) and the
rest from here (`from helpers import TODAY, basic_config, invoke`)."""

from .cli import invoke, run_cli
from .config import SHARED_DATA, TODAY, basic_config, smtp_mail, write_config
from .daemon import Run, daemon_env
from .days import fetched_yesterday
from .net import free_port
from .pg import PG_URL, pg_schema_url
from .smtp import Got, MailBox, SlowBox, SmtpServer, serve_slow, serve_smtp, smtp_port
from .wait import wait_for

__all__ = [
    "PG_URL",
    "SHARED_DATA",
    "TODAY",
    "Got",
    "MailBox",
    "Run",
    "SlowBox",
    "SmtpServer",
    "basic_config",
    "daemon_env",
    "fetched_yesterday",
    "free_port",
    "invoke",
    "pg_schema_url",
    "run_cli",
    "serve_slow",
    "serve_smtp",
    "smtp_mail",
    "smtp_port",
    "wait_for",
    "write_config",
]
