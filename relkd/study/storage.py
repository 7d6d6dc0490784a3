"""Where studies live: storage URLs, the default SQLite file, and password redaction.

The storage of a study is, in this order: the ``--storage`` flag, the ``OPTUNA_STORAGE``
environment variable, the study file's ``optuna.storage``, and by default SQLite at
``runs/<study>/optuna.db`` (``runs`` is ``$RELKD_RUNS_DIR`` when set). Any Optuna RDB URL
works (``postgresql+psycopg://user:pw@host/db``, ``mysql+pymysql://...``), and a journal
file as its plain path (``runs/s/journal.log``, as the ``optuna`` command and optuna-dashboard
take one; ``journal:PATH`` is accepted too). relkd prints and records a storage the way those
tools take it (:func:`tool_storage`): a journal file as its path, an RDB URL as it is. Journal
storages have no heartbeat: a trial whose worker died stays RUNNING. RDB storages get Optuna's
heartbeat: a trial whose worker died is marked failed and enqueued again.
"""
from __future__ import annotations

import logging
import os
import random
import re
import time
import warnings
from pathlib import Path

import optuna

from ..files import not_a_file

__all__ = ["runs_root", "run_dir", "resolve_storage", "open_storage", "redact", "is_rdb", "is_lost_race",
           "RACE_ERRORS", "tool_storage", "storage_file"]

log = logging.getLogger(__name__)

# A retried trial is re-run up to this many times before it stays failed.
MAX_RETRY = 3
# SQLite: wait this long for a lock held by another process instead of failing at once.
SQLITE_LOCK_TIMEOUT_S = 60
# Creating the tables: attempts before a database error is reported.
SCHEMA_ATTEMPTS = 5


def runs_root() -> Path:
    """``$RELKD_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("RELKD_RUNS_DIR") or "runs")


def run_dir(study_name: str, *, create: bool = True) -> Path:
    """The folder for a study's files (SQLite database, exports, confirm results)."""
    path = runs_root() / study_name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_storage(flag: str | None, study_name: str, from_file: str | None = None) -> str:
    """The storage URL for a study: flag, ``OPTUNA_STORAGE``, study file, default SQLite."""
    if flag is not None and not str(flag).strip():
        raise ValueError("storage: expected a storage URL such as sqlite:///runs/study.db, "
                         "postgresql+psycopg://user@host/db or journal:PATH, got ''")
    for url in (flag, os.environ.get("OPTUNA_STORAGE"), from_file):
        if url:
            return url
    return f"sqlite:///{(run_dir(study_name, create=False) / 'optuna.db').as_posix()}"


# user:password@ after a scheme (the password may hold '/', never '@' or blanks), and
# password=... as in libpq connection strings and URL queries
_PASSWORD = re.compile(r"(?P<head>://[^:/@\s]*:)(?P<password>[^@\s]*)(?P<tail>@)")
_PASSWORD_PARAM = re.compile(r"(?P<head>\bpassword=)(?P<password>[^&;\s'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace every password in ``text`` (of a URL, or a ``password=`` parameter) by ``***``."""
    text = _PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m['head']}***", text)


_SQLITE_HEADER = b"SQLite format 3\x00"


def _journal_path(url: str) -> str | None:
    """The journal file ``url`` names: ``journal:PATH``, or a plain path (no ``scheme://``), as
    Optuna's command line and optuna-dashboard read one; ``None`` for an RDB URL."""
    if url.startswith("journal:"):
        return url[len("journal:"):].removeprefix("//")
    if "://" not in url:
        return url
    return None


def _is_sqlite_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


def tool_storage(url: str) -> str:
    """``url`` as ``optuna --storage`` and ``optuna-dashboard`` take it, its password redacted:
    a journal file as its plain path, an RDB URL as it is."""
    journal = _journal_path(url)
    return journal if journal is not None else redact(url)


def is_rdb(url: str) -> bool:
    return _journal_path(url) is None


