"""Load the YAML config: line numbers for every key, `${VAR}` interpolation, validation
into frozen pydantic models, and cross-references (digest → query, query → feed).

Every problem becomes one line `file:line: key.path: what is wrong` in a `ConfigError`;
all problems are collected, so `litwatch check` shows them at once."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError, config_problem
from .parse.biorxiv import CATEGORIES as PREPRINT_CATEGORIES
from .parse.biorxiv import normal_category
from .records import EVENT_KINDS

if TYPE_CHECKING:
    from .match import Matcher

DEFAULT_EUTILS = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
# Default URLs of the feed kinds that have one (kept equal to sources/openfda.py and
# sources/ema.py DEFAULT_URL; config does not import the HTTP layer).
DEFAULT_FEED_URLS = {
    "openfda": "https://api.fda.gov/drug/drugsfda.json",
    "ema": "https://www.ema.europa.eu/en/documents/report/medicines-output-medicines_json-report_en.json",
    "biorxiv": "https://api.biorxiv.org",  # sources/biorxiv.py DEFAULT_URL: one API for both servers
    "medrxiv": "https://api.biorxiv.org",
}
DEFAULT_STALE_DAYS = 14
DEFAULT_LOOKBACK_DAYS = 30
DEFAULT_CROSSREF = "https://api.crossref.org/"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_EVERY = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ADDRESS = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\".]+$|^[^@\s<>\"]+@localhost$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------- values


def parse_every(value: str) -> timedelta:
    """`30s`, `15m`, `6h`, `1d`, `2w` → timedelta."""
    m = _EVERY.match(str(value))
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{value!r} is not an interval; use a number and a unit: 30s, 15m, 6h, 1d")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def check_cron(value: str, timezone: str = "UTC") -> str:
    from .crontab import triggers

    try:
        triggers(value, ZoneInfo(timezone))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday): {e}") from e
    return value


def check_header(value: str) -> str:
    """A value that goes into a mail header: no line break (CR, LF) and no NUL, which
    the mail library refuses when the digest is built (or, worse, a header injected)."""
    bad = next((c for c in ("\r", "\n", "\0") if c in value), None)
    if bad is not None:
        raise ValueError(f"{value!r} contains {_CONTROL[bad]}; a mail header must be one line without it")
    return value


_CONTROL = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\0": "a NUL character"}


def check_address(value: str) -> str:
    from email.utils import parseaddr

    check_header(value)

    _name, addr = parseaddr(value)
    if not addr or not _ADDRESS.match(addr) or (addr != value.strip() and "<" not in value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


# --------------------------------------------------------------------------- models


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Schedule(_Frozen):
    every: str | None = None
    cron: str | None = None

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        if v is not None:
            parse_every(v)
        return v

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if self.every is not None and self.cron is not None:
            raise ValueError("give either `every` or `cron`, not both")
        return self

    @property
    def interval(self) -> timedelta | None:
        return parse_every(self.every) if self.every else None


class PubmedSettings(_Frozen):
    base_url: str = DEFAULT_EUTILS
    email: str | None = None
    tool: str = "litwatch"
    api_key: SecretStr | None = None
    first_lookback_days: int = Field(30, ge=0, le=36500)
    batch_size: int = Field(500, ge=1, le=10000)
    timeout: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)
    deadline: float = Field(900.0, gt=0)
    max_response_mb: int = Field(64, ge=1)
    notices: bool = True  # look for errata/retraction/concern notices of stored records

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return check_address(v) if v is not None else v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v if v.endswith("/") else v + "/"

    @property
    def rate(self) -> int:
        """NCBI: 3 requests/s, 10 with an API key."""
        return 10 if self.api_key and self.api_key.get_secret_value() else 3


class CrossrefSettings(_Frozen):
    """`crossref:`: corrections, retractions and concerns by DOI (with Retraction Watch).
    The section's presence turns the source on; `email` puts litwatch in Crossref's
    polite pool (`mailto=` and the User-Agent)."""

    email: str
    base_url: str = DEFAULT_CROSSREF
    every: str = "1d"  # how often stored DOIs are checked again
    batch_size: int = Field(50, ge=1, le=100)  # DOIs per request (`filter=doi:A,doi:B,…`)
    timeout: float = Field(60.0, gt=0)
    retries: int = Field(4, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)
    deadline: float = Field(900.0, gt=0)
    max_response_mb: int = Field(64, ge=1)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return check_address(v)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v if v.endswith("/") else v + "/"

    @field_validator("every")
    @classmethod
    def _every(cls, v: str) -> str:
        parse_every(v)
        return v

    @property
    def interval(self) -> timedelta:
        return parse_every(self.every)


class MailSettings(_Frozen):
    transport: Literal["smtp", "file"] = "file"
    host: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field("litwatch <litwatch@localhost>", alias="from")
    directory: str = "outbox"
    timeout: float = Field(30.0, gt=0)
    list_id: str | None = None

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        return check_address(v)

    @field_validator("list_id")
    @classmethod
    def _list_id(cls, v: str | None) -> str | None:
        return check_header(v) if v is not None else v

    @model_validator(mode="after")
    def _host(self) -> MailSettings:
        if self.transport == "smtp" and not self.host:
            raise ValueError("transport smtp needs `host`")
        return self

    @property
    def smtp_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587, "none": 25}[self.security]


class FeedSettings(_Frozen):
    """One source of items. `kind` rss (default) is an RSS/Atom/RDF feed; openfda is
    Drugs@FDA through openFDA; ema is EMA's medicines data file (issue 17). The last
    two have a default `url`; `api_key` belongs to openfda, `stale_days` to ema."""

    name: str
    kind: Literal["rss", "openfda", "ema", "biorxiv", "medrxiv"] = "rss"
    url: str
    approvals: bool = False
    api_key: SecretStr | None = None  # openfda: 120,000 requests a day instead of 1,000
    stale_days: int | None = Field(None, ge=1, le=3650)  # ema: report the file stale after this many days
    lookback_days: int | None = Field(None, ge=0, le=36500)  # openfda, ema, preprints: the first poll's reach
    categories: tuple[str, ...] = ()  # biorxiv, medrxiv: the server's subject categories (default: all)
    timeout: float = Field(30.0, gt=0)
    max_mb: int = Field(20, ge=1)
    retries: int = Field(3, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _default_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" not in data and data.get("kind", "rss") != "rss":
            # An unknown kind is reported on its own; a second error about `url` would
            # only mislead, so it gets a placeholder that is never used.
            data = {**data, "url": DEFAULT_FEED_URLS.get(str(data["kind"]), "https://unknown-kind.invalid/")}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @field_validator("approvals")
    @classmethod
    def _approvals(cls, v: bool, info: ValidationInfo) -> bool:
        kind = info.data.get("kind")  # None: the kind itself was wrong, and is reported
        if v and kind not in ("rss", None):
            raise ValueError(
                f"`approvals` is for feeds of kind rss; every item of a {kind} feed is an approval already"
            )
        return v

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        kind = info.data.get("kind")
        if v is not None and kind not in ("openfda", None):
            raise ValueError(f"`api_key` is for feeds of kind openfda, not {kind}")
        return v

    @field_validator("stale_days")
    @classmethod
    def _stale_days(cls, v: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("kind")
        if v is not None and kind not in ("ema", None):
            raise ValueError(f"`stale_days` is for feeds of kind ema, not {kind}")
        return v

    @field_validator("lookback_days")
    @classmethod
    def _lookback_days(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("kind") == "rss":
            raise ValueError("`lookback_days` is for feeds of kind openfda, ema, biorxiv or medrxiv, not rss")
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        kind = info.data.get("kind")
        if not v or kind is None:
            return v
        if kind not in PREPRINT_CATEGORIES:
            raise ValueError(f"`categories` is for feeds of kind biorxiv or medrxiv, not {kind}")
        # the server answers every category for one it does not know: say so here
        known = PREPRINT_CATEGORIES[kind]
        for c in v:
            if normal_category(c) not in known:
                raise ValueError(
                    f"{c!r} is not a {kind} category{_near(normal_category(c), sorted(known))} "
                    f"(the server would silently answer every category)"
                )
        return tuple(dict.fromkeys(normal_category(c) for c in v))

    @property
    def first_lookback_days(self) -> int:
        """openfda, ema: how many days back the first poll of the feed reaches."""
        return self.lookback_days if self.lookback_days is not None else DEFAULT_LOOKBACK_DAYS

    @property
    def stale_after_days(self) -> int:
        """ema: after how many days without a moving last_updated_date the file is stale."""
        return self.stale_days if self.stale_days is not None else DEFAULT_STALE_DAYS

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)


class QuerySettings(Schedule):
    name: str
    pubmed: str | None = None
    feeds: tuple[str, ...] = ()
    match: str | None = None
    _matcher: Matcher | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("pubmed")
    @classmethod
    def _pubmed(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty")
        return v

    @field_validator("match")
    @classmethod
    def _match(cls, v: str | None) -> str | None:
        if v is not None:
            from .match import compile_match  # the match language is only loaded when used

            compile_match(v)
        return v

    @model_validator(mode="after")
    def _sources(self) -> QuerySettings:
        if not self.pubmed and not (self.feeds and self.match):
            raise ValueError("a query needs `pubmed`, or `feeds` with `match`, or both")
        if self.feeds and not self.match:
            raise ValueError("`feeds` needs `match` (the words to look for in feed entries)")
        if self.match is not None:
            from .match import compile_match

            object.__setattr__(self, "_matcher", compile_match(self.match))
        return self

    @property
    def matcher(self) -> Matcher | None:
        return self._matcher

    @property
    def interval(self) -> timedelta | None:
        if self.every is None and self.cron is None:
            return timedelta(hours=24)
        return super().interval


class DigestSettings(Schedule):
    name: str
    to: tuple[str, ...]
    queries: tuple[str, ...]
    events: tuple[Literal["new", "approval", "erratum", "retraction", "concern", "update"], ...] = EVENT_KINDS  # type: ignore[assignment]
    max_items: int = Field(200, ge=1, le=100000)
    subject: str | None = None  # optional prefix; default: the digest's name
    backfill: str = "30d"  # a new digest's first mail reaches back at most this far (`every` syntax)

    @field_validator("backfill")
    @classmethod
    def _backfill(cls, v: str) -> str:
        parse_every(v)
        return v

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str | None) -> str | None:
        return check_header(v) if v is not None else v

    @property
    def backfill_window(self) -> timedelta:
        return parse_every(self.backfill)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("to")
    @classmethod
    def _to(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one address")
        for a in v:
            check_address(a)
        return v

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one query")
        return v


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class WebSettings(_Frozen):
    """`web:`: the web view, /healthz and /metrics on one server, and one-click
    unsubscribe links in mail (issue 26)."""

    port: int | None = Field(None, ge=0, le=65535)  # `run` serves the web view when set
    bind: str = "127.0.0.1"
    base_url: str | None = None  # where readers reach it: links in mail
    password: SecretStr | None = None  # HTTP basic auth for the pages
    auth: Literal["password", "proxy", "none"] | None = None  # default: password if set, else none
    secret: SecretStr | None = None  # signs unsubscribe tokens; else $LITWATCH_SECRET

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL (e.g. https://litwatch.example.org/)")
        return v if v.endswith("/") else v + "/"

    @model_validator(mode="after")
    def _safe(self) -> WebSettings:
        if self.auth == "password" and self.password is None:
            raise ValueError("auth: password needs `password`")
        if self.bind not in _LOOPBACK and self.auth_mode == "none":
            raise ValueError(
                f"bind {self.bind} is reachable from other hosts: set `password` (HTTP basic auth) "
                "or `auth: proxy` (a reverse proxy authenticates)"
            )
        if self.secret is not None and len(self.secret.get_secret_value()) < 16:
            raise ValueError("secret needs at least 16 characters (it signs unsubscribe links)")
        if self.base_url and self.secret is None and len(os.environ.get("LITWATCH_SECRET", "")) < 16:
            raise ValueError(
                "base_url puts unsubscribe links in mail: set `secret` (or $LITWATCH_SECRET), 16+ characters"
            )
        return self

    @property
    def auth_mode(self) -> str:
        return self.auth or ("password" if self.password is not None else "none")


class Settings(_Frozen):
    database: str = "sqlite:///litwatch.db"
    pubmed: PubmedSettings = PubmedSettings()
    mail: MailSettings = MailSettings()
    feeds: tuple[FeedSettings, ...] = ()
    crossref: CrossrefSettings | None = None
    queries: tuple[QuerySettings, ...] = ()
    digests: tuple[DigestSettings, ...] = ()
    timezone: str = "UTC"
    templates: str | None = None
    health_port: int | None = Field(None, ge=1, le=65535)
    health_bind: str = "127.0.0.1"  # the address health_port listens on; 0.0.0.0 in a container
    web: WebSettings | None = None
    source: str = Field("", exclude=True)  # the file it came from; set by load()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"{v!r} is not a time zone name (e.g. UTC, Europe/Berlin)") from e
        return v

    @field_validator("database")
    @classmethod
    def _db(cls, v: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError(
                f"{_redact_url(v)!r} is not a database URL: use sqlite:///file.db or postgresql+psycopg://user@host/db"
            )
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        if v.startswith("postgresql"):
            from importlib.util import find_spec

            if find_spec("psycopg") is None:
                raise ValueError("PostgreSQL needs the postgresql extra: pip install 'litwatch[postgresql]'")
        return v

    def query(self, name: str) -> QuerySettings:
        for q in self.queries:
            if q.name == name:
                return q
        raise KeyError(name)

    def digest(self, name: str) -> DigestSettings:
        for d in self.digests:
            if d.name == name:
                return d
        raise KeyError(name)

    def feed(self, name: str) -> FeedSettings:
        for f in self.feeds:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def template_dir(self) -> Path | None:
        if not self.templates:
            return None
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / self.templates).resolve()


def _check_name(v: str) -> str:
    if not _NAME.match(v):
        raise ValueError(f"{v!r}: names use letters, digits, '-', '_' and '.'")
    return v


def _redact_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


# --------------------------------------------------------------------------- YAML with lines


class _Lines:
    """Key path → 1-based line, filled while converting the YAML node tree."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.values = 0  # nodes converted so far: aliases can make a small file expand without end

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


