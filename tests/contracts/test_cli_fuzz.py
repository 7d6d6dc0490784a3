"""The command line as a careless or hostile user meets it: every command, every kind of
field (numbers, names, paths, lists, mappings, switches) and every kind of flag, with real
files, in a separate process (tests/cli_driver.py runs the cases through ``relkd``'s
``main``). Each bad input must end with exit status 2 (1: the machine), one line that names
the field or flag and says what is allowed, no traceback, and nothing created."""
import copy
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relkd.config import validate_config
from relkd.fields import ConfigError, yaml_dump
from relkd.presets import preset
from relkd.setting import validate_setting
from relkd.study import validate_study
from contracts.test_hostile_input import ALLOWED, mutate, paths
from tiny import TINY_SETTING

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parents[1]  # tests/, where cli_driver.py is
STUDY = {**TINY_SETTING, "search": {"tap": ["pool"], "terms": {"low": 0, "high": 1}},
         "optuna": {"n_trials": 2, "sampler": "tpe", "anchors": ["sp"]}}
COMPARE = {**TINY_SETTING, "compare": {"methods": ["sp"], "seeds": 1}}
#: One value of each kind a YAML field can hold, plus the extremes that got in before.
HOSTILE = [None, -1, 0, 1e308, -1e308, float("nan"), float("inf"), "nope", "", "cuda:99", [], [1, "x"], {},
           {"name": "x"}, True, 2**70]
