"""Feature-level terms (relkd.features): each preset against the from-the-formula references in
reference_features.py (values and student gradients), their trainable parts in training, the
config family ``kind: feature`` and its errors."""
import copy

import pytest
import torch

import relkd
import reference as ref
import reference_features as rf
from relkd.engine import run_population, run_trial, train_runs
from relkd.fields import ConfigError
from relkd.objective import probe_objective
from relkd.presets import PRESETS
from relkd.setting import validate_setting
from relkd.study import run_study, validate_study
from gradients import assert_total_and_student_gradients_match
from tiny import TINY_SETTING

B = 12
FEATURE_METHODS = ("fitnet", "at", "nst", "vid", "crd", "srm")
FEATURE_PRESETS = sorted(n for n in relkd.list_presets() if PRESETS.get(n).property("family") == "feature")


def make_taps(seed, student, dtype=torch.float64):
    """Student and teacher taps of different widths and, at stage1, different spatial sizes."""
    g = torch.Generator().manual_seed(seed)
    width = 6 if student else 10

    def t(*shape):
        return torch.relu(torch.randn(*shape, generator=g, dtype=dtype))

    taps = {
        "logits": torch.randn(B, 10, generator=g, dtype=dtype) * 3,
        "stage1": t(B, width, 8, 8) if student else t(B, width, 16, 16),
        "stage2": t(B, 2 * width, 4, 4),
        "last_stage": t(B, 4 * width, 2, 2),
        "pool": torch.randn(B, 4 * width, generator=g, dtype=dtype),
    }
    if student:
        for v in taps.values():
            v.requires_grad_(True)
    return taps


def bound(name, s, t, num_samples=3 * B):
    objective = relkd.build_objective(name)
    objective.bind(s, t, num_samples)
    objective.prepare_stages(lambda tap: lambda: iter([t[tap].float()]))  # SRM: a dictionary of this batch
    objective.modules.double()
    return objective


def fitnet_reference(f_s, f_t, method):
    """The reference FitNets loss with the parameters of ``method``'s regressor."""
    regressor = method.regressor
    if f_s.dim() != 4:
        return rf.fitnet_loss(f_s, f_t, regressor.weight, regressor.bias)
    conv, norm = regressor[0], regressor[1]
    return rf.fitnet_loss(f_s, f_t, conv.weight, conv.bias, norm.weight, norm.bias)


def reference_term(term, s, t, index, memory):
    """The reference value of one feature term, from the term's own trained parts."""
    method, fs, ft = term.method, s[term.tap], t[term.tap]
    name = term.entry.name
    if name == "fitnet":
        return fitnet_reference(fs, ft, method)
    if name == "at":
        return rf.at_loss(fs, ft, term.params["p"])
    if name == "nst":
        return rf.nst_loss(fs, ft)
    if name == "vid":
        return rf.vid_loss(fs, ft, method.regressor, method.log_scale, term.params["eps"])
    if name == "srm":
        return rf.srm_loss(fs, ft, method.head.centers, method.head.intercept, method.dictionary, method.bias, method.k,
                           term.params["pixel_weight"], term.params["image_weight"])
    assert name == "crd"
    memory_s, memory_t = memory
    return rf.crd_loss(fs, ft, method.embed_s.weight, method.embed_s.bias, method.embed_t.weight,
                       method.embed_t.bias, memory_s, memory_t, index, method.last_negatives,
                       term.params["temperature"], method.z[0], method.z[1])


#: (CE weight, KD weight) of the +kd presets: RepDistiller's KD command (-r 0.1 -a 0.9), and its
#: published CRD+KD command (-a 1 -b 0.8, CE's default 1) for crd+kd (scripts/run_cifar_distill.sh)
WITH_KD = {"crd+kd": (1.0, 1.0)}


def expected_total(name, objective, s, t, y, index, memory):
    with_kd = name.endswith("+kd")
    ce, kd = WITH_KD.get(name, (0.1, 0.9)) if with_kd else (1.0, 0.0)
    total = ce * torch.nn.functional.cross_entropy(s["logits"], y)
    if with_kd:
        total = total + kd * ref.kd_loss(s["logits"], t["logits"], T=4.0)
    for term in objective.terms:
        total = total + term.weight * reference_term(term, s, t, index, memory)
    return total