_MAX_VALUES = 100_000  # a real config has hundreds
_MAX_DEPTH = 32


class _TooBig(Exception):
    pass


def _convert(node: yaml.Node, path: Path_, lines: _Lines, env: dict[str, str], problems: list[str], file: str) -> Any:
    lines.values += 1
    if lines.values > _MAX_VALUES or len(path) > _MAX_DEPTH:
        # nested aliases (a "billion laughs") or an alias that contains itself
        raise _TooBig(
            config_problem(
                file,
                node.start_mark.line + 1,
                _dotted(path[:3]),
                f"the config expands to more than {_MAX_VALUES:,} values or {_MAX_DEPTH} levels; "
                "are YAML aliases (*name) nested or recursive?",
            )
        )
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            sub = (*path, key)
            if key in out:
                problems.append(config_problem(file, key_node.start_mark.line + 1, _dotted(sub), "duplicate key"))
            lines.lines[sub] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, sub, lines, env, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, (*path, i), lines, env, problems, file) for i, v in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    value = yaml.SafeLoader("").construct_object(node)
    if isinstance(value, str):
        value = _interpolate(value, node.start_mark.line + 1, path, env, problems, file)
    return value


def _interpolate(value: str, line: int, path: Path_, env: dict[str, str], problems: list[str], file: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(config_problem(file, line, _dotted(path), f"environment variable {name} is not set"))
        return ""

    return _VAR.sub(sub, value)


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# --------------------------------------------------------------------------- loading


def find_config(explicit: str | None) -> Path:
    """`--config` > `$LITWATCH_CONFIG` > `./litwatch.yaml`."""
    if explicit:
        return Path(explicit)
    if os.environ.get("LITWATCH_CONFIG"):
        return Path(os.environ["LITWATCH_CONFIG"])
    return Path("litwatch.yaml")


def load(path: str | Path, env: dict[str, str] | None = None) -> Settings:
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{file}: config file not found (give --config FILE, set LITWATCH_CONFIG, or create ./litwatch.yaml)"]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{file}: cannot read config: {e}"]) from None
    return loads(text, file, os.environ if env is None else env)


