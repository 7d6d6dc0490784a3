"""Tuned anchors (relkd.study.tuned_anchors) and the verdict against them: the known methods'
hyperparameters tuned with a trial budget of their own, counted and resumed like other trials
with two workers, never pruned, ranked and re-run as known methods; the verdict names the best
tuned known method and says first when the search did not beat CE alone (tiny models,
synthetic data)."""
import copy
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from relkd.fields import ConfigError, yaml_dump
from relkd.presets import preset
from relkd.study import run_study, validate_study
from relkd.results.record import TUNED_ATTR, counted_trials
from relkd.results.ranking import compositions, search_verdict, verdict_line
from relkd.study.seeds import rerun_plan, Rerun
from relkd.study.trial import TrialRunner
from relkd.study.tuned_anchors import AnchorTuning, searched_index
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("isolated")  # conftest.py: own cache and runs folders


def study_doc(**optuna_section):
    doc = copy.deepcopy(TINY_SETTING)
    doc["search"] = {"tap": ["last_stage", "pool"], "terms": {"low": 1, "high": 1}}
    doc["optuna"] = {"sampler": {"name": "random"}, "anchors": ["none", "kd", "sp+kd", "rkd+kd"],
                     "tune_anchors": {"anchors": 1, "trials": 2}, **optuna_section}
    return doc


def test_the_draw_of_a_tuned_anchor_is_never_pruned():
    """The first searched trial tunes kd: the draw that trains it knows so, so the pruner cannot stop it."""
    spec = validate_study(study_doc())
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    draw = TrialRunner(spec, n_trials=9).prepare(study.ask())
    assert draw.tuned == "kd" and draw.trial.user_attrs[TUNED_ATTR] == "kd"
    assert not draw.prunable


@pytest.mark.parametrize("section, field, words", [
    ({"trials": 0}, "optuna.tune_anchors.trials", ">= 1"),
    ({"anchors": -1}, "optuna.tune_anchors.anchors", ">= 0"),
    ({"weight_decades": 0}, "optuna.tune_anchors.weight_decades", "> 0"),
    ({"budget": 3}, "optuna.tune_anchors.budget", "allowed fields: anchors, trials, weight_decades"),
])
def test_bad_tune_anchors_sections_name_the_field(section, field, words):
    with pytest.raises(ConfigError) as err:
        validate_study(study_doc(tune_anchors=section))
    assert any(e.startswith(f"{field}:") and words in e for e in err.value.errors), err.value.errors
    with pytest.raises(ConfigError, match=r"optuna.tune_anchors: the study has no anchors to tune"):
        validate_study(study_doc(anchors=[]))


def test_a_tuned_study_always_has_none_among_its_anchors():
    doc = study_doc(anchors=["kd", "sp+kd"])
    assert validate_study(doc).anchors == ("kd", "sp+kd")
    doc["tune"] = {"lr": [0.05, 0.1], "seeds": 2}
    assert validate_study(doc).anchors == ("none", "kd", "sp+kd")


def test_the_first_searched_trials_tune_kd_and_the_best_anchors_in_turns():
    tuning = AnchorTuning(anchors=2, trials=2)
    ranked = [("sp+kd", {}), ("kd", {}), ("none", {}), ("rkd+kd", {})]
    roles = [tuning.choose(i, ranked, ("none", "kd", "sp+kd", "rkd+kd")) for i in range(8)]
    assert roles == ["kd", "sp+kd", "rkd+kd", "kd", "sp+kd", "rkd+kd", None, None]  # never none: the recipe's
    assert AnchorTuning(anchors=1, trials=1).choose(0, ranked, ("sp+kd",)) == "sp+kd"  # no kd anchor: not tuned


def test_a_tuned_anchor_changes_hyperparameters_only():
    base = preset("sp+kd")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    config = AnchorTuning(weight_decades=1.0).sample(trial, "sp+kd", base)
    assert set(trial.params) == {"tuned.sp+kd.term0.scale", "tuned.sp+kd.kd.temperature", "tuned.sp+kd.kd.weight",
                                 "tuned.sp+kd.ce_weight"}
    (term,) = config["terms"]
    assert (term["tap"], term["view"], term["affinity"], term["loss"]) == \
        tuple(base["terms"][0][k] for k in ("tap", "view", "affinity", "loss"))
    assert term["weight"] == pytest.approx(base["terms"][0]["weight"] * trial.params["tuned.sp+kd.term0.scale"])
    assert config["kd"]["temperature"] == pytest.approx(4.0 * trial.params["tuned.sp+kd.kd.temperature"])


