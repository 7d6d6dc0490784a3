"""docs/architecture.md's "Where to add …", checked: on a copy of the code, a throw-away affinity,
plot and dataset are each added the way the page says (one decorated function; one module and
its import line), and the suite's contract tests, which iterate the registries, run over them
unchanged. A new search field is checked in tests/study/test_space.py
(``test_one_new_dimension_reaches_...``): one entry of the table reaches validation, drawing, the
inverse, the grid, the description and the analysis' groups."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

AFFINITY = '''

@AFFINITIES.register("probe_gaussian", nonnegative=True, symmetric=True, order=2, range="(0, 1]")
def probe_gaussian(x: torch.Tensor) -> torch.Tensor:
    """A throw-away affinity (tests/contracts/test_extension.py): A_ij = exp(-||x_i - x_j||^2 / D)."""
    return torch.exp(-_sq_dist(x) / x.shape[1])
'''

PLOT = '''

@study_plot("probe_trial_count", "Trials per state (a throw-away plot, tests/contracts/test_extension.py).",
            inputs=("study",))
def plot_probe_trial_count(study):
    """How many trials each state holds."""
    plt = pyplot()
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    fig, ax = plt.subplots()
    names = sorted(set(states))
    ax.bar(names, [states.count(n) for n in names])
    return fig
'''

DATASET = '''"""A throw-away dataset (tests/contracts/test_extension.py): random noise images with random labels."""
from __future__ import annotations

from pathlib import Path

import torch

from ..registry import Param
from .base import DATASETS, RawDataset


@DATASETS.register("probe_noise", params=[Param("size", 40, type=int, min=2)], flip=True,
                   source="generated in memory")
def load_probe_noise(data_dir: Path | None = None, size: int = 40) -> RawDataset:
    """Uniform noise, 3 classes, 8x8 grey images."""
    del data_dir
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * size, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(2 * size) % 3
    return RawDataset(images[:size], labels[:size], images[size:], labels[size:], ("a", "b", "c"),
                      allows_flip=True, crop_padding=1, source="probe")
'''


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.slow
def test_an_affinity_a_plot_and_a_dataset_added_as_documented_pass_the_contract_tests(tmp_path):
    for folder in ("relkd", "tests", "studies", "docs", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    code = tmp_path / "relkd"
    # the three additions, each as docs/architecture.md says
    _append(code / "relation" / "affinity.py", AFFINITY)
    plots = code / "analysis" / "plots.py"
    assert "def study_plot(" in plots.read_text() and "pyplot" in plots.read_text()
    _append(plots, PLOT)
    (code / "data" / "probe_noise.py").write_text(DATASET)
    init = code / "data" / "__init__.py"
    text, n = re.subn(r"^(from \. import [^\n]*synthetic)", r"\1, probe_noise", init.read_text(), count=1, flags=re.M)
    assert n == 1, "relkd/data/__init__.py no longer imports the dataset modules in one line"
    init.write_text(text)

    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import relkd; print(relkd.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(tmp_path)), f"the copy was not the relkd imported: {where}"
    contracts = ["tests/contracts/test_relation_properties.py", "tests/test_registry.py", "tests/test_plots.py",
                 "tests/test_data.py"]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "probe",
                          *contracts], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", run.stdout).group(1))
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                                "-k", "probe", *contracts], cwd=tmp_path, env=env, capture_output=True, text=True)
    ids = collected.stdout  # each addition went through its registry's contract tests, and all of them passed
    assert "probe_gaussian" in ids and "probe_trial_count" in ids and "probe_noise" in ids, ids[-3000:]
    assert passed == len([line for line in ids.splitlines() if "::" in line])
