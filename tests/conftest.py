import os
import sys

# tests/reference.py (the independent oracle) is imported as a top-level module.
sys.path.insert(0, os.path.dirname(__file__))

import itertools

import pytest

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """A throw-away PostgreSQL server for the whole session (tests/pg.py), stopped and removed
    afterwards, also when tests fail. Skips only where no server binary exists."""
    import pg

    try:
        server = pg.start()
    except pg.NoServerBinaries as err:
        pytest.skip(str(err))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a new, empty database on the session's PostgreSQL server (with a password)."""
    return pg_server.create_database(f"relkd_test_{next(_databases)}")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Its own teacher cache and runs folder, no OPTUNA_STORAGE, an empty in-memory
    teacher-output cache and quiet Optuna; the test's folder. Study, compare and
    distributed tests use it for every test (``pytestmark``)."""
    import optuna

    from relkd.engine import TeacherOutputs

    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RELKD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    TeacherOutputs.clear()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return tmp_path