def test_feature_presets_are_listed_with_kd_variants():
    assert sorted(FEATURE_PRESETS) == sorted(FEATURE_METHODS + tuple(f"{m}+kd" for m in FEATURE_METHODS))
    assert relkd.list_presets("*") == sorted(relkd.list_presets("*"))
    for name in FEATURE_PRESETS:
        cfg = relkd.preset(name)
        assert cfg["terms"] and all(t["kind"] == "feature" for t in cfg["terms"])
        assert relkd.validate_config(cfg) == cfg
    # the published weights (RepDistiller's benchmark) and taps
    weights = {m: [t["weight"] for t in relkd.preset(m)["terms"]] for m in FEATURE_METHODS}
    assert weights == {"fitnet": [100.0], "at": [1000.0] * 3, "nst": [50.0] * 3, "vid": [1.0] * 3, "crd": [0.8],
                       "srm": [1.0] * 3}
    crd = relkd.preset("crd+kd")["terms"][0]
    assert crd["tap"] == "pool" and crd["method"] == {"name": "crd", "feat_dim": 128, "negatives": 16384,
                                                      "temperature": 0.07, "momentum": 0.5}
    # crd+kd is the published CRD+KD command; every other +kd preset is the kd preset's recipe plus the terms
    assert (relkd.preset("crd+kd")["ce_weight"], relkd.preset("crd+kd")["kd"]) == (1.0, {"weight": 1.0,
                                                                                       "temperature": 4.0})
    for name in FEATURE_METHODS:
        if name != "crd":
            cfg = relkd.preset(f"{name}+kd")
            assert (cfg["ce_weight"], cfg["kd"]) == (relkd.preset("kd")["ce_weight"], relkd.preset("kd")["kd"])


@pytest.mark.parametrize("name", FEATURE_PRESETS)
@pytest.mark.parametrize("seed", [0, 1])
def test_feature_preset_total_and_gradient_match_reference(name, seed):
    s, t, y = make_taps(seed, True), make_taps(seed + 100, False), torch.randint(10, (B,))
    index = torch.randperm(3 * B)[:B]
    objective = bound(name, s, t)
    crd = [term.method for term in objective.terms if term.entry.name == "crd"]
    memory = (crd[0].memory_s.clone(), crd[0].memory_t.clone()) if crd else None
    parts = objective(s, t, y, index=index)
    want = expected_total(name, objective, s, t, y, index, memory)
    grads = assert_total_and_student_gradients_match(parts["total"], want, s)
    for i, term in enumerate(objective.terms):  # not vacuous: every term has a value and moves the student
        part = objective.part_names[i + 1 + (objective.kd is not None)]
        assert float(parts[part].detach().abs()) > 1e-8, part
        assert torch.count_nonzero(grads[list(s).index(term.tap)]) > 0


def test_crd_fixes_z_at_the_first_batch_and_moves_the_batch_rows_of_its_banks():
    s, t = make_taps(2, True), make_taps(3, False)
    objective = bound("crd", s, t)
    crd = objective.terms[0].method
    index = torch.tensor([0, 5, 7, 9, 11, 13, 17, 19, 23, 29, 31, 35])
    memory_s, memory_t = crd.memory_s.clone(), crd.memory_t.clone()
    objective(s, t, torch.randint(10, (B,)), index=index)
    e_s = torch.nn.functional.normalize(s["pool"] @ crd.embed_s.weight.t() + crd.embed_s.bias, dim=1).detach()
    e_t = torch.nn.functional.normalize(t["pool"] @ crd.embed_t.weight.t() + crd.embed_t.bias, dim=1).detach()
    rows = torch.cat([index[:, None], crd.last_negatives], 1)
    z_s = torch.exp((memory_t[rows] @ e_s[:, :, None]).squeeze(2) / 0.07).mean() * 3 * B
    torch.testing.assert_close(crd.z[0], z_s)
    torch.testing.assert_close(crd.memory_s, rf.crd_memory_update(memory_s, e_s, index, 0.5))
    torch.testing.assert_close(crd.memory_t, rf.crd_memory_update(memory_t, e_t, index, 0.5))
    assert not torch.equal(crd.memory_s, memory_s)
    z = crd.z.clone()
    objective(s, t, torch.randint(10, (B,)), index=index)  # Z stays what the first batch set
    assert torch.equal(crd.z, z)
    assert crd.last_negatives.shape == (B, 16384) and int(crd.last_negatives.max()) < 3 * B


