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
