"""Target-aware adaptation (relkd.adapt): the setting's adapt section and its errors, the
pruning loop on both criteria, the cache, adapted models as first-class models
(``adapted:<folder>`` in train, compare and studies), ``relkd adapt``, and the
multi-objective study over size and composition (relkd.study.sizes)."""
import copy
import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from relkd.adapt import (
    activation_ranking,
    plan_activation,
    adapt_setting,
    export_adapted,
    get_adapted,
    resolve_student,
    with_ratio,
)
from relkd.cli import main
from relkd.engine import run_trial
from relkd.fields import ConfigError
from relkd.models import count_params, create_model
from relkd.models.prune import channel_groups
from relkd.setting import validate_setting
from relkd.study import load_study_spec
from relkd.results.record import OBJECTIVES_ATTR
from relkd.study.spec import validate_study
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # relative init paths and runs/ resolve here
    from relkd.engine import TeacherOutputs

    TeacherOutputs.clear()
    return tmp_path / "cache"


def source_file(path: Path, width: int = 8, model: str = "cnn_tiny", num_classes: int = 3,
                in_channels: int = 1) -> Path:
    """A pretrained-like checkpoint (another task's head) for the student's init."""
    torch.manual_seed(7)
    params = {"width": width} if model.startswith("cnn") else {}
    source = create_model(model, num_classes=num_classes, in_channels=in_channels, **params)
    torch.save(source.state_dict(), path)
    return path


def setting_doc(tmp_path: Path, **adapt) -> dict:
    doc = copy.deepcopy(TINY_SETTING)
    doc["data"] = {"dataset": "synthetic", "batch_size": 32, "train_per_class": 30,
                   "params": {"train_size": 600, "test_size": 100}}
    doc["student"] = {"model": "cnn_tiny", "params": {"width": 8}, "init": str(source_file(tmp_path / "src.pt"))}
    if adapt:
        doc["student"]["adapt"] = {"warmup_epochs": 1, "finetune_epochs": 1, "step": 0.2, **adapt}
    return doc


# ----------------------------------------------------------------------------- the setting's adapt section


def test_adapt_section_round_trips_and_old_settings_are_unchanged(tmp_path):
    doc = setting_doc(tmp_path, ratio=0.5)
    setting = validate_setting(doc)
    adapt = setting.student.adapt
    assert (adapt.ratio, adapt.measure, adapt.criterion, adapt.min_channels) == (0.5, "params", "activation", 2)
    again = validate_setting(setting.to_dict())
    assert again.student == setting.student and again.to_dict() == setting.to_dict()
    plain = validate_setting(TINY_SETTING).to_dict()
    assert "adapt" not in plain["student"]  # settings without it keep their canonical form


@pytest.mark.parametrize("change, expected", [
    ({"ratio": 0}, "student.adapt.ratio: expected a number strictly between 0 and 1"),
    ({"ratio": 1}, "student.adapt.ratio: expected a number strictly between 0 and 1"),
    ({"ratio": 1.5}, "student.adapt.ratio: expected a number strictly between 0 and 1"),
    ({"ratio": -0.2}, "student.adapt.ratio: expected a number strictly between 0 and 1"),
    ({"ratio": "half"}, "student.adapt.ratio: expected a number strictly between 0 and 1"),
    ({"ratio": True}, "student.adapt.ratio: expected a number strictly between 0 and 1"),
    ({"ratio": 0.5, "criterion": "random"}, "student.adapt.criterion: expected one of activation, l1"),
    ({"ratio": 0.5, "measure": "flops"}, "student.adapt.measure: expected one of params, macs"),
    ({"ratio": 0.5, "min_channels": 0}, "student.adapt.min_channels"),
    ({"ratio": 0.5, "steps": 3}, "student.adapt.steps"),
])
def test_bad_adapt_fields_name_the_field(tmp_path, change, expected):
    doc = setting_doc(tmp_path)
    doc["student"]["adapt"] = change
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        validate_setting(doc)


