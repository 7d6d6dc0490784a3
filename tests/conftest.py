import os
import sys

# tests/reference.py (the independent oracle) is imported as a top-level module.
sys.path.insert(0, os.path.dirname(__file__))
# Studies train one trial at a time in the tests (and their worker processes), whatever a
# calibration would choose on this machine; tests of populations ask for one
# (tests/study/test_population.py), and a flag beats this variable.
os.environ["RELKD_POPULATION"] = "1"

import glob
import importlib.util
import itertools
import shutil
from pathlib import Path

import pytest

_databases = itertools.count()

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")

#: What some tests need from the machine: how to tell it is there, and how to get it. Locally a
#: missing component skips those tests (``-ra`` lists every skip in the summary); under CI
#: (``CI=true``, which .ci/run sets) it fails them, so a green CI run has run them all.
#: ``RELKD_TEST_HIDE=a,b`` makes components look missing (to test this very rule).
COMPONENTS = {
    "postgresql": (lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")),
                   "PostgreSQL server binaries (initdb): Debian's postgresql, which scripts/setup.sh installs"),
    "chromium": (lambda: bool(shutil.which("chromium") or shutil.which("chromium-browser")),
                 "headless Chromium: Debian's chromium, which scripts/setup.sh installs"),
    "fashion-mnist": (lambda: all((DEBIAN_FMNIST / f"{f}.gz").is_file() for f in FMNIST_FILES),
                      f"Fashion-MNIST in {DEBIAN_FMNIST}: Debian's dataset-fashion-mnist, which scripts/setup.sh "
                      f"installs"),
    "optuna-dashboard": (lambda: importlib.util.find_spec("optuna_dashboard") is not None,
                         "optuna-dashboard, in relkd's test extra (pip install -e '.[test]', which scripts/setup.sh "
                         "runs)"),
    "timm": (lambda: importlib.util.find_spec("timm") is not None,
             "timm, in relkd's test extra (pip install -e '.[test]', which scripts/setup.sh runs)"),
    "tensorboard": (lambda: importlib.util.find_spec("tensorboard") is not None,
                    "tensorboard, in relkd's test extra (pip install -e '.[test]', which scripts/setup.sh runs)"),
    "mlflow": (lambda: importlib.util.find_spec("mlflow") is not None,
               "mlflow (mlflow-skinny), in relkd's test extra (pip install -e '.[test]', which scripts/setup.sh runs)"),
    "optuna-cli": (lambda: Path(sys.executable).with_name("optuna").exists(),
                   "the optuna command beside this Python (installed with relkd's dependencies)"),
}


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _load_hypothesis_profile() -> None:
    """Hypothesis profiles: ``relkd-ci`` under CI (:func:`under_ci`) is derandomised (the same
    examples on every run and machine, found from each test's own seed), keeps no example
    database and prints the blob that reproduces a failure; ``relkd-local`` draws at random,
    as Hypothesis does by default. Neither has a deadline or the too-slow health check: both
    measure time, which a busy machine stretches. ``--hypothesis-profile`` still picks another.

    Loaded here, while conftest is imported, because a ``@settings(...)`` on a test takes the
    values it does not set from the profile loaded when the test module is imported."""
    from hypothesis import HealthCheck, settings

    base = settings.get_profile("default")  # not Hypothesis' own "ci", which it loads whenever CI is set at all
    timing = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("relkd-ci", base, derandomize=True, database=None, print_blob=True, **timing)
    settings.register_profile("relkd-local", base, **timing)
    settings.load_profile("relkd-ci" if under_ci() else "relkd-local")


_load_hypothesis_profile()


def require(component: str) -> None:
    """Skip (locally) or fail (under CI) the running test when ``component`` is missing."""
    available, how = COMPONENTS[component]
    hidden = {c.strip() for c in os.environ.get("RELKD_TEST_HIDE", "").split(",")}
    if component not in hidden and available():
        return
    message = f"{component} is missing: {how}"
    if under_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(component): the test needs a machine component "
                                       f"({', '.join(COMPONENTS)}); skipped without it, failed under CI=true")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        require(mark.args[0])
    if item.get_closest_marker("fmnist") is not None:
        require("fashion-mnist")


@pytest.fixture(scope="session")
def pg_server():
    """A throw-away PostgreSQL server for the whole session (tests/pg.py), stopped and removed
    afterwards, also when tests fail. Needs the server binaries (:func:`require`)."""
    import pg

    require("postgresql")
    server = pg.start()
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
