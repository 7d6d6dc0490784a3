"""Ablation of a study's winner (relkd.study.ablate, ``relkd study ablate``): the variants, the
pairing by seed, the stored table, resuming, the command and the report's section."""
import copy
import json
import math
import statistics
import zlib

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from scipy import stats

from relkd.analysis.report import render_report
from relkd.cli import main
from relkd.config import validate_config
from relkd.presets import KD, KD_CE_WEIGHT, preset
from relkd.setting import setting_record, validate_setting
from relkd.study import load_relkd_study, run_study, validate_study
from relkd.study.ablate import ablate_study, ablation_variants, format_ablation
from relkd.study.export import study_tuning
from relkd.results.record import ABLATION_ATTR, RECIPE_ATTR, RUN_ATTR, SETTING_ATTR, study_document
from relkd.results.ranking import compositions
from relkd.tuning import Tuning
from relkd.engine.result import RunResult
from tiny import TINY_SETTING

pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders

#: A composition with two terms (one named, one not) and KD and CE off the presets' values.
TWO_TERMS_KD = {
    "ce_weight": 0.5,
    "kd": {"weight": 0.3, "temperature": 2.0},
    "terms": [
        {"name": "sp", "tap": "last_stage", "view": "flatten", "affinity": {"name": "dot"},
         "normalisation": {"name": "row_l2"}, "loss": {"name": "mse"}, "weight": 100.0},
        {"tap": "pool", "affinity": {"name": "rbf"}, "normalisation": {"name": "max"}, "loss": {"name": "l1"},
         "weight": 2.0},
    ],
}
UNNAMED = "term1 (rbf/max/l1 at pool)"


def tuning(baseline=0.05, lr=0.2):
    curves = {c: {repr(baseline): [0.3, 0.31], repr(lr): [0.4, 0.41]} for c in ("none", "kd")}
    return Tuning("k", baseline, lr, [0, 1], curves)


def strip(config):
    """A config without term names, for comparing compositions."""
    cfg = validate_config(config)
    for term in cfg["terms"]:
        term.pop("name", None)
    return cfg


# ----------------------------------------------------------------------------- the variants


def test_variants_of_two_terms_and_kd():
    variants = ablation_variants(TWO_TERMS_KD)
    assert [v.name for v in variants] == ["full", "sp", UNNAMED, "kd reset", "ce reset"]
    full = validate_config(TWO_TERMS_KD)
    by_name = {v.name: v for v in variants}
    assert by_name["full"].config == full
    assert by_name["sp"].config["terms"] == full["terms"][1:]
    assert by_name[UNNAMED].config["terms"] == full["terms"][:1]
    assert by_name["kd reset"].config == {**full, "kd": KD}
    assert by_name["ce reset"].config == {**full, "ce_weight": KD_CE_WEIGHT}
    assert by_name["kd reset"].change == "KD weight 0.3 -> 0.9, temperature 2 -> 4 (the +kd presets')"
    assert all(v.lr is None for v in variants)
    # the recipe reset only where the study tuned its rate, and only when the rate moved
    with_recipe = ablation_variants(TWO_TERMS_KD, tuning(0.05, 0.2))
    assert [v.name for v in with_recipe][-1] == "recipe reset"
    assert with_recipe[-1].config == full and with_recipe[-1].lr == 0.05
    assert "recipe reset" not in [v.name for v in ablation_variants(TWO_TERMS_KD, tuning(0.1, 0.1))]


def test_variants_identical_to_full_are_skipped_and_the_last_term_still_goes():
    sp_kd = preset("sp+kd")  # KD and CE at the presets' already: nothing to reset
    variants = ablation_variants(sp_kd)
    assert [v.name for v in variants] == ["full", "sp"]
    assert variants[1].config["terms"] == [] and variants[1].config["kd"] == KD  # CE and KD alone still train
    assert variants[1].change == "sp removed (CE and KD only)"
    no_kd = {"ce_weight": 0.7, "terms": [{"tap": "pool", "affinity": {"name": "dot"}}]}
    assert [(v.name, v.config["ce_weight"]) for v in ablation_variants(no_kd)] == [
        ("full", 0.7), ("term0 (dot/none/mse at pool)", 0.7), ("ce reset", 1.0)]  # CE without KD: 1
    named_as_position = {"terms": [{"name": "term0", "tap": "pool", "affinity": {"name": "dot"}},
                                   {"name": "term1", "tap": "pool", "affinity": {"name": "cosine"}}]}
    dropped = ablation_variants(named_as_position)[1]  # term1 moves to position 0 and so loses its name
    assert dropped.name == "term0 (dot/none/mse at pool)" and "name" not in dropped.config["terms"][0]