#: Commands that only read: they may create nothing, whatever they are given.
READ_ONLY = {("list",), ("show-config",), ("validate",), ("check",), ("study", "validate"), ("study", "status"),
             ("study", "importance")}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with a finished tiny study, a config, a setting and a checkpoint of the wrong width."""
    import os

    from relkd.models import create_model
    from relkd.study import load_study_spec, run_study

    root = tmp_path_factory.mktemp("cli")
    env = {"RELKD_RUNS_DIR": str(root / "runs"), "RELKD_CACHE_DIR": str(root / "cache")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        (root / "study.yaml").write_text(yaml_dump({**STUDY, "name": "tiny"}))
        run_study(load_study_spec(root / "study.yaml"))
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    (root / "good.yaml").write_text(yaml_dump(preset("sp+kd")))
    (root / "setting.yaml").write_text(yaml_dump(TINY_SETTING))
    (root / "folder").mkdir()
    wide = create_model("cnn_tiny", num_classes=10, in_channels=1, width=8)
    torch.save(wide.net.state_dict(), root / "wide.pt")
    return root, env


def drive(root, env, cases):
    """Run ``cases`` (argv lists) in one process; return the results, case by case."""
    spec = {"watch": [str(root)], "cases": [{"argv": argv, "cwd": str(root)} for argv in cases]}
    (root / "cases.json").write_text(json.dumps(spec))
    import os

    proc = subprocess.run([sys.executable, str(HERE / "cli_driver.py"), str(root / "cases.json"),
                           str(root / "results.json")], env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    (root / "results.json").unlink()
    (root / "cases.json").unlink()
    return list(zip(cases, results))


def command_of(argv):
    return tuple(argv[:2]) if argv[0] in ("study", "teacher") else (argv[0],)


def assert_refused(argv, result, codes=(2,)):
    """A clean refusal: the status, one line (or one line per problem of a file), a field or
    a flag named with what is allowed, no traceback, nothing created."""
    what = f"relkd {' '.join(argv)}"
    assert result["traceback"] is None, f"{what}: traceback\n{result['traceback']}"
    err = result["stderr"]
    assert "Traceback" not in err, what
    assert result["code"] in codes, f"{what}: exit {result['code']}\n{err}"
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith(("relkd: error: ", "relkd ")), f"{what}: {err}"
    if len(lines) > 1:  # a file with several problems: "N problems:" and one bullet each
        assert lines[0].endswith(f"{len(lines) - 1} problems:"), f"{what}: more than one line\n{err}"
        assert all(line.startswith("  - ") for line in lines[1:]), f"{what}: {err}"
    assert ALLOWED.search(err) or re.search(r"no such|no study|folder|choose from|required|not a", err, re.I), f"{what}: {err}"
    assert all(len(line) < 1000 for line in lines), what
    assert not result["created"], f"{what} created {result['created']}"


def mutations(base, count, seed, validator):
    """``count`` single-field mutations of ``base`` that ``validator`` refuses (each field
    path, each kind of value), as YAML texts; drawn with a fixed seed."""
    rng = random.Random(seed)
    candidates = [(p, v) for p in paths(base) if p for v in HOSTILE]
    rng.shuffle(candidates)
    out = []
    for path, value in candidates:
        doc = mutate(base, path, value, delete=False)
        try:
            validator(copy.deepcopy(doc))
        except ConfigError:
            out.append((".".join(map(str, path)), yaml_dump(doc)))
        if len(out) == count:
            break
    return out


def test_every_command_refuses_bad_files_cleanly(place):
    """Bad objective configs, settings, study and compare files through every command that reads them."""
    root, env = place
    cases = []
    for i, (_, text) in enumerate(mutations(preset("rkd+kd"), 60, 0, validate_config)):
        (root / f"config{i}.yaml").write_text(text)
        cases += [["validate", f"config{i}.yaml"], ["check", f"config{i}.yaml", "--json"]]
        if i < 6:
            cases.append(["train", "--setting", "setting.yaml", "--config", f"config{i}.yaml"])
    for i, (_, text) in enumerate(mutations(STUDY, 80, 1, validate_study)):
        (root / f"study{i}.yaml").write_text(text)
        cases.append(["study", "validate", f"study{i}.yaml"])
        if i < 16:  # the commands that would train: each refuses before doing anything
            cases.append([["study", "run"], ["study", "worker", "--storage", "sqlite:///w.db"]][i % 2]
                         + [f"study{i}.yaml"])
    # refused even where a teacher is optional (pretrain), so refused by every setting reader
    for i, (_, text) in enumerate(mutations(TINY_SETTING, 24, 3, lambda d: validate_setting(d, teacher_required=False))):
        (root / f"setting{i}.yaml").write_text(text)
        command = [["train", "--config", "sp", "--setting"], ["teacher", "train", "--setting"], ["pretrain", "--setting"],
                   ["evaluate", "--checkpoint", "wide.pt", "--setting"],
                   ["adapt", "--target-ratio", "0.5", "--setting"]][i % 5]
        cases.append(command + [f"setting{i}.yaml"])
    from relkd.study.compare import validate_compare

    for i, (_, text) in enumerate(mutations(COMPARE, 12, 2, validate_compare)):
        (root / f"compare{i}.yaml").write_text(text)
        cases.append(["compare", f"compare{i}.yaml"])
    results = drive(root, env, cases)
    assert len(results) > 200
    for argv, result in results:
        assert_refused(argv, result)


def flag_cases():
    """Each flag of each command with values it must refuse, and files that are not what they seem."""
    s = ["--setting", "setting.yaml"]
    bad_ints = ["0", "-1", "x", "1e99", ""]
    cases = []
    for flag in ("--epochs",):
        cases += [["train", *s, "--config", "sp", flag, v] for v in bad_ints]
        cases += [["pretrain", *s, flag, v] for v in bad_ints]
    cases += [["train", *s, "--config", "sp", "--seeds", v] for v in ("x", "0,0", "-1", ",", "99999999999")]
    # adapt: a ratio outside (0, 1), a setting without a ratio or without the init it prunes, a file as --out
    cases += [["adapt", *s, "--target-ratio", v] for v in ("0", "1", "-1", "1.5", "x", "", "nan", "inf")]
    cases += [["adapt", *s], ["adapt", *s, "--target-ratio", "0.5"], ["adapt", *s, "--criterion", "magic"],
              ["adapt", *s, "--target-ratio", "0.5", "--out", "good.yaml"]]
    cases += [["check", "sp", "--batch-size", v] for v in ("0", "1", "-5", "x", "100000")]
    cases += [["check", "sp", "--seed", v] for v in ("-1", "x", str(2**40))]
    cases += [["evaluate", *s, "--checkpoint", "wide.pt", "--seed", "-1"]]
    for device in ("cuda:99", "gpu", "", "cuda:x", "mps:0"):
        cases += [["train", *s, "--config", "sp", "--device", device], ["teacher", "train", *s, "--device", device],
                  ["study", "confirm", "--study-name", "tiny", "--device", device]]
    for command in (["status"], ["importance"], ["export", "--out", "x.yaml"], ["plot", "--out", "plots"],
                    ["report", "--out", "r.html"], ["confirm"]):
        for storage in ("", "sqlite:///nowhere/x.db", "journal:nowhere/j.log", "nowhere/j.log"):
            cases.append(["study", *command, "--study-name", "tiny", "--storage", storage])
        cases.append(["study", *command, "--study-name", "nosuch"])
    cases += [["study", "export", "--study-name", "tiny", "--out", out] for out in ("folder", "/proc/x/best.yaml")]
    cases += [["study", "export", "--study-name", "tiny", "--out", "x.yaml", "--trial", v] for v in ("-1", "x", "999")]
    cases += [["study", "export", "--study-name", "tiny", "--out", "x.yaml", "--top-k", "0"]]
    cases += [["study", "confirm", "--study-name", "tiny", "--seeds", v] for v in ("0", "0,0", "x", "1001")]
    cases += [["study", "confirm", "--study-name", "tiny", "--top-k", "0"],
              ["study", "confirm", "--study-name", "tiny", "--epochs", "0"],
              ["study", "run", "study.yaml", "--n-trials", "0"], ["study", "run", "study.yaml", "--timeout", "-1"],
              ["study", "run", "study.yaml", "--timeout", "nan"], ["study", "run", "study.yaml", "--timeout", "inf"],
              *[["study", c, "study.yaml", "--population", v] for c in ("run", "worker") for v in ("0", "x", "257", "")],
              ["study", "importance", "--study-name", "tiny", "--evaluator", "magic"]]
    for path in ("folder", "missing.yaml", "/dev/null", "wide.pt"):
        cases += [["validate", path], ["check", path], ["study", "validate", path], ["train", "--setting", path,
                  "--config", "sp"], ["train", *s, "--config", path], ["compare", path]]
    cases += [["evaluate", *s, "--checkpoint", c] for c in ("folder", "missing.pt", "good.yaml")]
    # --out is checked before anything runs: a file where a folder goes, a folder where a file goes
    for out in ("good.yaml", "good.yaml/inside", ""):
        cases += [["train", *s, "--config", "sp", "--out", out], ["evaluate", *s, "--checkpoint", "wide.pt", "--out",
                  out], ["compare", "study.yaml", "--out", out], ["study", "confirm", "--study-name", "tiny", "--out",
                  out], ["study", "plot", "--study-name", "tiny", "--out", out]]
    for out in ("folder", "good.yaml/inside.yaml", ""):
        cases += [["pretrain", *s, "--out", out], ["study", "report", "--study-name", "tiny", "--out", out],
                  ["study", "export", "--study-name", "tiny", "--out", out]]
    cases += [["show-config", "spp"], ["list", "nothing"], ["study", "nothing"], ["nothing"]]
    return cases


def test_every_flag_refuses_bad_values_cleanly(place):
    root, env = place
    results = drive(root, env, flag_cases())
    for argv, result in results:
        assert_refused(argv, result)


def test_the_wrong_width_checkpoint_is_not_called_another_number_of_classes(place):
    root, env = place
    [(argv, result)] = drive(root, env, [["evaluate", "--setting", "setting.yaml", "--checkpoint", "wide.pt"]])
    assert_refused(argv, result)
    assert "same number of classes but another input width" in result["stderr"]
    assert "another number of classes" not in result["stderr"]


def test_read_only_commands_create_nothing_even_when_they_succeed(place):
    root, env = place
    cases = [["list"], ["show-config", "sp"], ["validate", "good.yaml"], ["check", "good.yaml", "--json"],
             ["study", "validate", "study.yaml"], ["study", "status", "--study-name", "tiny"],
             ["study", "status", "--study-name", "tiny", "--json"], ["study", "importance", "--study-name", "tiny"]]
    for argv, result in drive(root, env, cases):
        assert result["traceback"] is None and "Traceback" not in result["stderr"], argv
        assert command_of(argv) in READ_ONLY
        assert not result["created"], f"{argv} created {result['created']}"
        if "--json" in argv:
            json.loads(result["stdout"])  # strict JSON: no bare NaN or Infinity
