"""The shape of the house, checked from the source: one direction of imports (no cycles, no
layer importing a higher one), no private names imported across modules, modules of one job
(a docstring, at most 500 lines); and what was written before the house was split (a study
database and the cache keys, made by relkd at ee5d4c6: tests/data/*_v0.*) is used after it."""
from __future__ import annotations

import ast
import json
import sqlite3
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "relkd"
DATA = Path(__file__).resolve().parent / "data"
MAX_LINES = 500

#: Layers from the ground floor up: a module imports only from its own layer or below.
LAYERS = [
    ("relkd.registry", "relkd.fields", "relkd.files", "relkd.cache", "relkd.figures", "relkd.stats", "relkd.text"),
    ("relkd.relation", "relkd.features", "relkd.config", "relkd.presets", "relkd.objective", "relkd.setting", "relkd.models",
     "relkd.data", "relkd"),
    ("relkd.engine",),
    ("relkd.pretrain", "relkd.adapt", "relkd.evaluation", "relkd.tuning"),
    ("relkd.results",),  # the read side: what stored trials mean (record, ranking, verdict, Pareto front)
    ("relkd.study",),  # writes studies
    ("relkd.analysis",),  # draws them: reads studies through relkd.results and relkd.study, never the reverse
    ("relkd.cli",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` in module ``name`` reads from."""
    if node.level == 0:
        return node.module or ""
    base = name.split(".") if is_package(name) else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str) -> list[tuple[str, list[str], int]]:
    """Every relkd module ``name`` imports, anywhere in the file (imports inside functions
    count: they hide cycles, they do not remove them), with the names taken and the line."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "relkd"]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, node)
            if target.split(".")[0] != "relkd":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out.append((target, names, node.lineno))
            out += [(sub, [], node.lineno) for sub in submodules]
    return out


def packages_loaded(name: str, target: str) -> list[str]:
    """The packages whose ``__init__`` importing ``target`` runs first (``relkd.a.b`` loads
    ``relkd.a``), less those ``name`` lives in (they are loading already): an import of
    ``relkd.results.pareto`` from ``relkd.study.export`` runs ``relkd/analysis/__init__.py``,
    and with it everything that package imports."""
    parts = target.split(".")
    out = []
    for i in range(2, len(parts)):
        package = ".".join(parts[:i])
        if package in MODULES and is_package(package) and not (name == package or name.startswith(package + ".")):
            out.append(package)
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _, _ in imports_of(name):
            while target not in MODULES and "." in target:  # relkd.x.name -> relkd.x
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name:
                edges[name].add(target)
                edges[name].update(packages_loaded(name, target))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer(name: str) -> int:
    best, depth = None, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith((prefix + ".", prefix + "_"))) and prefix.count(".") > depth:
                best, depth = number, prefix.count(".")
    assert best is not None, f"{name} is in no layer of LAYERS: add it"
    return best


def test_importing_a_submodule_loads_its_package_first():
    assert packages_loaded("relkd.study.export", "relkd.analysis.plots") == ["relkd.analysis"]
    assert packages_loaded("relkd.study.export", "relkd.study.seeds") == []  # its own package: loading already
    assert "relkd.engine" in graph()["relkd.study.trial"]  # imports from relkd.engine.* load relkd/engine/__init__


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_relkd_is_in_an_import_cycle():
    assert cycles(graph()) == []


def test_imports_point_down_the_layers():
    wrong = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
             for name, targets in graph().items() for target in targets
             if name != "relkd" and layer(target) > layer(name)]
    assert wrong == []


def test_the_engine_never_imports_evaluation_pretraining_studies_or_the_cli():
    above = ("relkd.evaluation", "relkd.pretrain", "relkd.study", "relkd.analysis", "relkd.cli")
    edges = graph()
    wrong = [(n, t) for n in MODULES if n.startswith("relkd.engine") for t in edges[n] if t.startswith(above)]
    assert wrong == []


def test_analysis_only_reads_studies():
    edges = graph()
    trains = ("relkd.engine", "relkd.pretrain", "relkd.evaluation")
    wrong = [(n, t) for n in MODULES if n.startswith("relkd.analysis") for t in edges[n] if t.startswith(trains)]
    assert wrong == []


@pytest.mark.parametrize("folder", ["relkd", "tests", "benchmarks"])
def test_no_module_imports_a_private_name_from_another(folder):
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                wrong += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and a.name != "__version__"]
    assert wrong == []


def test_every_module_says_its_job_and_stays_small():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
    silent = [name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert silent == []


TESTS = Path(__file__).resolve().parent


def modules_imported_by(path: Path) -> set[str]:
    """The relkd modules a test file imports by name, anywhere in it: ``import relkd.a.b``,
    ``from relkd.a import b`` (``b`` a submodule), ``from relkd.a.b import name``. Only the
    module named counts: importing ``relkd.a`` is no test of ``relkd.a.b``, and importing
    ``relkd.a.b`` none of ``relkd.a`` (its ``__init__`` runs, but nothing of it is used)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found & set(MODULES)


def test_the_import_finder_counts_only_the_module_named(tmp_path):
    test = tmp_path / "test_x.py"
    test.write_text("import relkd.stats\nfrom relkd.engine import device\nfrom relkd.results.pareto import x\n"
                    "def f():\n    from relkd import text\n    from relkd.study import ranking_of_nothing\n")
    assert modules_imported_by(test) == {"relkd", "relkd.stats", "relkd.engine", "relkd.engine.device",
                                         "relkd.results.pareto", "relkd.text", "relkd.study"}


def test_every_module_has_a_test_that_imports_it():
    """Every module of relkd (a package's ``__init__`` too, as the package's name) is imported
    by name by some ``test_*.py`` under tests/ (helpers such as tests/tiny.py do not count);
    a module's own tests live in ``tests/<package>/test_<module>.py``."""
    imported = set().union(*(modules_imported_by(p) for p in sorted(TESTS.rglob("test_*.py"))))
    untested = sorted(set(MODULES) - imported)
    assert untested == [], f"{len(untested)} modules of relkd no test imports: {', '.join(untested)}"


# --------------------------------------------------------------------------- written before the split


def test_cache_keys_and_folders_are_those_written_before_the_split():
    from relkd.engine import TeacherOutputs, load_data, teacher_key
    from relkd.pretrain import pretrain_key
    from relkd.setting import validate_setting
    from tiny import TINY_SETTING

    before = json.loads((DATA / "cache_v0.json").read_text())
    setting = validate_setting(TINY_SETTING)
    assert teacher_key(setting) == before["teacher_key"]
    assert pretrain_key(setting) == before["pretrain_key"]
    fingerprint = load_data(setting).fingerprint()
    folder = TeacherOutputs.folder((before["teacher_key"], before["teacher_sha256"], fingerprint, None, None))
    assert sorted(f"teacher_outputs/{folder.name}/{tap}.pt" for tap in ("last_stage", "logits")) \
        == before["teacher_outputs"]


def test_a_teacher_cached_the_old_way_is_loaded_not_trained(isolated, monkeypatch):
    """The old code wrote ``teachers/<model>-<key>/teacher.pt`` (torch.save of the state dict)
    and ``meta.json`` holding the key, the accuracies and the file's SHA-256."""
    from relkd.cache import cache_root, file_sha256
    from relkd.engine import build_model, get_teacher, load_data, teacher_key
    from relkd.engine import teacher as teacher_module
    from relkd.setting import validate_setting
    from tiny import TINY_SETTING

    setting = validate_setting(TINY_SETTING)
    key = teacher_key(setting)
    folder = cache_root() / json.loads((DATA / "cache_v0.json").read_text())["teacher_folder"]
    folder.mkdir(parents=True)
    model = build_model(setting.teacher, load_data(setting, subset=False), seed=123, device=torch.device("cpu"))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "teacher.pt")
    meta = {"key": key, "model": "cnn_tiny", "val_accuracy": 0.5, "test_accuracy": 0.25,
            "sha256": file_sha256(folder / "teacher.pt")}
    (folder / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(teacher_module, "fit", lambda *a, **k: pytest.fail("the cached teacher was trained again"))
    result = get_teacher(setting)
    assert not result.trained and (result.val_accuracy, result.test_accuracy) == (0.5, 0.25)
    loaded = result.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def old_study(tmp_path: Path) -> tuple[str, Path]:
    """The study database made before the split, loaded from its SQL dump, and its study file."""
    db = tmp_path / "v0.db"
    con = sqlite3.connect(db)
    con.executescript((DATA / "study_v0.sql").read_text())
    con.close()
    return f"sqlite:///{db}", DATA / "study_v0.yaml"


@pytest.mark.slow
def test_a_study_written_before_the_split_is_read_and_resumed(isolated, tmp_path, capsys):
    from relkd.cli import main
    from relkd.fields import read_yaml_file
    from relkd.study import counted_trials, load_relkd_study, load_study_spec, run_study

    before = json.loads((DATA / "cache_v0.json").read_text())
    url, study_file = old_study(tmp_path)
    study, _ = load_relkd_study("house_v0", url)
    assert study.best_value == before["best_value"] and study.best_trial.params == before["best_params"]
    assert len(study.trials) == before["n_trials"]
    assert main(["study", "status", "--study-name", "house_v0", "--storage", url]) == 0
    assert "sp+kd" in capsys.readouterr().out
    out = tmp_path / "best.yaml"
    assert main(["study", "export", "--study-name", "house_v0", "--storage", url, "--out", str(out)]) == 0
    exported = read_yaml_file(out)
    assert exported["ce_weight"] == 1.0 and exported["kd"] is None and exported["terms"] == []
    result = run_study(load_study_spec(study_file), storage=url, n_trials=7, progress=False)
    assert len(counted_trials(result.study)) == 7  # resumed: one more trial, the anchors not trained again
    anchors = [t.user_attrs["anchor"] for t in result.study.trials if "anchor" in t.user_attrs]
    assert sorted(anchors) == ["kd", "none", "sp+kd"]


def test_the_readme_lists_the_samplers_and_pruners_the_tables_hold():
    import re

    from relkd.study.spec import PRUNERS, SAMPLERS

    readme = (ROOT / "docs" / "studies.md").read_text()
    for field, table in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        line = re.search(rf"^\s+{field}: \w+\s+# ([\w |]+?)(?: \(|,|$)", readme, re.M)
        assert line, f"docs/studies.md's study file shows no optuna.{field} line"
        assert {n.strip() for n in line.group(1).split("|")} == set(table)
