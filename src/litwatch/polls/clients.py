"""The clients the pollers use, made from the config in one place: each source's retry
policy (`RetryPolicy`) and the request budgets every process on the database shares
(`coordination.RequestBudget`, `coordination.DailyRequests`; ARCHITECTURE.md rule 6).
Sources take these plain values; only this module reads their config sections."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from ..config import CrossrefSettings, FeedSettings, PubmedSettings, Settings
from ..coordination import DailyRequests, RequestBudget
from ..errors import UsageError
from ..sources.eutils import EutilsClient, EutilsSettings
from ..sources.http import RetryPolicy
from ..store.ports import ClaimsPort

if TYPE_CHECKING:
    from ..sources.crossref import CrossrefClient


class _Retries(Protocol):
    @property
    def retries(self) -> int: ...

    @property
    def backoff(self) -> float: ...

    @property
    def timeout(self) -> float: ...


def retry_policy(cfg: _Retries, *, deadline: float | None = None) -> RetryPolicy:
    """A config section's retries, back-off and time-out. `deadline`: the section's own
    (PubMed, Crossref), else four time-outs and at least two minutes (a feed)."""
    if deadline is None:
        deadline = max(120.0, 4 * cfg.timeout)
    return RetryPolicy(retries=cfg.retries, backoff=cfg.backoff, timeout=cfg.timeout, deadline=deadline)


def feed_policy(feed: FeedSettings) -> RetryPolicy | None:
    """A structured feed's (openfda, ema) retries and time-out when the config sets them;
    else None: the source's defaults (made for a large file, or openFDA's paging), not
    those of an RSS feed. An RSS feed always has the config's (`retry_policy`)."""
    if feed.kind == "rss" or {"timeout", "retries", "backoff"} & feed.model_fields_set:
        return retry_policy(feed)
    return None


def feed_max_bytes(feed: FeedSettings, default: int) -> int:
    """The feed's `max_mb` when the config sets it (always for RSS), else the source's."""
    return feed.max_mb * 1_000_000 if feed.kind == "rss" or "max_mb" in feed.model_fields_set else default


def eutils_settings(cfg: PubmedSettings) -> EutilsSettings:
    return EutilsSettings(
        base_url=cfg.base_url,
        tool=cfg.tool,
        email=cfg.email,
        api_key=cfg.api_key.get_secret_value() if cfg.api_key is not None else "",
        batch_size=cfg.batch_size,
        rate=cfg.rate,
        max_bytes=cfg.max_response_mb * 1_000_000,
        policy=retry_policy(cfg, deadline=cfg.deadline),
    )


def eutils_client(cfg: PubmedSettings, claims: ClaimsPort | None = None) -> EutilsClient:
    """The E-utilities client; with `claims`, NCBI's rate is shared with every process
    on that database, else kept by this process alone (`check --online`)."""
    host = urlsplit(cfg.base_url).netloc
    budget = RequestBudget(claims, f"eutils:{host}", cfg.rate) if claims is not None else None
    return EutilsClient(eutils_settings(cfg), limiter=budget)


def crossref_client(
    cfg: CrossrefSettings | None, claims: ClaimsPort | None = None, *, deadline: float | None = None
) -> CrossrefClient:
    """The Crossref client (`crossref:` configured): Crossref's own limits from its
    answers; with `claims`, its list route's pace shared with every process there."""
    from ..sources.crossref import CrossrefClient

    if cfg is None:
        raise UsageError("no `crossref:` section in the config")
    host = urlsplit(cfg.base_url).netloc
    return CrossrefClient(
        email=cfg.email,
        base_url=cfg.base_url,
        batch_size=cfg.batch_size,
        policy=retry_policy(cfg, deadline=cfg.deadline if deadline is None else deadline),
        max_bytes=cfg.max_response_mb * 1_000_000,
        budget=RequestBudget(claims, f"crossref:{host}", 1) if claims is not None else None,
    )


def preprint_budget(feed: FeedSettings, claims: ClaimsPort | None) -> RequestBudget | None:
    """The preprint server's pace (1 request a second per API host) kept in the database
    `claims`, shared by every process; None: this process's own."""
    if claims is None:
        return None
    from ..sources import biorxiv  # only where such a feed is polled (a first poll's fixed cost, #22)

    return RequestBudget(claims, f"preprints:{biorxiv.host(feed.url)}", biorxiv.PER_SECOND)


def contact(settings: Settings) -> str | None:
    """The address for a User-Agent: Crossref's polite-pool address, else PubMed's."""
    if settings.crossref is not None and settings.crossref.email:
        return settings.crossref.email
    return settings.pubmed.email or None


def openfda_budgets(feed: FeedSettings, claims: ClaimsPort | None) -> tuple[RequestBudget | None, DailyRequests | None]:
    """openFDA's rate (240 a minute) and day limit (1,000 without a key) kept in the
    database `claims`, shared by every process; (None, None): this process's own."""
    if claims is None:
        return None, None
    from ..sources import openfda  # only where such a feed is polled (a first poll's fixed cost, #22)

    key = feed.api_key.get_secret_value() if feed.api_key is not None else ""
    host = urlsplit(feed.url).netloc
    per_day = openfda.PER_DAY_WITH_KEY if key else openfda.PER_DAY_WITHOUT_KEY
    # a key's day belongs to the key, the keyless day to the address (one per host here)
    who = hashlib.sha256(key.encode()).hexdigest()[:12] if key else "no-key"
    return (
        RequestBudget(claims, f"openfda:{host}", openfda.PER_SECOND),
        DailyRequests(claims, f"openfda-day:{host}:{who}", per_day),
    )


__all__ = [
    "contact",
    "crossref_client",
    "eutils_client",
    "eutils_settings",
    "feed_max_bytes",
    "feed_policy",
    "openfda_budgets",
    "preprint_budget",
    "retry_policy",
]
