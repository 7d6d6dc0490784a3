"""How relkd reaches a user: a wheel built from this tree installs into a clean virtual
environment and its ``relkd`` command runs there; ``scripts/setup.sh`` installs what its mode
needs (``main``: the main job, ``test``: the tests too) and never reinstalls what is current;
the command's log lines say when they were written."""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import relkd
from relkd.cli import main

ROOT = Path(__file__).resolve().parent.parent
#: The environment of every pip and relkd command here: no pip configuration (the machine's may
#: point --find-links or an index elsewhere; scripts/setup.sh does the same), nothing on the
#: path but what the virtual environment itself sees.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))} | {
    "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}


def _source_copy(dest: Path) -> Path:
    """The files a build reads (the top-level files and the package), copied so that the
    build's build/ and *.egg-info never land in the repository."""
    dest.mkdir()
    for path in ROOT.iterdir():
        if path.is_file():
            shutil.copy2(path, dest / path.name)
    shutil.copytree(ROOT / "relkd", dest / "relkd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _setuptools_builds_wheels() -> bool:
    """Whether this environment's setuptools builds a wheel without build isolation (>= 70.1
    has bdist_wheel built in; older ones need the wheel package)."""
    try:
        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    except Exception:
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        version("wheel")
        return major >= 64
    except Exception:
        return False


def _run(argv, *, cwd, timeout=300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, argv))}: exit {done.returncode}\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_installs_into_a_clean_venv_and_its_command_runs(tmp_path):
    """``pip install relkd-*.whl`` in a new virtual environment, then ``relkd list``. The
    environment sees this one's site-packages through a path line in a .pth file (so torch is
    not downloaded again), which does not run the .pth files inside it: the editable relkd
    of this checkout stays invisible, and pip, with no index at all, has to find every
    dependency of the wheel already installed."""
    started = time.monotonic()
    source = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    # Offline with this environment's setuptools (torch requires a recent one); else pip fetches one.
    isolation = ["--no-build-isolation"] if _setuptools_builds_wheels() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", dist, source], cwd=tmp_path)
    wheels = list(dist.glob("relkd-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert wheel.name.startswith(f"relkd-{relkd.__version__}-") and wheel.name.endswith("-py3-none-any.whl")

    # The wheel holds every module of the package (no package data: relkd reads no file of its own).
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
        entry_points = z.read(meta.replace("METADATA", "entry_points.txt")).decode()
    modules = {p.relative_to(source).as_posix() for p in (source / "relkd").rglob("*.py")}
    assert modules - names == set()
    assert {n for n in names if not n.startswith("relkd-")} == modules, "files in the wheel besides the modules"
    assert "relkd = relkd.cli:main" in entry_points
    for requirement in ("torch>=2.4", "optuna>=5", "matplotlib>=3.7"):
        assert f"Requires-Dist: {requirement}" in metadata
    assert "Provides-Extra: postgres" in metadata

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    assert site.is_relative_to(venv)
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "relkd_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    if not any(Path(relkd.__file__).is_relative_to(p) for p in ours):  # this checkout's relkd is editable
        seen = subprocess.run([python, "-c", "import relkd"], cwd=tmp_path, env=CLEAN_ENV, capture_output=True)
        assert seen.returncode != 0, "the clean venv sees the editable relkd"

    # pip is this environment's (seen through the .pth); it installs into the clean venv's prefix.
    _run([python, "-m", "pip", "install", "--no-index", wheel], cwd=tmp_path)
    where = _run([python, "-c", "import relkd; print(relkd.__file__); print(relkd.__version__)"], cwd=tmp_path)
    file, installed = where.stdout.split()
    assert Path(file).is_relative_to(site / "relkd") and installed == relkd.__version__

    command = venv / "bin" / "relkd"
    assert command.is_file()
    listed = _run([command, "list"], cwd=tmp_path).stdout
    for heading in ("affinities", "normalisations", "losses", "views", "features", "presets"):
        assert re.search(rf"^{heading} \(\d+\):$", listed, re.M), heading
    for name in relkd.list_affinities() + relkd.list_presets():
        assert name in listed
    assert _run([command, "--version"], cwd=tmp_path).stdout.strip() == f"relkd {relkd.__version__}"
    # Every module imports from the installed wheel alone.
    _run([python, "-c", "import importlib, pkgutil, relkd\n"
                        "for m in pkgutil.walk_packages(relkd.__path__, 'relkd.'): importlib.import_module(m.name)\n"
                        "assert all(m.__file__.startswith(relkd.__path__[0]) for n, m in __import__('sys').modules.items()"
                        " if n.startswith('relkd') and getattr(m, '__file__', None))"], cwd=tmp_path)
    print(f"wheel built, installed and run in {time.monotonic() - started:.1f} s")


# --- scripts/setup.sh: its modes and their stamps ---------------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
# A virtual environment's python that records what it is asked and does nothing.
echo "$*" >> "$RELKD_FAKE_LOG"
"""


@pytest.fixture
def fake_setup(tmp_path):
    """Run scripts/setup.sh against a fake virtual environment (its python records its
    arguments) and a fake apt-get and sudo (so that a missing Debian package is never installed here)."""
    venv, bin_dir, log = tmp_path / "venv", tmp_path / "bin", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    for path, text in ((venv / "bin" / "python", FAKE_PYTHON),
                       (bin_dir / "apt-get", '#!/usr/bin/env bash\necho "apt-get $*" >> "$RELKD_FAKE_LOG"\n'),
                       (bin_dir / "sudo", '#!/usr/bin/env bash\nwhile [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')):
        path.write_text(text)
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {
        "RELKD_VENV": str(venv), "RELKD_FAKE_LOG": str(log), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def setup(*args: str) -> tuple[int, list[str]]:
        log.write_text("")
        done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), *args], env=env, capture_output=True,
                              text=True, timeout=120)
        calls = log.read_text().splitlines()
        return done.returncode, [c for c in calls if "pip install" in c and "--upgrade pip" not in c]
    return setup


def test_setup_main_then_test_upgrades_and_test_then_main_reinstalls_nothing(fake_setup):
    code, installs = fake_setup("main")
    assert code == 0 and installs == [f"-m pip install -q -e {ROOT}"]
    assert fake_setup("main") == (0, [])
    code, installs = fake_setup("test")
    assert code == 0 and installs == [f"-m pip install -q -e {ROOT}[test]"]
    assert fake_setup("main") == (0, [])
    assert fake_setup() == (0, [])  # no argument: the test set-up, as before the modes
    assert fake_setup("test") == (0, [])


def test_setup_with_no_argument_installs_the_test_set_up(fake_setup):
    code, installs = fake_setup()
    assert code == 0 and installs == [f"-m pip install -q -e {ROOT}[test]"]
    assert fake_setup("main") == (0, [])


def test_setup_refuses_an_unknown_mode(fake_setup):
    assert fake_setup("everything")[0] == 2


def test_the_scripts_ask_for_their_mode():
    assert 'scripts/setup.sh" main' in (ROOT / "scripts" / "demo.sh").read_text()
    assert 'scripts/setup.sh" test' in (ROOT / "scripts" / "test.sh").read_text()


# --- the command's log lines --------------------------------------------------------------------

def test_a_cli_log_line_starts_with_its_date_and_time(capsys, monkeypatch):
    """``relkd`` configures logging once per process; pytest's own handlers are set aside here
    so that it does, as it would from the shell."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    # A layered preset for two models with different numbers of stages warns (relkd.presets).
    assert main(["show-config", "at", "--student", "cnn_tiny", "--teacher", "tv:resnet18"]) == 0
    for handler in root.handlers:
        handler.flush()
    lines = capsys.readouterr().err.splitlines()
    assert lines, "no log line"
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) WARNING relkd\.presets: preset at: ")
    matched = [stamp.match(line) for line in lines]
    assert all(matched), lines
    written = time.mktime(time.strptime(matched[0].group(1), "%Y-%m-%d %H:%M:%S"))
    assert abs(time.time() - written) < 600