# ----------------------------------------------------------------------------- a made study, a fake trainer


def made_study(url, name="made", *, config=TWO_TERMS_KD, recipe=None, directions=("maximize",), extra=()):
    """A study as relkd stores it (its setting; optionally a tuned recipe), with one searched
    trial of ``config`` and ``extra`` trials (``create_trial`` keyword arguments)."""
    study = optuna.create_study(study_name=name, storage=url, directions=list(directions))
    study.set_user_attr(SETTING_ATTR, setting_record(validate_setting(TINY_SETTING)))
    if recipe is not None:
        study.set_user_attr(RECIPE_ATTR, recipe.record())
    if config is not None:
        study.add_trial(create_trial(values=[0.5] * len(directions),
                                     user_attrs={"objective_config": validate_config(config), "seed": 0}))
    for kwargs in extra:
        study.add_trial(create_trial(**kwargs))
    return load_relkd_study(name, url)[0]


class FakeTrainer:
    """Validation accuracy from the seed (large effects: unpaired differences would be noisy)
    plus the composition's parts and a small seed-by-composition wobble; counts its calls and
    can be interrupted (Ctrl-C) at a given call."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.interrupt_at = interrupt_at

    def __call__(self, setting, objective, *, seed, eval_test=False, teacher=None, progress=False, **_):
        if self.interrupt_at is not None and len(self.calls) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        cfg = objective.to_config()
        self.calls.append((strip(cfg), seed, setting.budget.lr, eval_test))
        kd = cfg["kd"] or {"weight": 0.0, "temperature": 0.0}
        wobble = zlib.crc32(json.dumps([strip(cfg), seed], sort_keys=True).encode()) % 5 - 2  # -2 .. 2
        value = (0.3 + 0.05 * (seed % 7) + 0.02 * len(cfg["terms"]) + 0.01 * kd["weight"] + 0.004 * cfg["ce_weight"]
                 + 0.001 * wobble + setting.budget.lr / 10)
        return RunResult(seed, value, test_accuracy=-1.0)


def stored_values(out, study_name):
    """What the queues stored: {variant: {seed: validation accuracy}}, read back from the database."""
    storage = f"sqlite:///{(out / 'ablate.db').as_posix()}"
    found = {}
    for summary in optuna.get_all_study_summaries(storage):
        queue = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert summary.study_name.startswith(f"{study_name}.ablate")
        for t in queue.get_trials(states=(TrialState.COMPLETE,)):
            run = t.user_attrs[RUN_ATTR]
            found.setdefault(run["label"].split(": ", 1)[1], {})[run["seed"]] = t.value
    return found


def test_variants_are_paired_by_seed_stored_and_resumed(isolated, monkeypatch):
    monkeypatch.setattr("relkd.study.queue.get_teacher", lambda *a, **k: None)  # the fake trainer needs none
    url = f"sqlite:///{isolated}/made.db"
    study = made_study(url, recipe=tuning(0.05, 0.2))
    out = isolated / "ablation"
    seeds = [3, 5, 8]
    interrupted = FakeTrainer(interrupt_at=4)
    monkeypatch.setattr("relkd.study.ablate.run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ablate_study(study, seeds=seeds, epochs=1, out_dir=out)
    assert len(interrupted.calls) == 3
    resumed = FakeTrainer()
    monkeypatch.setattr("relkd.study.ablate.run_trial", resumed)
    table = ablate_study(study, seeds=seeds, epochs=1, out_dir=out)
    names = ["full", "sp", UNNAMED, "kd reset", "ce reset", "recipe reset"]
    assert [r["variant"] for r in table["rows"]] == names
    assert len(resumed.calls) == len(names) * len(seeds) - 3  # the three finished runs are not trained again
    again = FakeTrainer()
    monkeypatch.setattr("relkd.study.ablate.run_trial", again)
    assert ablate_study(study, seeds=seeds, epochs=1, out_dir=out)["rows"] == table["rows"] and again.calls == []

    # what was trained: every variant with exactly full's seeds, on validation only, the recipe
    # reset at the rate as written and everything else at the tuned one
    trained = interrupted.calls + resumed.calls
    for row in table["rows"]:
        config = strip(row["objective_config"])
        assert sorted(s for c, s, lr, _ in trained if c == config and lr == row["lr"]) == seeds
    assert {lr for _, _, lr, _ in trained} == {0.05, 0.2} and not any(test for *_, test in trained)
    assert [r["lr"] for r in table["rows"]] == [0.2] * 5 + [0.05]
    assert table["seeds"] == seeds and table["trial"] == 0 and table["metric"] == "validation accuracy"

    # the paired difference from the right pairs, by hand from the stored values
    stored = stored_values(out, "made")
    assert set(stored) == set(names) and all(sorted(v) == seeds for v in stored.values())
    full = stored["full"]
    for row in table["rows"]:
        assert row["values"] == [stored[row["variant"]][s] for s in seeds]
        if row["variant"] == "full":
            assert row["contribution"] is None and row["sentence"] is None
            continue
        d = [full[s] - stored[row["variant"]][s] for s in seeds]
        mean, sd = statistics.fmean(d), statistics.stdev(d)
        c = row["contribution"]
        assert c["n"] == 3 and c["mean"] == pytest.approx(mean)
        assert row["sentence"].startswith("dropping " if row["kind"] == "term" else ("resetting", "training"))
        if sd < 1e-12:  # the same difference with every seed: no spread, no p-value
            assert c["p"] is None and c["low"] == pytest.approx(mean) and "every seed alike" in row["sentence"]
            continue
        half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        p = 2 * stats.t.sf(abs(mean) / (sd / math.sqrt(3)), 2)
        assert (c["low"], c["high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
        assert c["p"] == pytest.approx(p)
        assert ("beyond seed noise" in row["sentence"]) == (p >= 0.05)
    # dropping a term costs 0.02 in every pair, apart from the small wobble: paired, it is tight
    sp = next(r for r in table["rows"] if r["variant"] == "sp")["contribution"]
    assert 0.0 < sp["low"] <= sp["mean"] <= sp["high"] < 0.05

    # the table: JSON and Markdown in the folder, the study attribute without the configs
    assert json.loads((out / "ablation.json").read_text()) == table
    markdown = (out / "ablation.md").read_text()
    assert markdown == format_ablation(table)
    assert "| variant | change | val % | contribution | 95% CI | p |" in markdown and f"| {UNNAMED} |" in markdown
    assert "- Dropping sp " in markdown
    stored_attr = study_document(load_relkd_study("made", url)[0], ABLATION_ATTR)
    assert [r["variant"] for r in stored_attr["rows"]] == names
    assert stored_attr["rows"] == [{k: v for k, v in r.items() if k != "objective_config"} for r in table["rows"]]


# ----------------------------------------------------------------------------- a real study, the CLI, the report


@pytest.mark.slow
def test_ablation_of_a_tuned_study_through_the_cli_and_the_report(isolated, monkeypatch, capsys):
    doc = {**copy.deepcopy(TINY_SETTING), "tune": {"lr": [0.05, 0.2], "seeds": 2, "extend": 0},
           "search": {"terms": 2, "tap": ["last_stage", "pool"], "kd": {"enabled": True}},
           "optuna": {"n_trials": 2, "anchors": ["none"], "sampler": "random"}}
    doc["budget"]["lr"] = 0.2
    study = run_study(validate_study(doc), progress=False).study
    tuned = study_tuning(study)
    assert tuned is not None and tuned.baseline == 0.2
    best = next(c for c in compositions(study) if not c.known).trial
    table = ablate_study(study, seeds=2, epochs=1)  # the study's seed + 0, 1
    assert table["trial"] == best.number and table["seeds"] == [0, 1] and table["epochs"] == 1
    rows = {r["variant"]: r for r in table["rows"]}
    names = list(rows)
    assert names[0] == "full" and names[1].startswith("term0 (") and names[2].startswith("term1 (")
    assert ("recipe reset" in rows) == (tuned.lr != tuned.baseline)
    assert all(len(r["values"]) == 2 and 0 <= r["mean"] <= 1 for r in rows.values())
    assert study.user_attrs[ABLATION_ATTR]["trial"] == best.number

    # the command shows the stored runs' table without training them again
    monkeypatch.setattr("relkd.study.ablate.run_trial", lambda *a, **k: pytest.fail("retrained"))
    out = isolated / "runs" / "tiny" / "ablate"
    assert main(["study", "ablate", "--study-name", "tiny", "--seeds", "2", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| variant | change | val % | contribution | 95% CI | p |" in printed and "| full |" in printed
    assert "- Dropping term0 (" in printed and str(out / "ablation.json") in printed
    assert main(["study", "ablate", "--study-name", "tiny", "--seeds", "0,1", "--epochs", "1", "--quiet",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == json.loads((out / "ablation.json").read_text())["rows"]

    page = render_report(study, "sqlite:///x.db")
    assert "Ablation: what each part contributes" in page and "<li>dropping term0 (" in page


def test_the_report_says_how_to_ablate_when_nothing_is(isolated):
    study = made_study(f"sqlite:///{isolated}/made.db")
    page = render_report(study, "sqlite:///x.db")
    assert "No ablation yet" in page and "relkd study ablate --study-name made" in page


# ----------------------------------------------------------------------------- errors name the flags


def run_cli(capsys, *argv):
    code = main(["study", "ablate", *argv])
    return code, capsys.readouterr().err


def test_errors_name_the_flags(isolated, capsys):
    url = f"sqlite:///{isolated}/made.db"
    made_study(url, extra=[{"state": TrialState.FAIL}])  # trial 1 failed
    made_study(url, "anchors_only", config=None,
               extra=[{"value": 0.4, "user_attrs": {"objective_config": preset("kd"), "anchor": "kd", "seed": 0}}])
    made_study(url, "sizes", directions=("maximize", "minimize"))

    code, err = run_cli(capsys, "--study-name", "nope")
    assert code == 2 and "--study-name: no study 'nope'" in err and "--storage" in err
    code, err = run_cli(capsys, "--study-name", "nope", "--storage", url)
    assert code == 2 and "--study-name: no study 'nope'" in err and "made" in err
    code, err = run_cli(capsys, "--study-name", "sizes", "--storage", url)
    assert code == 2 and "--study-name: study 'sizes' has two objectives" in err and "needs one" in err
    code, err = run_cli(capsys, "--study-name", "made", "--storage", url, "--trial", "1")
    assert code == 2 and "--trial: trial 1 failed, not complete" in err
    code, err = run_cli(capsys, "--study-name", "made", "--storage", url, "--trial", "9")
    assert code == 2 and "--trial: study 'made' has no trial 9; expected one of its trials 0..1" in err
    code, err = run_cli(capsys, "--study-name", "anchors_only", "--storage", url)
    assert code == 2 and "--trial: study 'anchors_only' has no completed searched composition" in err
    code, err = run_cli(capsys, "--study-name", "made", "--storage", url, "--seeds", "1")
    assert code == 2 and "--seeds: expected at least 2 seeds" in err and "a count like 3 or a list like 0,1,2" in err
    with pytest.raises(SystemExit):
        main(["study", "ablate", "--study-name", "made", "--seeds", "x"])
    assert "--seeds: expected a count from 1 to 1000 or a list like 0,4,7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["study", "ablate", "--study-name", "made", "--epochs", "0"])
    assert "--epochs: expected an integer >= 1" in capsys.readouterr().err