def test_feature_terms_compute_in_float32_under_autocast():
    s, t = make_taps(4, True, torch.float32), make_taps(5, False, torch.float32)
    objective = relkd.build_objective("vid+kd").bind(s, t)
    want = objective(s, t, torch.zeros(B, dtype=torch.long))["vid_stage2"]
    half = {k: v.detach().bfloat16() for k, v in s.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = objective(half, {k: v.bfloat16() for k, v in t.items()}, torch.zeros(B, dtype=torch.long))
    assert got["vid_stage2"].dtype == torch.float32
    torch.testing.assert_close(got["vid_stage2"], want, rtol=2e-2, atol=1e-3)


def test_an_unbound_trainable_term_and_a_missing_index_say_what_to_do():
    s, t = make_taps(0, True), make_taps(1, False)
    with pytest.raises(RuntimeError, match=r"fitnet.*objective\.bind\(student_taps, teacher_taps, num_samples\)"):
        relkd.build_objective("fitnet")(s, t, torch.zeros(B, dtype=torch.long))
    objective = bound("crd+kd", s, t)
    with pytest.raises(ValueError, match=r"term 'crd' at tap 'pool': crd: needs each sample's index"):
        objective(s, t, torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 36\)"):
        objective(s, t, torch.zeros(B, dtype=torch.long), index=torch.arange(30, 30 + B))
    with pytest.raises(ValueError, match=r"crd: its memory banks hold one row per training sample"):
        relkd.build_objective("crd").bind(s, t)
    at = relkd.build_objective({"terms": [{"kind": "feature", "tap": "stage2", "method": "at"}]})
    flat = {**s, "stage2": s["pool"]}
    with pytest.raises(ValueError, match=r"at compares feature maps \(B, C, H, W\); the student's tap gave \(12, 24\)"):
        at(flat, t, torch.zeros(B, dtype=torch.long))


@pytest.mark.parametrize("term, field, message", [
    ({"kind": "feature", "tap": "pool", "method": "at"}, "terms[0].tap",
     "at compares feature maps (B, C, H, W); tap 'pool' has no spatial dimensions"),
    ({"kind": "feature", "tap": "logits", "method": {"name": "nst"}}, "terms[0].tap", "no spatial dimensions"),
    ({"kind": "feature", "tap": "stage2"}, "terms[0].method", "missing; choose one of at, crd, fitnet, nst, srm, vid"),
    ({"kind": "feature", "tap": "stage2", "method": "atn"}, "terms[0].method.name", "did you mean 'at'"),
    ({"kind": "feature", "tap": "pool", "method": {"name": "crd", "feat_dim": 0}}, "terms[0].method.feat_dim",
     "expected an integer in [1, 65536]"),
    ({"kind": "feature", "tap": "stage2", "method": {"name": "srm", "codewords": 0}}, "terms[0].method.codewords",
     "expected a number in (0.0, 64.0]"),
    ({"kind": "feature", "tap": "pool", "method": {"name": "crd", "temperature": -1}},
     "terms[0].method.temperature", "expected a number in [0.0001, 100.0]"),
    ({"kind": "feature", "tap": "stage2", "method": "at", "affinity": "dot"}, "terms[0].affinity",
     "unknown field; allowed fields: kind, name, tap, method, weight"),
    ({"kind": "features", "tap": "stage2", "method": "at"}, "terms[0].kind",
     "expected one of relation, feature (relation when left out)"),
    ({"tap": "pool", "affinity": "dot", "method": "at"}, "terms[0].method", "unknown field"),
])
def test_bad_feature_terms_name_the_field(term, field, message):
    with pytest.raises(ConfigError) as err:
        relkd.validate_config({"terms": [term]})
    assert any(e.startswith(f"{field}:") and message in e for e in err.value.errors), err.value.errors


def test_relation_configs_keep_their_canonical_form():
    """A config of today loads as before: relation terms get no ``kind`` field (so records and
    hashes of old studies are unchanged), and an explicit ``kind: relation`` is the same term."""
    sp = relkd.preset("sp+kd")
    assert "kind" not in sp["terms"][0]
    explicit = copy.deepcopy(sp)
    explicit["terms"][0]["kind"] = "relation"
    assert relkd.validate_config(explicit) == sp
    mixed = relkd.validate_config({**sp, "terms": sp["terms"] + relkd.preset("at")["terms"]})
    assert [t.get("kind", "relation") for t in mixed["terms"]] == ["relation", "feature", "feature", "feature"]
    assert relkd.build_objective(mixed).to_config() == mixed


def setting(**budget):
    doc = copy.deepcopy(TINY_SETTING)
    doc["budget"].update(budget)
    return validate_setting(doc)


def test_trainable_parts_train_with_the_student_and_are_saved_beside_it(isolated, tmp_path):
    s = setting()
    objective = relkd.build_objective("fitnet+kd")
    summary = train_runs(s, objective, seeds=[0], out=tmp_path)
    assert summary["per_seed"][0]["part_means"]["fitnet"] > 0
    assert not objective.bound  # train_runs trained its own copy
    state = torch.load(tmp_path / "objective_seed0.pt", weights_only=True)
    assert set(state) >= {"t0_fitnet.regressor.0.weight", "t0_fitnet.regressor.1.running_mean"}
    assert (tmp_path / "student_seed0.pt").is_file()
    # the regressor moved from where the same seed builds it
    fresh = relkd.build_objective("fitnet+kd")
    torch.manual_seed(0)
    taps = {"stage2": torch.zeros(2, 8, 14, 14), "logits": torch.zeros(2, 10)}
    fresh.bind({**taps, "stage2": torch.zeros(2, 8, 14, 14)}, {**taps, "stage2": torch.zeros(2, 16, 14, 14)})
    assert state["t0_fitnet.regressor.0.weight"].shape == fresh.state_dict()["t0_fitnet.regressor.0.weight"].shape


@pytest.mark.slow
def test_every_feature_preset_trains_reproducibly_and_leaves_the_teacher_alone(isolated):
    from relkd.engine import get_teacher

    s = setting(epochs=1)
    teacher = get_teacher(s)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    for name in ("fitnet", "at+kd", "nst", "vid+kd", "crd+kd", "srm+kd"):
        first = run_trial(s, name, teacher=teacher)
        assert all(v == v for v in first.part_means.values()), name  # finite
        assert first.val_accuracy > 0
        if name == "crd+kd":
            again = run_trial(s, name, teacher=teacher)
            assert again.val_history == first.val_history
            assert again.part_means == first.part_means
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_run_trial_trains_a_bound_objective_from_its_start(isolated):
    s = setting(epochs=1)
    objective = relkd.build_objective("vid")
    first = run_trial(s, objective, return_model=True)
    again = run_trial(s, objective, return_model=True)
    assert first.val_history == again.val_history
    assert set(first.objective_state) == set(again.objective_state)


@pytest.mark.slow
def test_populations_refuse_trainable_terms_and_studies_train_them_alone(isolated):
    with pytest.raises(ValueError, match=r"members \[1\] have feature terms .* train them with run_trial"):
        run_population(setting(epochs=1), ["kd", "crd+kd"])
    doc = copy.deepcopy(TINY_SETTING)
    doc["search"] = {"tap": ["last_stage", "pool"]}
    doc["optuna"] = {"n_trials": 4, "anchors": ["kd", "at+kd", "crd+kd", "fitnet"], "pruner": "none"}
    result = run_study(validate_study(doc), progress=False, population=2)
    trials = {t.user_attrs.get("anchor"): t for t in result.study.trials}
    assert set(trials) == {"kd", "at+kd", "crd+kd", "fitnet"}
    assert all(t.state.name == "COMPLETE" for t in trials.values())
    assert trials["crd+kd"].user_attrs["part_means"]["crd"] > 0
    from relkd.analysis.choices import choice_stats, completed, trial_choices

    assert trial_choices(trials["crd+kd"].user_attrs["objective_config"])["family"] == {"feature"}
    assert trial_choices(trials["kd"].user_attrs["objective_config"])["family"] == {"(no term)"}
    methods = choice_stats(completed(result.study), "method")
    assert set(methods) == {"at", "crd", "fitnet", "(no term)"}


def test_check_evaluates_every_part_of_a_feature_preset(capsys):
    from relkd.cli import main

    assert main(["check", "crd+kd"]) == 0
    out = capsys.readouterr().out
    for part in ("ce", "kd", "crd", "total"):
        assert f"\n  {part} " in out
    result = probe_objective("vid+kd")
    assert all(result[f"vid_{tap}"] > 0 for tap in ("stage1", "stage2", "last_stage"))


MIXED = {"terms": {"low": 1, "high": 3}, "family": ["relation", "feature"], "method": ["at", "nst", "fitnet"],
         "tap": ["stage2", "last_stage", "pool"], "view": ["avgpool"],
         "weight": {"low": 1e-2, "high": 1e4, "log": True}}


def test_a_space_that_mixes_families_draws_each_term_from_its_own_family():
    import optuna
    from relkd.study.space import validate_search

    space = validate_search(MIXED)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds, invalid = set(), 0
    for _ in range(120):
        trial = study.ask()
        config, problems = space.sample(trial)
        if problems:  # only a map method on a vector tap is invalid here
            invalid += 1
            assert all("compares feature maps" in p or "combination" in p or "rule" in p or "normal" in p
                       for p in problems), problems
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        assert relkd.validate_config(config) == config
        for i, term in enumerate(config["terms"]):
            kind = term.get("kind", "relation")
            kinds.add(kind)
            assert trial.params[f"term{i}.family"] == kind
            if kind == "feature":  # a feature term draws its method, never a relation field
                assert set(term) == {"kind", "tap", "method", "weight"}
                assert f"term{i}.affinity" not in trial.params and f"term{i}.view" not in trial.params
            else:
                assert f"term{i}.method" not in trial.params
        assert space.params_for(config) == trial.params  # the inverse of the draw
        study.tell(trial, 0.5)
    assert kinds == {"relation", "feature"} and invalid > 0
    # the presets of both families lie in it; a relation-only space leaves feature presets out
    assert space.params_for(relkd.preset("at+kd")) is None  # three terms at stage1: stage1 is not offered
    wide = validate_search({**MIXED, "tap": ["stage1", "stage2", "last_stage"], "weight": {"low": 1, "high": 1e4,
                                                                                          "log": True}})
    assert wide.params_for(relkd.preset("at+kd"))["term2.method"] == "at"
    assert validate_search({"tap": ["stage2"]}).params_for(relkd.preset("fitnet")) is None
    # relation-only spaces are described as before (no family, no method)
    assert "family" not in validate_search(None).describe() and space.describe()["family"] == ["relation", "feature"]


def test_bad_family_sections_name_the_field():
    from relkd.study.space import validate_search

    with pytest.raises(ConfigError, match=r"search\.family\[1\]: unknown term family 'features'; did you mean"):
        validate_search({"family": ["relation", "features"]})
    with pytest.raises(ConfigError, match=r"search\.method\[0\]: unknown feature method 'crdd'; did you mean 'crd'"):
        validate_search({"family": "feature", "method": ["crdd"]})
    with pytest.raises(ConfigError, match=r"search\.family: a grid cannot mix the families"):
        validate_search({"family": ["relation", "feature"], "terms": 1, "weight": 1.0}).grid()


@pytest.mark.slow
def test_a_study_that_opts_in_trains_feature_and_relation_terms_together(isolated):
    from relkd.analysis.importance import study_importance

    doc = copy.deepcopy(TINY_SETTING)
    doc["budget"]["epochs"] = 1
    doc["search"] = MIXED
    doc["optuna"] = {"n_trials": 12, "anchors": ["kd", "at+kd"], "pruner": "none",
                     "sampler": "random", "seed": 1}
    result = run_study(validate_study(doc), progress=False)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE" and "anchor" not in t.user_attrs]
    families = [{t.get("kind", "relation") for t in tr.user_attrs["objective_config"]["terms"]} for tr in done]
    assert {"relation", "feature"} <= set().union(*families)
    assert any(f == {"relation", "feature"} for f in families)  # one composition with both families
    report = study_importance(result.study, "fanova")
    assert "family" in report["best_per_choice"] and "method" in report["best_per_choice"]
    assert set(report["best_per_choice"]["family"]) >= {"relation", "feature"}
    assert "family" in report["groups"]


# ----------------------------------------------------------------------------- layer pairs

def test_a_term_may_pair_different_layers_and_sum_over_a_list_of_pairs():
    s, t, y = make_taps(6, True), make_taps(7, False), torch.randint(10, (B,))
    pairs = [{"student": "stage2", "teacher": "last_stage"}, "stage1", {"student": "last_stage", "teacher": "stage2"}]
    sp = relkd.preset("sp")["terms"][0]
    config = relkd.validate_config({"terms": [{**sp, "tap": pairs, "name": "sp_pairs"},
                                              {"kind": "feature", "tap": pairs, "method": "fitnet", "weight": 2.0}]})
    assert config["terms"][0]["tap"] == pairs
    objective = relkd.build_objective(config)
    assert objective.student_taps == ("logits", "stage2", "stage1", "last_stage")
    assert objective.to_config() == config
    objective.bind(s, t)
    objective.modules.double()
    parts = objective(s, t, y)
    want_sp = sum(ref.sp_loss(s[a], t[b]) for a, b in [("stage2", "last_stage"), ("stage1", "stage1"),
                                                      ("last_stage", "stage2")])
    torch.testing.assert_close(parts["sp_pairs"], want_sp, rtol=1e-7, atol=1e-10)
    regressors = [m.regressor for m in objective.terms[1].methods]  # one regressor per pair, shaped for it
    assert [r[0].out_channels for r in regressors] == [40, 10, 20]
    want_fit = sum(fitnet_reference(s[a], t[b], m) for (a, b), m in
                   zip([("stage2", "last_stage"), ("stage1", "stage1"), ("last_stage", "stage2")],
                       objective.terms[1].methods))
    torch.testing.assert_close(parts["term1"], want_fit, rtol=1e-7, atol=1e-10)
    assert set(objective.state_dict()) >= {"t1_term1.0.regressor.0.weight", "t1_term1.2.regressor.0.weight"}


@pytest.mark.parametrize("tap, field, message", [
    ({"student": "stage2"}, "terms[0].tap.teacher", "missing; a tap pair names the student's and the teacher's"),
    ({"student": "stage2", "techer": "stage3"}, "terms[0].tap.techer", "unknown field; did you mean 'teacher'"),
    ([], "terms[0].tap", "got an empty list"),
    (["stage2", {"student": "stage2", "teacher": "stage2"}], "terms[0].tap", "stage2 -> stage2 is listed more"),
    ([{"student": "stage2", "teacher": 3}], "terms[0].tap[0].teacher", "expected a tap (layer) name"),
])
def test_bad_tap_pairs_name_the_field(tap, field, message):
    with pytest.raises(ConfigError) as err:
        relkd.validate_config({"terms": [{"tap": tap, "affinity": "dot"}]})
    assert any(e.startswith(f"{field}:") and message in e for e in err.value.errors), err.value.errors


def test_pairs_collapse_to_their_canonical_form_and_feature_maps_are_checked_per_side():
    same = relkd.validate_config({"terms": [{"tap": [{"student": "pool", "teacher": "pool"}], "affinity": "dot"}]})
    assert same["terms"][0]["tap"] == "pool"
    with pytest.raises(ConfigError, match=r"terms\[0\]\.tap: at compares feature maps .* tap 'pool'"):
        relkd.validate_config({"terms": [{"kind": "feature", "method": "at",
                                          "tap": {"student": "stage2", "teacher": "pool"}}]})


@pytest.mark.slow
def test_training_reads_the_student_and_teacher_layers_of_each_pair(isolated):
    s = setting(epochs=1)
    config = {"kd": {"weight": 0.9}, "ce_weight": 0.1, "terms": [
        {"tap": {"student": "stage2", "teacher": "last_stage"}, "view": "avgpool", "affinity": "cosine",
         "loss": "mse", "weight": 10.0},
        {"kind": "feature", "tap": [{"student": "stage1", "teacher": "stage2"}, "last_stage"], "method": "vid",
         "weight": 1.0}]}
    result = run_trial(s, config)
    assert result.part_means["term0"] > 0 and result.part_means["term1"] != 0


def test_the_search_may_choose_the_teachers_layer():
    import optuna
    from relkd.study.space import validate_search

    space = validate_search({"terms": {"low": 1, "high": 4}, "tap": ["stage2", "last_stage"],
                             "teacher_tap": ["same", "stage1", "last_stage"], "view": ["avgpool"]})
    assert validate_search(None).describe().get("teacher_tap") is None  # old records stay as they were
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    shapes, counts = set(), set()
    for _ in range(80):
        trial = study.ask()
        config, problems = space.sample(trial)
        if problems:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        counts.add(len(config["terms"]))
        for i, term in enumerate(config["terms"]):
            teacher = trial.params[f"term{i}.teacher_tap"]
            if teacher in ("same", term["tap"] if isinstance(term["tap"], str) else None):
                shapes.add("same")
                assert isinstance(term["tap"], str)
            else:
                shapes.add("pair")
                assert term["tap"] == {"student": trial.params[f"term{i}.tap"], "teacher": teacher}
        assert space.params_for(config) is not None
        study.tell(trial, 0.5)
    assert shapes == {"same", "pair"} and max(counts) > 2  # pairs chosen, and more than two terms



# ----------------------------------------------------------------------------- SRM's stage

@pytest.mark.slow
def test_srm_learns_its_dictionary_once_per_teacher_and_caches_it(isolated, monkeypatch, caplog):
    import relkd.features.srm as srm_module
    from relkd.cache import cache_root
    from relkd.engine import get_teacher

    s = setting(epochs=1)
    teacher = get_teacher(s)
    calls, real = [], srm_module.learn_dictionary

    def counting(*args, **kwargs):
        calls.append(args[1:4])  # channels, atoms, k
        return real(*args, **kwargs)

    monkeypatch.setattr(srm_module, "learn_dictionary", counting)
    first = run_trial(s, "srm", teacher=teacher, return_model=True)
    assert len(calls) == 3  # one dictionary per stage tap
    assert [c[1] for c in calls] == [2 * c[0] for c in calls]  # M = 2 C_t
    again = run_trial(s, "srm", teacher=teacher, seed=1)  # another seed shares the teacher's dictionaries
    assert len(calls) == 3 and again.part_means["srm_stage2"] > 0
    files = sorted((cache_root() / "srm").glob("*/dictionary.pt"))
    assert len(files) == 3
    state = first.objective_state
    stored = torch.load(files[0], weights_only=True)
    assert any(torch.equal(stored["dictionary"], v) for k, v in state.items() if k.endswith("dictionary"))
    files[0].write_bytes(files[0].read_bytes()[:-8])  # a damaged entry is learned again, not used
    run_trial(s, "srm", teacher=teacher)
    assert len(calls) == 4


def test_srm_codes_keep_k_atoms_and_the_labels_follow_them():
    from relkd.features.srm import sparse_codes

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 3, generator=g)
    dictionary, bias = torch.randn(5, 10, generator=g), torch.zeros(1)
    codes = sparse_codes(x, dictionary, bias, 3)
    assert codes.shape == (2, 3, 3, 10) and torch.equal((codes > 0).sum(-1), torch.full((2, 3, 3), 3))
    torch.testing.assert_close(codes, rf.srm_codes(x, dictionary, bias, 3))


