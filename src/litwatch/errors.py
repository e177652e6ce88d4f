"""The exception tree. Every expected failure is a `LitwatchError` with a message a
person can act on; `cli` alone turns them into one line on stderr and an exit code."""

from __future__ import annotations


class LitwatchError(Exception):
    """Base of every expected failure."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(LitwatchError):
    """One or more problems in the configuration; exit 2.

    ``problems`` holds one line per problem, each naming file, line and key path."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def config_problem(file: str, line: int | None, key: str, message: str) -> str:
    """Format one config problem as `file:line: key: message`."""
    where = f"{file}:{line}" if line else file
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


class SourceError(LitwatchError):
    """A source (E-utilities, a feed) failed: HTTP error, bad XML, time-out."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        self.url = url
        self.status = status
        super().__init__(message)


class ParseError(SourceError):
    """A response could not be parsed at all."""


class DeliveryError(LitwatchError):
    """Sending mail failed. ``permanent`` means retrying will not help (5xx); ``reply``
    is the server's own answer ("550 5.1.1 unknown user"), when it gave one."""

    def __init__(self, message: str, *, permanent: bool = False, reply: str | None = None) -> None:
        self.permanent = permanent
        self.reply = reply
        super().__init__(message)


class UsageError(LitwatchError):
    """Something the user asked for does not exist (unknown id, digest, query); exit 2."""

    exit_code = 2


class StoreError(LitwatchError):
    """The database cannot be used or refused a statement: unreachable, a schema newer
    than this litwatch, a value it will not store. The store raises it for every
    database error (SQLAlchemy's never leave `store/`); `orig` is the driver's own
    error when it wraps one (what `first_line` shows)."""

    exit_code = 2

    def __init__(self, message: str, *, orig: BaseException | None = None) -> None:
        super().__init__(message)
        self.orig = orig


class StoreConflict(StoreError):
    """Another writer got there first — a unique violation, a deadlock, a serialization
    failure, SQLite's busy lock: rerunning the transaction resolves it (`Store.write`
    does, a few times; the daemon reruns a task once)."""


def first_line(e: BaseException) -> str:
    """The first line of an error's message, for one-line reports; a database driver's
    own message (SQLAlchemy's `.orig`) without the SQL and parameters SQLAlchemy adds."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