def test_adapt_needs_a_ratio_an_init_and_a_prunable_family(tmp_path):
    doc = setting_doc(tmp_path)
    doc["student"]["adapt"] = {"criterion": "l1"}
    with pytest.raises(ConfigError, match=r"student\.adapt\.ratio: missing"):
        validate_setting(doc)
    del doc["student"]["init"]
    doc["student"]["adapt"] = {"ratio": 0.5}
    with pytest.raises(ConfigError, match=r"student\.adapt: needs a pretrained student to adapt: give student\.init"):
        validate_setting(doc)
    doc["student"] = {"model": "wrn_16_2", "init": "src.pt", "adapt": {"ratio": 0.5}}
    with pytest.raises(ConfigError, match=r"student\.adapt: model 'wrn_16_2' \(family wrn\) cannot be pruned; relkd "
                                          r"adapts the families cnn, cifar_resnet"):
        validate_setting(doc)
    doc["teacher"]["adapt"] = {"ratio": 0.5}  # the teacher is never adapted
    with pytest.raises(ConfigError, match=r"teacher\.adapt"):
        validate_setting(doc)


def test_adapt_setting_applies_the_flags_and_validates_again(tmp_path):
    setting = validate_setting(setting_doc(tmp_path))
    with pytest.raises(ConfigError, match=r"student\.adapt\.ratio: missing; give --target-ratio R"):
        adapt_setting(setting)
    adapted = adapt_setting(setting, ratio=0.4, criterion="l1")
    assert (adapted.student.adapt.ratio, adapted.student.adapt.criterion) == (0.4, "l1")
    with pytest.raises(ConfigError, match=r"student\.adapt\.ratio: expected a number strictly between 0 and 1"):
        adapt_setting(setting, ratio=1.0)
    no_init = validate_setting({**setting_doc(tmp_path), "student": {"model": "cnn_tiny"}})
    with pytest.raises(ConfigError, match=r"student\.adapt: needs a pretrained student"):
        adapt_setting(no_init, ratio=0.5)


# ----------------------------------------------------------------------------- choosing filters


def test_activation_ranking_orders_by_cumulative_share_within_each_layer():
    stats = {"a": torch.tensor([4.0, 1.0, 5.0]), "b": torch.tensor([1.0, 1.0, 1.0, 97.0])}
    ranked = activation_ranking(stats, {"a": 1.0, "b": 2.0})
    # shares: a: 1/10, 5/10, 10/10 (channels 1, 0, 2); b: 0.01, 0.02, 0.03, 1.0 (channels 0, 1, 2, 3);
    # the tie at 1.0: b's channel saves more, so it goes first
    assert ranked == [("b", 0), ("b", 1), ("b", 2), ("a", 1), ("a", 0), ("b", 3), ("a", 2)]
    assert activation_ranking(stats, {"a": 3.0, "b": 2.0})[5:] == [("a", 2), ("b", 3)]
    # a layer's channels always leave weakest first, whatever the other layers hold
    for name in stats:
        order = [c for g, c in ranked if g == name]
        assert order == torch.argsort(stats[name], stable=True).tolist()


def test_plan_keeps_min_channels_and_reaches_the_goal():
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=3, width=8)
    stats = {g.name: torch.rand(g.size) for g in channel_groups(model)}
    original = count_params(model)
    keep = plan_activation(model, stats, 0.5 * original, 3, count_params)
    from relkd.models.prune import prune_channels

    pruned = prune_channels(model, keep)
    assert count_params(pruned) <= 0.5 * original
    assert all(g.size >= 3 for g in channel_groups(pruned))
    # the smallest prefix: putting back the last channel removed breaks the goal
    assert plan_activation(model, stats, 0.01 * original, 3, count_params) is None  # unreachable with 3 each


# ----------------------------------------------------------------------------- the loop and the cache


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["activation", "l1"])
def test_adapting_reaches_the_ratio_with_real_smaller_layers(tmp_path, criterion):
    setting = validate_setting(setting_doc(tmp_path, ratio=0.5, criterion=criterion))
    result = get_adapted(setting)
    meta = result.meta
    assert result.built and meta["params"] <= 0.5 * meta["original_params"] and meta["ratio_reached"] <= 0.5
    assert meta["macs"] < meta["original_macs"] and meta["steps_taken"] >= 3  # step 0.2: at least 3 steps
    assert all(meta["widths"][g] <= meta["original_widths"][g] for g in meta["widths"])
    assert sum(meta["widths"].values()) < sum(meta["original_widths"].values())
    state = torch.load(result.checkpoint, weights_only=True)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == meta["params"]
    if criterion == "l1":  # uniform: every layer keeps about the same fraction of its filters
        fractions = [meta["widths"][g] / meta["original_widths"][g] for g in meta["widths"]]
        assert max(fractions) - min(fractions) <= 0.2
    again = get_adapted(setting)
    assert not again.built and again.meta["sha256"] == meta["sha256"]  # cached by the key
    other = get_adapted(validate_setting(setting_doc(tmp_path, ratio=0.7, criterion=criterion)))
    assert other.built and other.meta["params"] > meta["params"]