def test_a_dictionary_too_small_for_its_tap_names_the_field():
    s, t = make_taps(0, True), make_taps(1, False)
    objective = relkd.build_objective({"terms": [{"kind": "feature", "tap": "stage2",
                                                  "method": {"name": "srm", "codewords": 0.05}}]})
    with pytest.raises(ValueError, match=r"srm: method\.codewords 0\.05 x 20 teacher channels gives a dictionary of "
                                         r"1 atom\(s\); expected at least 2"):
        objective.bind(s, t)
    objective = relkd.build_objective("srm").bind(s, t)
    with pytest.raises(ValueError, match=r"srm: its dictionary stage has not run"):
        objective(s, t, torch.zeros(B, dtype=torch.long))


def test_the_quinn_comparison_files_validate_and_list_features(capsys):
    from pathlib import Path

    from relkd.cli import main
    from relkd.study.compare import load_compare

    root = Path(__file__).resolve().parents[1] / "studies"
    for name, student in (("compare_quinn_fmnist.yaml", "cnn_tiny"), ("compare_quinn_cifar100.yaml", "resnet8x4")):
        spec = load_compare(root / name)
        assert spec.methods == ("fitnet", "at", "sp", "vid", "rkd", "pkt", "nst", "crd", "cc", "srm")
        assert spec.findings == "quinn" and spec.with_kd and len(spec.seeds) >= 3
        assert spec.setting.student.model == student
    assert main(["list", "features"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("features (6):") and all(f"\n  {m} " in out for m in FEATURE_METHODS)


def test_feature_search_sections_that_cannot_draw_say_so():
    from relkd.study.space import validate_search

    with pytest.raises(ConfigError, match=r"search\.method: the space draws no feature terms; add feature"):
        validate_search({"method": ["at"]})
    with pytest.raises(ConfigError, match=r"search: no method in search\.method can read a tap in search\.tap"):
        validate_search({"family": "feature", "method": ["at", "nst"], "tap": ["pool"], "terms": 1})
    grid = validate_search({"family": "feature", "method": ["at"], "tap": ["stage2"], "terms": 1,
                            "weight": [1.0, 10.0], "kd": False, "ce_weight": 1.0}).grid()
    assert grid == {"term0.weight": [1.0, 10.0]}  # no relation component, no component_params problem


def test_term_names_cannot_take_another_terms_part_name_or_module_attributes():
    with pytest.raises(ConfigError, match=r"terms\[0\]\.name: 'term1' is the name an unnamed term"):
        relkd.validate_config({"terms": [{"name": "term1", "kind": "feature", "tap": "stage2", "method": "fitnet"},
                                         {"kind": "feature", "tap": "stage2", "method": "vid"}]})
    objective = relkd.build_objective({"terms": [
        {"name": "train", "kind": "feature", "tap": "stage2", "method": "fitnet"},
        {"name": "forward", "kind": "feature", "tap": "stage2", "method": "vid"}]})
    s, t = make_taps(0, True), make_taps(1, False)
    objective.bind(s, t)
    assert sorted(objective.modules) == ["t0_train", "t1_forward"] and len(objective.parameters()) > 4
    with pytest.raises(ConfigError, match=r"terms\[0\]\.kind: missing: a term with a method .* add kind: feature"):
        relkd.validate_config({"terms": [{"tap": "stage2", "method": "at"}]})
    with pytest.raises(ConfigError, match=r"fitnet compares a student tap with a teacher tap of the same kind"):
        relkd.validate_config({"terms": [{"kind": "feature", "method": "fitnet",
                                          "tap": {"student": "stage2", "teacher": "pool"}}]})


def test_attention_uses_absolute_activations():
    s, t = make_taps(0, True), make_taps(1, False)
    signed_s = {k: v.detach() - 0.5 for k, v in s.items()}
    term = relkd.build_objective({"terms": [{"kind": "feature", "tap": "stage2", "method": {"name": "at", "p": 2.5}}]})
    value = term(signed_s, t, torch.zeros(B, dtype=torch.long))["term0"]
    assert torch.isfinite(value)
    torch.testing.assert_close(value, rf.at_loss(signed_s["stage2"], t["stage2"], 2.5))


# ----------------------------------------------------------------------------- fidelity per layer shape

def _maps(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(B, *shape, generator=g, dtype=torch.float64))


def _fitnet_alone(s, t):
    """A fitnet term alone (CE weight 0), bound to these maps, in float64."""
    logits = {"logits": torch.zeros(B, 10, dtype=torch.float64)}
    s, t = {**s, **logits}, {**t, **logits}
    objective = relkd.build_objective({"ce_weight": 0.0, "terms": [{"kind": "feature", "tap": "stage2",
                                                                   "method": "fitnet"}]}).bind(s, t)
    objective.modules.double()
    return objective, s, t


@pytest.mark.parametrize("student, teacher, kind", [
    ((6, 8, 8), (10, 8, 8), "equal: 1x1 conv"),
    ((6, 8, 8), (10, 4, 4), "twice: 3x3 stride-2 conv"),
    ((6, 4, 4), (10, 8, 8), "half: 4x4 transposed conv"),
    ((6, 7, 7), (10, 4, 4), "larger: a valid 4x4 conv"),
])
def test_fitnet_regressor_is_repdistillers_convreg_for_every_size_relation(student, teacher, kind):
    """The value and the student's gradient of fitnet against RepDistiller's ConvReg written
    from its rule (reference_features.conv_reg, which also checks the kernel's shape), float64."""
    objective, s, t = _fitnet_alone({"stage2": _maps(0, student).requires_grad_(True)}, {"stage2": _maps(1, teacher)})
    method = objective.terms[0].method
    assert not method.pooled, kind
    got = objective(s, t, torch.zeros(B, dtype=torch.long))["term0"]
    want = fitnet_reference(s["stage2"], t["stage2"], method)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    (grad,) = torch.autograd.grad(got, s["stage2"])
    (want_grad,) = torch.autograd.grad(want, s["stage2"])
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-14)
    assert float(grad.abs().sum()) > 0


def test_fitnet_pools_only_where_the_reference_has_no_rule():
    """A student map smaller than the teacher's but not half of it: RepDistiller raises; relkd
    pools the teacher's map to the student's size and regresses with a 1x1 conv (documented)."""
    objective, s, t = _fitnet_alone({"stage2": _maps(0, (6, 5, 5))}, {"stage2": _maps(1, (10, 14, 14))})
    method = objective.terms[0].method
    assert method.pooled and method.regressor[0].kernel_size == (1, 1)
    with pytest.raises(NotImplementedError):
        fitnet_reference(s["stage2"], t["stage2"], method)
    conv, norm = method.regressor[0], method.regressor[1]
    pooled_t = torch.nn.functional.adaptive_avg_pool2d(t["stage2"], (5, 5))
    want = rf.fitnet_loss(s["stage2"], pooled_t, conv.weight, conv.bias, norm.weight, norm.bias)
    torch.testing.assert_close(objective(s, t, torch.zeros(B, dtype=torch.long))["term0"], want)


FOUR = ("stage2", "stage3", "stage4", "last_stage")  # a torchvision ResNet's groups (its stage1 is the stem)


@pytest.mark.parametrize("stages, at_taps, fitnet_tap", [
    ((relkd.presets.THREE_STAGES,) * 2, ["stage1", "stage2", "last_stage"], "stage2"),
    ((FOUR, FOUR), list(FOUR), "stage3"),
    ((("stage1", "last_stage"),) * 2, ["stage1", "last_stage"], "last_stage"),
    ((relkd.presets.THREE_STAGES, FOUR), [{"student": "stage1", "teacher": "stage2"},
                                          {"student": "stage2", "teacher": "stage3"},
                                          {"student": "last_stage", "teacher": "stage4"}],
     {"student": "stage2", "teacher": "stage3"}),
])
def test_multi_layer_presets_read_every_group_of_the_models_they_are_built_for(stages, at_taps, fitnet_tap):
    """RepDistiller's layers: feat[1:-1] paired by zip for AT, NST, VID (and SRM), feat[2] for FitNets."""
    for method in ("at", "nst", "vid", "srm"):
        for name in (method, f"{method}+kd"):
            cfg = relkd.preset(name, stages=stages)
            assert [t["tap"] for t in cfg["terms"]] == at_taps, name
            assert len({t["name"] for t in cfg["terms"]}) == len(at_taps)
    assert [t["tap"] for t in relkd.preset("fitnet", stages=stages)["terms"]] == [fitnet_tap]
    for name in ("sp", "rkd+kd", "crd+kd", "kd", "none"):  # one fixed layer: the same on every model
        assert relkd.preset(name, stages=stages) == relkd.preset(name)


def test_presets_for_a_setting_read_its_models_layers(tmp_path, capsys):
    from relkd.cli import main

    doc = copy.deepcopy(TINY_SETTING)
    doc["teacher"] = {**doc["teacher"], "model": "tv:resnet18", "params": {}}
    doc["student"] = {"model": "tv:resnet18"}
    path = tmp_path / "s.yaml"
    path.write_text(relkd.fields.yaml_dump(doc))
    cfg = validate_setting(doc).preset("at+kd")
    assert [t["tap"] for t in cfg["terms"]] == list(FOUR)
    assert validate_setting(TINY_SETTING).preset("at+kd") == relkd.preset("at+kd")
    assert main(["show-config", "at", "--setting", str(path)]) == 0
    shown = relkd.fields.yaml_load(capsys.readouterr().out)
    assert [t["tap"] for t in shown["terms"]] == list(FOUR)
    assert main(["show-config", "nst", "--student", "cnn_tiny", "--teacher", "tv:resnet18"]) == 0
    shown = relkd.fields.yaml_load(capsys.readouterr().out)
    assert [t["tap"] for t in shown["terms"]] == [{"student": "stage1", "teacher": "stage2"},
                                                 {"student": "stage2", "teacher": "stage3"},
                                                 {"student": "last_stage", "teacher": "stage4"}]


def test_srm_dictionary_and_head_start_as_the_authors_code():
    """kaiming_uniform_ with a = 0 on a (C, M) tensor: uniform in +-sqrt(6 / M) (std bound / sqrt 3),
    and one scalar intercept in [-1, 1], for the dictionary and the student's head."""
    from relkd.features.srm import CodeHead, initial_dictionary

    channels, atoms = 64, 128
    bound = (6 / atoms) ** 0.5
    dictionary, bias = initial_dictionary(channels, atoms, seed=0)
    torch.manual_seed(0)
    head = CodeHead(channels, atoms)
    for weights, intercept in ((dictionary, bias), (head.centers.detach(), head.intercept.detach())):
        assert weights.shape == (channels, atoms) and intercept.shape == (1,)
        assert float(weights.abs().max()) <= bound and float(weights.abs().max()) > 0.99 * bound
        assert abs(float(weights.std()) / (bound / 3 ** 0.5) - 1) < 0.03
        assert -1 <= float(intercept) <= 1
    s, t = make_taps(0, True), make_taps(1, False)
    head = relkd.build_objective("srm").bind(s, t).terms[0].method.head
    assert isinstance(head, CodeHead) and sorted(n for n, _ in head.named_parameters()) == ["centers", "intercept"]