@pytest.mark.slow
def test_a_study_trains_its_tuned_anchors_in_full_and_its_verdict_is_against_the_best_known():
    spec = validate_study(study_doc(n_trials=10, ladder={"rungs": [1], "reduction": 3, "min_trials": 1},
                                    rerun={"top_k": 1, "anchors": 1, "seeds": 3}))
    result = run_study(spec, progress=False)
    study = result.study
    trials = study.get_trials(deepcopy=False)
    tuned = [t for t in trials if TUNED_ATTR in t.user_attrs]
    searched = [t for t in trials if "anchor" not in t.user_attrs and "rerun" not in t.user_attrs]
    assert [t.number for t in tuned] == [t.number for t in searched[:4]]  # (kd + 1 best) x 2, first
    best_other = max((t for t in trials if t.user_attrs.get("anchor") not in (None, "kd", "none")),
                     key=lambda t: t.value)
    best = best_other.user_attrs["anchor"]
    assert sorted(t.user_attrs[TUNED_ATTR] for t in tuned) == sorted(["kd", "kd", best, best])
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["epochs"] == 2 for t in tuned)  # never pruned
    assert all(any(p.startswith(f"tuned.{t.user_attrs[TUNED_ATTR]}.") for p in t.params) for t in tuned)
    known = [c for c in compositions(study) if c.known]
    assert {c.trial.number for c in known if c.tuned} == {t.number for t in tuned}
    verdict = search_verdict(study)
    assert verdict["best_anchor"]["trial"] == known[0].trial.number  # the best known method, tuned or not
    assert verdict["none"] is not None and verdict["ci"] is not None
    assert len(counted_trials(study)) == 10


def _study(values):
    """``values``: [(value, anchor, tuned)] in trial order, seed 0 each."""
    study = optuna.create_study(direction="maximize")
    for value, anchor, tuned in values:
        attrs = {"objective_config": preset("kd"), "seed": 0, **({"anchor": anchor} if anchor else {}),
                 **({TUNED_ATTR: tuned} if tuned else {})}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs))
    return study


def test_tuned_anchors_are_known_methods_in_the_ranking_the_reruns_and_the_verdict():
    study = _study([(0.80, "none", None), (0.82, "kd", None), (0.86, None, "kd"), (0.84, None, None),
                    (0.83, None, None)])
    assert [c.label for c in compositions(study)] == ["tuned kd (trial 2)", "trial 3", "trial 4", "anchor kd",
                                                      "anchor none"]
    plan = rerun_plan(study, Rerun(top_k=1, anchors=1, seeds=2), base_seed=0)
    assert sorted(plan) == [(2, 1), (3, 1)]
    verdict = search_verdict(study)
    assert verdict["best_anchor"]["label"] == "tuned kd (trial 2)" and verdict["outcome"] == "did not beat"
    assert "vs best known tuned kd (trial 2) 86.00%" in verdict_line(verdict)


def test_a_verdict_that_does_not_beat_ce_alone_says_so_first():
    study = _study([(0.85, "none", None), (0.82, "kd", None), (0.84, None, None)])
    line = verdict_line(search_verdict(study))
    assert line.startswith("the search did not beat CE alone (none 85.00%")
    study = _study([(0.80, "none", None), (0.82, "kd", None), (0.84, None, None)])  # one seed each: no win
    assert verdict_line(search_verdict(study)).startswith("the search did not beat the known methods beyond seed "
                                                          "noise: best searched trial 2 84.00% vs best known kd")


def test_refinement_leaves_hyperparameter_only_moves_to_the_tuned_anchors():
    from relkd.study.refine import Refinement

    spec = validate_study(study_doc())
    base = [("sp+kd", preset("sp+kd"))]
    invalid = 0
    for seed in range(12):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        config, problems = Refinement(extra_term=False).sample(trial, base, spec.space, structural_only=True)
        changed = any(trial.params.get(f"refine.term0.{k}", "keep") not in ("keep", base[0][1]["terms"][0][k])
                      for k in ("tap", "view"))
        assert bool(problems) == (not changed)
        invalid += bool(problems)
        if problems:
            assert "no structural change to sp+kd" in problems[0]
    assert 0 < invalid < 12


@pytest.mark.slow
def test_two_workers_share_the_tuned_anchors_and_resume_them(tmp_path):
    """Two worker processes on one SQLite study: every tuned-anchor slot is trained once."""
    doc = study_doc(n_trials=9, heartbeat_interval=1)
    path = tmp_path / "s.yaml"
    path.write_text(yaml_dump(doc))
    storage = f"sqlite:///{tmp_path}/w.db"
    procs = [subprocess.Popen([sys.executable, "-m", "relkd.cli", "study", "worker", str(path), "--storage", storage,
                               "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    tuned = [t for t in study.trials if TUNED_ATTR in t.user_attrs]
    assert [(t.number, t.state, t.user_attrs[TUNED_ATTR]) for t in tuned] == \
        [(t.number, TrialState.COMPLETE, t.user_attrs[TUNED_ATTR]) for t in tuned] and len(tuned) == 4, \
        [(t.number, t.state, t.user_attrs, t.system_attrs) for t in study.trials]
    assert [searched_index(study, t.number) for t in tuned] == [0, 1, 2, 3]
    assert len(counted_trials(study)) == 9
