"""Each hole that let bad input in, closed where it belongs: the one device check, finite
objectives, storages that read-only commands never create, the one atomic writer, messages
that say what is really wrong, batches that relations can use, duplicated YAML keys, the
samplers the README names, the documented API, and tests that fail under CI instead of
skipping."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import relkd
from relkd.cli import main
from relkd.cli_args import json_text
from relkd.config import KD_TEMPERATURE_RANGE, MAX_WEIGHT, validate_config
from relkd.fields import ConfigError, yaml_dump, yaml_load
from relkd.files import atomic_write, not_a_file, write_text
from relkd.objective import build_objective, kd_loss, probe_objective
from relkd.presets import preset
from relkd.relation import RelationTerm
from relkd.setting import device_problem, load_setting, resolve_device, validate_setting
from relkd.study import load_study_spec, run_study, validate_study
from relkd.study.storage import open_storage, resolve_storage
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- device

def no_cuda(monkeypatch, count=0):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_a_device_the_machine_lacks_is_named_with_what_it_has(monkeypatch):
    no_cuda(monkeypatch)
    assert "no CUDA device" in device_problem("cuda") and "'auto' or 'cpu'" in device_problem("cuda:0")
    assert device_problem("cpu") is None and device_problem("auto") is None
    assert device_problem("cuda:3", here=False) is None  # a name a GPU machine would accept
    for nonsense in ("gpu", "", "cuda:x", "tpu", 3, None):
        assert device_problem(nonsense).startswith("expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    no_cuda(monkeypatch, count=2)
    assert "2 CUDA device(s): expected cuda:0 to cuda:1" in device_problem("cuda:2")
    assert device_problem("cuda:1") is None


def test_files_flags_and_runs_share_the_device_check(monkeypatch, tmp_path, capsys):
    no_cuda(monkeypatch)
    with pytest.raises(ValueError, match=r"^device: 'cuda:99' asked, but this machine has no CUDA device"):
        resolve_device("cuda:99")
    (tmp_path / "s.yaml").write_text(yaml_dump({**TINY_SETTING, "device": "cuda"}))
    with pytest.raises(ConfigError, match="device: 'cuda' asked"):
        load_setting(tmp_path / "s.yaml")
    study = {**TINY_SETTING, "device": "cuda:1", "optuna": {"n_trials": 1}}
    (tmp_path / "study.yaml").write_text(yaml_dump(study))
    with pytest.raises(ConfigError, match="device: 'cuda:1' asked"):
        load_study_spec(tmp_path / "study.yaml")
    # a study run on a GPU machine is still read back on this one (status, export)
    assert validate_study(study).setting.device == "cuda:1"
    assert main(["study", "validate", str(tmp_path / "study.yaml")]) == 2
    assert "device: 'cuda:1' asked" in capsys.readouterr().err


# ----------------------------------------------------------------------------- finite objectives

@pytest.mark.parametrize("change, field", [
    ({"ce_weight": 1e308}, "ce_weight"),
    ({"kd": {"weight": 1e308, "temperature": 4.0}}, "kd.weight"),
    ({"kd": {"weight": 0.9, "temperature": 1e300}}, "kd.temperature"),
    ({"kd": {"weight": 0.9, "temperature": 1e-300}}, "kd.temperature"),
    ({"kd": {"weight": 0.9, "temperature": 0}}, "kd.temperature"),
])
def test_weights_and_temperatures_beyond_the_limits_are_refused_with_the_limit(change, field):
    with pytest.raises(ConfigError) as err:
        validate_config({**preset("sp+kd"), **change})
    [line] = err.value.errors
    assert line.startswith(f"{field}: expected a finite number") and re.search(r"<= (1e\+08|1000)", line)


def test_term_weights_are_limited_too_and_the_limits_keep_every_part_finite():
    config = preset("sp+kd")
    config["terms"][0]["weight"] = MAX_WEIGHT * 10
    with pytest.raises(ConfigError, match=r"terms\[0\]\.weight: expected a finite number >= 0 and <= 1e\+08"):
        validate_config(config)
    for temperature in KD_TEMPERATURE_RANGE:
        extreme = {**preset("sp+kd"), "ce_weight": MAX_WEIGHT, "kd": {"weight": MAX_WEIGHT, "temperature": temperature}}
        extreme["terms"][0]["weight"] = MAX_WEIGHT
        parts = probe_objective(extreme)
        assert all(math.isfinite(v) for v in parts.values()), parts


def test_check_refuses_a_non_finite_objective_and_its_json_stays_json(monkeypatch, capsys):
    import relkd.cli as cli

    monkeypatch.setattr(cli, "probe_objective", lambda *a, **k: {"ce": 1.0, "ce.weighted": float("inf"),
                                                                  "total": float("nan"), "grad_norm": float("nan")})
    assert main(["check", "sp", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ce": 1.0, "ce.weighted": None, "total": None, "grad_norm": None}
    assert "not finite on random features (ce.weighted, total, grad_norm)" in err and len(err.splitlines()) == 1
    assert json_text({"a": [float("-inf"), 1.5]}) == '{\n  "a": [\n    null,\n    1.5\n  ]\n}'


# ----------------------------------------------------------------------------- storages

def test_a_read_only_opening_creates_no_folder_and_no_file(tmp_path):
    for url in (f"sqlite:///{tmp_path}/nowhere/x.db", f"journal:{tmp_path}/nowhere/j.log", f"{tmp_path}/nowhere/j.log"):
        with pytest.raises(ValueError, match="no such file .*expected the storage a study was run with"):
            open_storage(url, heartbeat_interval=0, create=False)
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(ValueError, match="folder.db' is a folder; expected a file"):
        open_storage(f"sqlite:///{tmp_path}/folder.db", create=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.db"]
    open_storage(f"sqlite:///{tmp_path}/made/x.db", heartbeat_interval=0)  # a run creates its storage
    assert (tmp_path / "made" / "x.db").is_file()


def test_an_empty_storage_is_refused_not_taken_for_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="^storage: expected a storage URL"):
        resolve_storage("", "x")
    assert resolve_storage(None, "x").endswith("runs/x/optuna.db")
    assert not (tmp_path / "runs").exists()  # naming the default creates nothing


# ----------------------------------------------------------------------------- writing files

def test_the_atomic_writer_names_the_users_path_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        write_text(tmp_path / "folder", "x")
    assert err.value.filename == str(tmp_path / "folder") and "expected a file name" in str(err.value)

    def failing(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device", str(tmp))

    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "out.yaml", failing)
    assert err.value.filename == str(tmp_path / "out.yaml") and err.value.errno == 28
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError) as err:  # a file where a folder should be: that path is named
        write_text(tmp_path / "file" / "x.yaml", "x")
    assert str(tmp_path / "file") in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # no temporary file anywhere
    assert write_text(tmp_path / "new" / "ok.txt", "fine").read_text() == "fine"


def test_a_path_that_is_not_a_file_says_what_it_is(tmp_path):
    (tmp_path / "d").mkdir()
    assert not_a_file(tmp_path / "d") == f"{str(tmp_path / 'd')!r} is a folder; expected a file"
    assert not_a_file(tmp_path / "nope") == f"no such file {str(tmp_path / 'nope')!r}"
    assert not_a_file("/dev/null") == "'/dev/null' is not a regular file"
    assert not_a_file(__file__) is None
    with pytest.raises(ConfigError, match="is a folder; expected a file"):
        build_objective(str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="no such file .*expected an objective config file or a preset"):
        build_objective(str(tmp_path / "missing.yaml"))


# ----------------------------------------------------------------------------- batches

def test_relations_need_the_same_batch_of_at_least_two_samples():
    term = RelationTerm("pool", "dot", "row_l2", name="sp")
    with pytest.raises(ValueError, match=r"term 'sp' at tap 'pool': the student's batch has 4 samples and the "
                                         r"teacher's 5; expected the same samples"):
        term(torch.randn(4, 8), torch.randn(5, 16))
    with pytest.raises(ValueError, match="a batch of 1 sample.*expected a batch of at least 2"):
        term(torch.randn(1, 8), torch.randn(1, 16))
    assert torch.isfinite(term(torch.randn(2, 8), torch.randn(2, 16)))
    with pytest.raises(ValueError, match=r"kd: the student's logits have shape \(4, 10\) and the teacher's \(3, 10\)"):
        kd_loss(torch.randn(4, 10), torch.randn(3, 10))
    objective = build_objective("sp")
    taps = {"last_stage": torch.randn(3, 4, 2, 2), "logits": torch.randn(3, 10)}
    with pytest.raises(ValueError, match="term 'sp' at tap 'last_stage'"):
        objective(taps, {"last_stage": torch.randn(2, 8, 2, 2), "logits": torch.randn(2, 10)}, torch.zeros(3).long())


def test_a_batch_size_of_one_is_refused_in_settings():
    for field, change in (("data.batch_size", {"data": {**TINY_SETTING["data"], "batch_size": 1}}),
                          ("budget.batch_size", {"budget": {**TINY_SETTING["budget"], "batch_size": 1}})):
        with pytest.raises(ConfigError, match=rf"{re.escape(field)}: expected an integer >= 2"):
            validate_setting({**TINY_SETTING, **change})


# ----------------------------------------------------------------------------- YAML

def test_a_key_given_twice_is_refused_with_both_lines():
    with pytest.raises(ConfigError, match=r"line 3, column 1: 'ce_weight': given twice \(first at line 2\); "
                                          r"expected each key once"):
        yaml_load("relkd_config: 1\nce_weight: 1\nce_weight: 2\n")
    with pytest.raises(ConfigError, match="'weight': given twice"):
        yaml_load("kd: {weight: 1, temperature: 4, weight: 2}\n")
    # a merged mapping may still be overridden, as YAML intends
    assert yaml_load("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n")["b"] == {"x": 3, "y": 2}


# ----------------------------------------------------------------------------- samplers

def study_doc(**optuna):
    return {**TINY_SETTING, "search": {"tap": ["pool"], "terms": 1, "affinity": ["dot", "cosine"],
                                       "normalisation": ["row_l2"], "loss": ["mse"], "weight": [1.0, 10.0],
                                       "kd": False, "ce_weight": 1.0},
            "optuna": {"n_trials": 4, "anchors": [], **optuna}}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["gp", "bruteforce"])
def test_the_gp_and_bruteforce_samplers_run_a_study(isolated, sampler):
    spec = validate_study(study_doc(sampler=sampler))
    result = run_study(spec)
    assert result.counts["complete"] == 4
    study = result.study
    if sampler == "bruteforce":  # two affinities x two weights: each combination exactly once
        combos = {(t.params["term0.affinity"], t.params["term0.weight"]) for t in study.trials}
        assert len(combos) == 4


def test_bruteforce_refuses_what_it_cannot_enumerate():
    doc = study_doc(sampler="bruteforce")
    doc["search"]["weight"] = {"low": 0.1, "high": 10.0}
    doc["optuna"]["refine"] = {"share": 0.5}
    with pytest.raises(ConfigError) as err:
        validate_study(doc)
    text = str(err.value)
    assert "search.weight: a grid needs a fixed value or a list of values, not a range (optuna.sampler: " \
           "bruteforce enumerates the space)" in text
    assert "optuna.refine: the bruteforce sampler enumerates the search space" in text
    doc = study_doc(sampler={"name": "gp", "independent_sampler": "random"})
    with pytest.raises(ConfigError, match="independent_sampler: not a parameter of GPSampler"):
        validate_study(doc)


# ----------------------------------------------------------------------------- docs and CI

def test_the_api_document_lists_exactly_the_public_names():
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## `relkd`", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)
    assert sorted(listed) == sorted(relkd.__all__)


NEEDS_TEST = '''
import pytest

@pytest.mark.needs("chromium")
def test_needs_the_browser():
    pass
'''


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_component_fails_under_ci_and_is_listed_locally(tmp_path, ci):
    (tmp_path / "test_needs.py").write_text(NEEDS_TEST)
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    env = {**os.environ, "CI": ci, "RELKD_TEST_HIDE": "chromium"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    if ci:
        assert proc.returncode == 1, proc.stdout
        assert "chromium is missing: headless Chromium" in proc.stdout and "CI=true requires it" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout
        assert re.search(r"SKIPPED \[1\] .*chromium is missing", proc.stdout), proc.stdout