@pytest.mark.slow
def test_an_unreachable_ratio_names_the_field(tmp_path):
    setting = validate_setting(setting_doc(tmp_path, ratio=0.05, min_channels=6))
    with pytest.raises(ConfigError, match=r"student\.adapt\.ratio: 0\.05 cannot be reached: with min_channels 6"):
        get_adapted(setting)


@pytest.mark.slow
def test_adapted_student_trains_with_any_objective_and_reports_its_size(tmp_path):
    setting = resolve_student(validate_setting(setting_doc(tmp_path, ratio=0.5)))
    adapted = get_adapted(setting)
    metrics = run_trial(setting, "sp+kd")
    assert metrics.student_params == adapted.meta["params"] and metrics.student_macs == adapted.meta["macs"]
    plain = run_trial(validate_setting(setting_doc(tmp_path)), "none")
    assert plain.student_params == adapted.meta["original_params"]
    at = run_trial(setting, "at")  # a feature term: its parts are built for the adapted widths
    assert 0 <= at.val_accuracy <= 1


def test_adapted_model_is_a_first_class_model(tmp_path):
    setting = validate_setting(setting_doc(tmp_path, ratio=0.5))
    result = get_adapted(setting)
    folder = export_adapted(result, tmp_path / "exported")
    assert (folder / "model.pt").is_file() and json.loads((folder / "meta.json").read_text())["sha256"]
    doc = setting_doc(tmp_path)
    doc["student"] = {"model": f"adapted:{folder}"}
    named = validate_setting(doc)
    model = create_model(f"adapted:{folder}", num_classes=10, in_channels=1)
    reference = torch.load(folder / "model.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    original = create_model("cnn_tiny", num_classes=10, width=8)
    assert model.tap_names == original.tap_names  # every objective config still applies
    assert run_trial(named, "rkd+kd").student_params == result.meta["params"]
    fresh = create_model(f"adapted:{folder}", num_classes=10, in_channels=1, weights=False)
    assert count_params(fresh) == result.meta["params"]
    assert not torch.equal(fresh.state_dict()["net.fc.weight"], reference["net.fc.weight"])
    with pytest.raises(ValueError, match="was made for 10 classes and 1 input channels, the data has 5"):
        create_model(f"adapted:{folder}", num_classes=5, in_channels=1)
    # a changed file is refused by its SHA-256, a missing one named
    data = bytearray((folder / "model.pt").read_bytes())
    data[-20] ^= 0xFF
    (folder / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"student\.model: .*does not have the SHA-256 its meta\.json records"):
        validate_setting(doc)
    doc["student"] = {"model": "adapted:nowhere"}
    with pytest.raises(ConfigError, match=r"student\.model: no adapted model at 'nowhere'"):
        validate_setting(doc)


# ----------------------------------------------------------------------------- relkd adapt and relkd train


@pytest.mark.slow
def test_adapt_cli_writes_the_folder_and_bad_flags_name_themselves(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(setting_doc(tmp_path, ratio=0.6)))
    for bad in ("0", "1", "1.5", "-0.5", "half"):
        with pytest.raises(SystemExit) as stop:
            main(["adapt", "--setting", "s.yaml", "--target-ratio", bad])
        assert stop.value.code == 2
        assert "--target-ratio: expected a number strictly between 0 and 1" in capsys.readouterr().err
    assert main(["adapt", "--setting", "s.yaml", "--target-ratio", "0.5", "--out", "ad", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["params"] <= 0.5 * summary["original_params"] and summary["ratio"] == 0.5
    assert (tmp_path / "ad" / "model.pt").is_file()
    assert main(["adapt", "--setting", "s.yaml", "--quiet"]) == 0  # the file's ratio, 0.6
    assert "adapted (activation" in capsys.readouterr().out
    doc = setting_doc(tmp_path)
    doc["student"] = {"model": "wrn_16_2", "init": "src.pt"}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(doc))
    assert main(["adapt", "--setting", "w.yaml", "--target-ratio", "0.5"]) == 2
    assert "student.adapt: model 'wrn_16_2' (family wrn) cannot be pruned" in capsys.readouterr().err
    assert main(["train", "--setting", "s.yaml", "--config", "kd", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)  # relkd train distils into the adapted student


@pytest.mark.slow
def test_compare_runs_on_adapted_and_pretrained_students(tmp_path):
    from relkd.study.compare import run_compare, validate_compare

    source = setting_doc(tmp_path)
    del source["teacher"], source["student"]["init"]
    source["data"].pop("train_per_class")
    source["budget"] = {"epochs": 1}
    (tmp_path / "src.yaml").write_text(yaml.safe_dump(source))
    doc = setting_doc(tmp_path, ratio=0.5)
    doc["student"]["init"] = {"pretrain": "src.yaml"}  # a source made on first use: resolved before the runs
    doc["compare"] = {"methods": ["sp"], "with_kd": False, "seeds": 1}
    table = run_compare(validate_compare(doc), out_dir=tmp_path / "cmp")
    assert {row["method"] for row in table["rows"]} >= {"none", "sp"}


# ----------------------------------------------------------------------------- accuracy against size


def pareto_doc(tmp_path: Path, **optuna_section) -> dict:
    doc = setting_doc(tmp_path)
    doc["student"]["adapt"] = {"ratio": 0.5, "warmup_epochs": 1, "finetune_epochs": 1, "step": 0.25}
    doc["budget"] = {"epochs": 1, "lr": 0.05}
    doc["search"] = {"ratio": [0.5, 1.0], "terms": {"low": 0, "high": 1}, "tap": ["pool"], "kd": True}
    doc["optuna"] = {"objectives": ["val_accuracy", "params"], "n_trials": 5, "anchors": ["none"],
                     "sampler": {"name": "tpe", "n_startup_trials": 2}, **optuna_section}
    return doc


@pytest.mark.slow
def test_multi_objective_study_trains_sizes_and_compositions(tmp_path):
    from relkd.study import run_study

    spec = validate_study(pareto_doc(tmp_path))
    assert spec.multi_objective and spec.document["optuna"]["objectives"] == ["val_accuracy", "params"]
    assert spec.document["search"]["ratio"] == [0.5, 1.0] and spec.pruner == ("none", {})
    assert validate_study(spec.document).document == spec.document  # the canonical form reads back as it is
    result = run_study(spec, storage=f"sqlite:///{tmp_path / 'mo.db'}", progress=False)
    study = result.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.user_attrs[OBJECTIVES_ATTR] == ["val_accuracy", "params"]
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) >= 5
    anchors = sorted(t.params["ratio"] for t in done if t.user_attrs.get("anchor") == "none")
    assert anchors == [0.5, 1.0]  # the anchor at every listed ratio
    for t in done:
        assert t.values[1] == t.user_attrs["student_params"] and t.intermediate_values == {}
        assert ("adapt" in t.user_attrs["student"]) == (t.params["ratio"] < 1)
    small = [t.values[1] for t in done if t.params["ratio"] == 0.5]
    full = [t.values[1] for t in done if t.params["ratio"] == 1.0]
    assert max(small) <= 0.5 * min(full)


@pytest.mark.parametrize("change, expected", [
    ({"optuna": {"pruner": "median"}}, "optuna.pruner: multi-objective trials cannot be pruned"),
    ({"optuna": {"ladder": {"rungs": [1]}}}, "optuna.ladder: a fidelity ladder prunes"),
    ({"optuna": {"population": 4}}, "optuna.population: a study with two objectives trains one trial at a time"),
    ({"optuna": {"sampler": "grid"}}, "optuna.sampler: grid cannot search two objectives here"),
    ({"optuna": {"objectives": ["val_accuracy", "flops"]}}, "optuna.objectives: expected [val_accuracy]"),
    ({"search": {"ratio": [0, 0.5]}}, "search.ratio[0]: expected a size ratio in (0, 1]"),
    ({"search": {"ratio": {"low": 0.6, "high": 0.4}}}, "search.ratio: expected low < high"),
    ({"search": {"ratio": None}}, "search.ratio: missing: a study with optuna.objectives"),
    ({"optuna": {"objectives": None}}, "search.ratio: searching the student's size needs two objectives"),
    ({"student": {"init": None, "adapt": None}},
     "search.ratio: the student is adapted to each ratio from a pretrained network"),
])
def test_bad_multi_objective_studies_name_the_field(tmp_path, change, expected):
    doc = pareto_doc(tmp_path)
    for section, values in change.items():
        for key, value in values.items():
            if value is None:
                doc[section].pop(key, None)
            else:
                doc[section][key] = value
    with pytest.raises(ConfigError) as err:
        validate_study(doc)
    assert any(expected in line for line in err.value.errors), err.value.errors


def test_with_ratio_one_means_not_adapted(tmp_path):
    setting = validate_setting(setting_doc(tmp_path, ratio=0.5))
    assert with_ratio(setting, 1.0).student.adapt is None
    assert with_ratio(setting, 0.3, measure="macs").student.adapt.ratio == 0.3


def test_shipped_adapt_studies_validate():
    for name in ("adapt_fmnist.yaml", "adapt_pareto_fmnist.yaml"):
        spec = load_study_spec(ROOT / "studies" / name)
        assert spec.setting.student.init is not None and spec.setting.data.train_per_class == 50
    assert load_study_spec(ROOT / "studies" / "adapt_fmnist.yaml").setting.student.adapt.ratio == 0.5
    assert load_study_spec(ROOT / "studies" / "adapt_pareto_fmnist.yaml").multi_objective


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet8", "resnet8x4"])
def test_cifar_resnets_adapt_with_their_residual_channels_kept_consistent(tmp_path, model):
    doc = setting_doc(tmp_path, ratio=0.5, criterion="activation")
    doc["data"]["params"].update(image_size=16, channels=3, train_size=300)
    doc["data"]["train_per_class"] = 10
    doc["student"].update(model=model, params={}, init=str(source_file(tmp_path / "r.pt", model=model, in_channels=3)))
    doc["student"]["adapt"].update(warmup_epochs=0, finetune_epochs=1, step=0.25)
    result = get_adapted(validate_setting(doc))
    meta = result.meta
    assert meta["params"] <= 0.5 * meta["original_params"]
    widths = meta["widths"]
    assert any(widths[g] < meta["original_widths"][g] for g in widths if g.endswith(".out") or g == "stem")
    assert all(widths[g] < meta["original_widths"][g] for g in widths if g.endswith(".inner")) or \
        sum(widths.values()) < sum(meta["original_widths"].values())
    folder = export_adapted(result, tmp_path / model)
    adapted = create_model(f"adapted:{folder}", num_classes=10, in_channels=3)
    out = adapted(torch.randn(2, 3, 16, 16))  # the residual additions fit: it runs
    assert out["logits"].shape == (2, 10) and set(out) == set(create_model(model, num_classes=10, in_channels=3)(
        torch.randn(2, 3, 16, 16)))


@pytest.mark.slow
def test_a_study_distils_into_the_adapted_student(tmp_path):
    from relkd.study import run_study

    doc = setting_doc(tmp_path, ratio=0.5)
    doc["budget"] = {"epochs": 1, "lr": 0.05}
    doc["search"] = {"terms": {"low": 0, "high": 1}, "tap": ["pool"], "kd": True}
    doc["optuna"] = {"n_trials": 3, "anchors": ["none", "kd"], "pruner": "none"}
    result = run_study(validate_study(doc), storage=f"sqlite:///{tmp_path / 's.db'}", progress=False)
    adapted = get_adapted(resolve_student(validate_setting(doc)))
    done = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) >= 3 and len(result.study.directions) == 1
    assert {t.user_attrs["student_params"] for t in done} == {adapted.meta["params"]}
    assert all(t.user_attrs["student"]["adapt"]["ratio"] == 0.5 for t in done)


@pytest.mark.slow
def test_the_adapt_benchmark_runs_end_to_end(tmp_path):
    import subprocess
    import sys

    doc = setting_doc(tmp_path, ratio=0.5)
    doc["budget"] = {"epochs": 1, "lr": 0.05}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "adapt.py"), "--setting", str(tmp_path / "s.yaml"),
                          "--seeds", "2", "--ratios", "0.5", "--methods", "none", "--rounds", "2",
                          "--out", str(tmp_path / "bench")], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "RELKD_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "bench" / "adapt.json").read_text())
    rows = {r["student"]: r for r in result["rows"]}
    longest = max(rows["adapted 50%"]["adapt_epochs"], rows["L1 uniform 50%"]["adapt_epochs"])
    assert list(rows) == ["unpruned", f"unpruned +{longest:.0f} ep", "adapted 50%", "L1 uniform 50%"]
    assert longest >= 3  # the warm-up epoch and at least two steps of one epoch
    assert rows["adapted 50%"]["params"] <= 0.5 * rows["unpruned"]["params"]
    assert len(rows["adapted 50%"]["per_seed"]) == 2 and set(result["cpu_time_ratio"]) == {
        "unpruned", "adapted 50%", "L1 uniform 50%"}
    assert "| adapted 50% | none |" in (tmp_path / "bench" / "adapt.md").read_text()