def _local_file(url: str) -> Path | None:
    """The file a journal or SQLite storage lives in (``None``: a server, or SQLite in memory)."""
    journal = _journal_path(url)
    if journal is not None:
        return Path(journal)
    if url.startswith("sqlite:"):
        database = url.split(":///", 1)[-1] if ":///" in url else ""
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database.split("?", 1)[0])
    return None


def storage_file(url: str) -> Path | None:
    """The file a journal or SQLite storage lives in; ``None`` for a database server (PostgreSQL,
    MySQL) or SQLite in memory."""
    return _local_file(url)


def open_storage(url: str, *, heartbeat_interval: int = 60, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; RDB storages get heartbeats (``heartbeat_interval``
    seconds, 0 for none) with failed trials retried up to :data:`MAX_RETRY` times.

    ``create=False`` is for commands that only read (status, export, plots, report): a
    journal or SQLite file that does not exist is an error, and nothing is created (no
    folder, no file); only commands that run trials create a storage."""
    local = _local_file(url)
    if local is not None:
        if create:
            local.parent.mkdir(parents=True, exist_ok=True)
        elif not_a_file(local):
            raise ValueError(f"storage {redact(url)}: {not_a_file(local)}; expected the storage a study was run "
                             f"with (relkd study run writes it)")
    journal = _journal_path(url)
    if journal is not None and _is_sqlite_file(Path(journal)):
        raise ValueError(f"storage {journal}: an SQLite database, not a journal file; give sqlite:///{journal}")
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(journal))
    engine_kwargs = {}
    if url.startswith("sqlite:"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_LOCK_TIMEOUT_S}
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        heartbeat: dict = {}
        if heartbeat_interval > 0:
            heartbeat = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": 2 * heartbeat_interval,
                "heartbeat_stale_trial_callback":
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
            }
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
            except (ImportError, ModuleNotFoundError) as err:
                raise ValueError(f"storage {redact(url)}: the database driver is not installed ({err})") from err
            except RuntimeError as err:  # e.g. Optuna's schema-version check
                raise ValueError(f"storage {redact(url)}: {redact(str(err))}") from err
            except Exception as err:
                if not type(err).__module__.startswith("sqlalchemy"):
                    raise
                # Workers that start together race to create the tables: the loser retries.
                if _is_race(err) and attempt + 1 < SCHEMA_ATTEMPTS:
                    log.info("storage %s: %s while creating the tables; retrying", redact(url), type(err).__name__)
                    time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                    continue
                raise ValueError(f"storage {redact(url)}: {type(err).__name__}: {redact(str(err))}") from err
    raise AssertionError("unreachable")  # pragma: no cover


# Errors that say the database cannot be reached at all: retrying would only delay the message.
_UNREACHABLE = ("connection failed", "could not connect", "can't connect", "unable to open database file",
                "authentication failed", "could not translate host name")


def _is_race(err: Exception) -> bool:
    """An error another process creating the same tables at the same moment can cause (not
    a database that cannot be reached)."""
    text = str(err).lower()
    return (type(err).__name__ in ("IntegrityError", "OperationalError", "ProgrammingError")
            and not any(marker in text for marker in _UNREACHABLE))


#: What a worker that lost a race for an enqueued trial may see (then :func:`is_lost_race` says).
RACE_ERRORS = (ValueError, optuna.exceptions.UpdateFinishedTrialError)


def is_lost_race(err: BaseException) -> bool:
    """Another worker finished the trial this one also ran. SQLite has no row locks, so two
    workers can take the same enqueued trial; the slower one's result is dropped, whether it
    notices when it tells the result (``Cannot tell a COMPLETE trial``) or earlier, when it
    writes an attribute of the trial the other one finished (``UpdateFinishedTrialError``)."""
    return (isinstance(err, ValueError) and str(err).startswith("Cannot tell a ")) or \
        isinstance(err, optuna.exceptions.UpdateFinishedTrialError)