def loads(text: str, file: str = "<config>", env: Any = None) -> Settings:
    env = dict(os.environ if env is None else env)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([config_problem(file, line, "", f"YAML syntax error: {e.problem or e}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([config_problem(file, None, "", f"YAML error: {e}")]) from None
    problems: list[str] = []
    lines = _Lines()
    if root is None:
        data: Any = {}
    else:
        try:
            data = _convert(root, (), lines, env, problems, file)
        except _TooBig as e:
            raise ConfigError([str(e)]) from None
        except yaml.YAMLError as e:
            raise ConfigError([config_problem(file, None, "", f"YAML error: {e}")]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [config_problem(file, 1, "", "the config must be a mapping of keys (database, pubmed, queries, ...)")]
        )
    if problems:
        raise ConfigError(problems)
    try:
        settings = Settings.model_validate({**data, "source": file})
    except ValidationError as e:
        # every problem at once: the names that refer to nothing too, read from the raw data
        found = list(_pydantic_problems(e, lines, file, data))
        raise ConfigError(found + [x for x in _raw_references(data, lines, file) if x not in found]) from None
    problems = list(_cross_checks(settings, lines, file))
    if problems:
        raise ConfigError(problems)
    return settings


def _pydantic_problems(err: ValidationError, lines: _Lines, file: str, data: dict[str, Any]) -> Iterator[str]:
    seen: set[str] = set()
    for e in err.errors():
        loc: Path_ = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc = tuple("from" if p == "from_" else p for p in loc)
        msg = e["msg"]
        ctx = e.get("ctx") or {}
        inner = ctx.get("error")
        if type(inner).__name__ == "MatchSyntaxError":
            msg = f"syntax error at column {inner.column}: {inner.message}"  # type: ignore[union-attr]
        elif isinstance(inner, Exception):
            msg = str(inner)
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            key = str(loc[-1])
            msg = f"unknown key {key!r}"
            near = difflib.get_close_matches(key, _allowed_keys(loc[:-1], data), n=1, cutoff=0.6)
            if near:
                msg += f"; did you mean {near[0]!r}?"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "literal_error":
            msg = f"{e.get('input')!r} is not one of: {ctx.get('expected', '')}"
        line = f"{file}:{lines.line(loc) or '?'}: {_dotted(loc) or '(top)'}: {msg}"
        if line not in seen:
            seen.add(line)
            yield line


def _allowed_keys(loc: Path_, data: dict[str, Any]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        target = getattr(ann, "__args__", (ann,))
        found = next((t for t in target if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if found is None:
            return []
        model = found
    return [f.alias or name for name, f in model.model_fields.items() if name != "source"]


def _cross_checks(s: Settings, lines: _Lines, file: str) -> Iterator[str]:
    def p(path: Path_, msg: str) -> str:
        return config_problem(file, lines.line(path), _dotted(path), msg)

    for section in ("feeds", "queries", "digests"):
        names: set[str] = set()
        for i, item in enumerate(getattr(s, section)):
            if item.name in names:
                yield p((section, i, "name"), f"duplicate name {item.name!r}")
            names.add(item.name)
    feed_names = [f.name for f in s.feeds]
    query_names = [q.name for q in s.queries]
    for i, q in enumerate(s.queries):
        for j, f in enumerate(q.feeds):
            if f not in feed_names:
                yield p(("queries", i, "feeds", j), f"unknown feed {f!r}{_near(f, feed_names)}")
        if q.cron:
            try:
                check_cron(q.cron, s.timezone)
            except ValueError as e:
                yield p(("queries", i, "cron"), str(e))
    if any(q.pubmed for q in s.queries) and not s.pubmed.email:
        yield p(("pubmed",), "`email` is required for PubMed queries (NCBI asks every tool for a contact address)")
    for i, d in enumerate(s.digests):
        for j, qn in enumerate(d.queries):
            if qn not in query_names:
                yield p(("digests", i, "queries", j), f"unknown query {qn!r}{_near(qn, query_names)}")
        if d.cron:
            try:
                check_cron(d.cron, s.timezone)
            except ValueError as e:
                yield p(("digests", i, "cron"), str(e))
    if s.templates and s.template_dir and not s.template_dir.is_dir():
        yield p(("templates",), f"{s.templates!r} is not a directory")


def _raw_references(data: dict[str, Any], lines: _Lines, file: str) -> Iterator[str]:
    """The reference checks of `_cross_checks` (unknown feeds and queries, duplicate
    names) on the raw config, when its fields do not validate: so that a user sees
    every mistake in one `check`, not the references after the fields are mended."""

    def p(path: Path_, msg: str) -> str:
        return config_problem(file, lines.line(path), _dotted(path), msg)

    def items(section: str) -> list[Any]:
        got = data.get(section)
        return got if isinstance(got, list) else []

    def names(section: str) -> list[str]:
        return [str(x["name"]) for x in items(section) if isinstance(x, dict) and isinstance(x.get("name"), str)]

    for section in ("feeds", "queries", "digests"):
        seen: set[str] = set()
        for i, item in enumerate(items(section)):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name in seen:
                yield p((section, i, "name"), f"duplicate name {name!r}")
            if isinstance(name, str):
                seen.add(name)
    for section, key, known, what in (
        ("queries", "feeds", names("feeds"), "feed"),
        ("digests", "queries", names("queries"), "query"),
    ):
        for i, item in enumerate(items(section)):
            refs = item.get(key) if isinstance(item, dict) else None
            for j, ref in enumerate(refs if isinstance(refs, list) else []):
                if isinstance(ref, str) and ref not in known:
                    yield p((section, i, key, j), f"unknown {what} {ref!r}{_near(ref, known)}")


def _near(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""
