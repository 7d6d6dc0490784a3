"""The training engine on the synthetic dataset with tiny models."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import relkd
from relkd.cli import main
from relkd.fields import ConfigError
from relkd.engine import NonFiniteLossError, get_teacher, run_trial, teacher_key
from relkd.setting import load_setting, validate_setting
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[1]
SETTING = TINY_SETTING


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))
    from relkd.engine import TeacherOutputs

    TeacherOutputs.clear()
    return tmp_path / "cache"


def mutated(changes: dict) -> dict:
    """SETTING with changes: ``section__field=value`` sets one field, ``section=value`` a whole section."""
    cfg = json.loads(json.dumps(SETTING))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section][field] = value
        else:
            cfg[section] = value
    return cfg


def setting(**changes):
    return validate_setting(mutated(changes))


def test_setting_defaults_and_round_trip():
    s = setting()
    assert s.budget.optimizer == "sgd" and s.budget.schedule == "cosine" and s.data.val_fraction == 0.1
    assert validate_setting(s.to_dict()) == s
    shipped = load_setting(ROOT / "studies" / "fmnist_quick.yaml")
    assert shipped.data.dataset == "fashion-mnist"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"student": {"model": "cnn_tiyn"}}, "student.model: unknown model 'cnn_tiyn'; did you mean 'cnn_tiny'?"),
        ({"data__dataset": "fashon-mnist"}, "data.dataset: unknown dataset 'fashon-mnist'; did you mean"),
        ({"budget__lr": -1}, "budget.lr: expected a finite number > 0"),
        ({"budget__optimizer": "adam"}, "budget.optimizer: expected one of sgd, adamw, got 'adam'; did you mean"),
        ({"budget__epochs": 0}, "budget.epochs: expected an integer >= 1"),
        ({"data__batchsize": 3}, "data.batchsize: unknown field; did you mean 'batch_size'?"),
        ({"teacher": {"model": "cnn_tiny", "params": {"widht": 3}}}, "teacher.params.widht: model 'cnn_tiny' has no"),
        ({"device": "gpu9"}, "device: expected 'auto', 'cpu'"),
        ({"data__val_fraction": 1.5}, "data.val_fraction: expected a finite number > 0 and <= 0.9"),
    ],
)
def test_malformed_setting_names_the_field(change, expected):
    with pytest.raises(ConfigError) as err:
        validate_setting(mutated(change))
    assert expected in str(err.value)


def test_missing_sections_are_named():
    with pytest.raises(ConfigError, match="teacher: missing"):
        validate_setting({"student": {"model": "cnn_tiny"}})


def test_teacher_cache_hit_miss_and_key(cache_dir):
    s = setting()
    first = get_teacher(s)
    assert first.trained and first.checkpoint.exists() and 0 <= first.test_accuracy <= 1
    second = get_teacher(s)
    assert not second.trained and second.key == first.key
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    assert teacher_key(setting(teacher__epochs=3)) != first.key  # the recipe is part of the key
    assert teacher_key(setting(seed=1)) != first.key
    assert teacher_key(setting(budget__epochs=5)) == first.key  # the student's budget is not
    spelled_out = dict(SETTING["teacher"], params={"width": 8, "depth": 1, "stages": 3})
    assert teacher_key(setting(teacher=spelled_out)) == first.key  # defaults written out: same teacher


@pytest.mark.slow
def test_corrupted_teacher_checkpoint_is_rebuilt(cache_dir, caplog):
    s = setting()
    first = get_teacher(s)
    data = first.checkpoint.read_bytes()
    first.checkpoint.write_bytes(data[: len(data) // 2])  # truncated
    again = get_teacher(s)
    assert again.trained and "unusable" in caplog.text
    first.checkpoint.write_bytes(data[:-8] + b"\0" * 8)  # altered, same length
    assert get_teacher(s).trained


@pytest.mark.slow
def test_teacher_trained_once_when_processes_start_together(cache_dir, tmp_path):
    setting_file = tmp_path / "s.json"
    setting_file.write_text(json.dumps(SETTING))
    code = (
        "import json, sys; from relkd.setting import validate_setting; from relkd.engine import get_teacher;"
        f"r = get_teacher(validate_setting(json.load(open({str(setting_file)!r})))); print('TRAINED', r.trained)"
    )
    env = dict(os.environ, RELKD_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum("TRAINED True" in o for o in outs) == 1, outs


def test_run_trial_reports_each_epoch_and_stops_early():
    calls = []
    m = run_trial(setting(budget__epochs=4), "none", report=lambda e, acc: calls.append((e, acc)) or e == 1)
    assert [e for e, _ in calls] == [0, 1]
    assert m.epochs == 2 and m.stopped_early and m.val_history == [a for _, a in calls]
    assert m.test_accuracy is None  # the test split is untouched unless asked for


@pytest.mark.slow
def test_a_run_may_evaluate_after_its_last_epoch_only():
    every = run_trial(setting(budget__epochs=3), "kd")
    last = run_trial(setting(budget__epochs=3), "kd", every_epoch=False)
    assert len(every.val_history) == 3 and last.val_history == [every.val_accuracy]
    assert last.val_accuracy == every.val_accuracy and last.epochs == 3
    with pytest.raises(ValueError, match="every_epoch: a run that reports each epoch must evaluate each epoch"):
        run_trial(setting(), "none", report=lambda e, acc: False, every_epoch=False)


def test_run_is_deterministic_on_cpu():
    a = run_trial(setting(), "rkd+kd", eval_test=True)
    b = run_trial(setting(), "rkd+kd", eval_test=True)
    assert a.val_history == b.val_history and a.test_accuracy == b.test_accuracy
    assert a.part_means == b.part_means
    assert set(a.part_means) == {"ce", "kd", "rkd_d", "rkd_a"}


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True])
def test_teacher_output_cache_gives_the_same_run(augment):
    s = setting(data__augment=augment)
    cached = run_trial(s, "sp+kd", teacher_cache=True)
    live = run_trial(s, "sp+kd", teacher_cache=False)
    assert cached.val_history == live.val_history
    for k in cached.part_means:
        assert cached.part_means[k] == pytest.approx(live.part_means[k], rel=1e-5)


def test_teacher_outputs_are_written_once_and_read_by_later_processes(cache_dir, monkeypatch):
    from relkd.engine import TeacherOutputs

    first = run_trial(setting(), "sp+kd")
    files = sorted(p.name for p in (cache_dir / "teacher_outputs").rglob("*.pt"))
    assert files == ["last_stage.pt", "logits.pt"]
    TeacherOutputs.clear()  # as a new process: only the files are left
    calls = {"n": 0}
    real_save = TeacherOutputs.save
    monkeypatch.setattr(TeacherOutputs, "save", classmethod(
        lambda cls, *a: calls.__setitem__("n", calls["n"] + 1) or real_save.__func__(cls, *a)))
    again = run_trial(setting(), "sp+kd")
    assert calls["n"] == 0  # read, not computed again
    assert again.val_history == first.val_history and again.part_means == first.part_means


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_teacher_output_file_is_computed_again(cache_dir, caplog, damage):
    from relkd.engine import TeacherOutputs

    first = run_trial(setting(), "kd")
    (path,) = (cache_dir / "teacher_outputs").rglob("logits.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:-8] + b"\x7f" * 8)
    TeacherOutputs.clear()
    again = run_trial(setting(), "kd")
    assert "teacher-output cache" in caplog.text and "unusable" in caplog.text
    assert again.val_history == first.val_history  # the damaged file was not used
    assert path.read_bytes() == data  # and it was written again


@pytest.mark.slow
def test_a_full_disk_costs_the_cache_but_not_the_run(cache_dir, caplog, monkeypatch):
    """No space left for the teacher checkpoint or the teacher outputs: the run goes on with
    what it trained, leaves no partial files behind, and the next process trains again."""
    import errno

    import relkd.engine as engine

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):  # files fill up half, then the disk is full
            Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    expected = run_trial(setting(), "sp+kd")
    for path in list(cache_dir.rglob("*")):  # a fresh cache, then the disk is full
        if path.is_file():
            path.unlink()
    engine.TeacherOutputs.clear()
    monkeypatch.setattr(torch, "save", full_disk)
    teacher = get_teacher(setting())
    assert teacher.trained and len(teacher.sha256) == 64
    assert "could not cache teacher checkpoint" in caplog.text and "No space left" in caplog.text
    metrics = run_trial(setting(), "sp+kd", teacher=teacher)
    assert metrics.val_history == expected.val_history  # the same run as with a disk
    assert "could not write the teacher-output cache" in caplog.text
    assert sorted(p.name for p in cache_dir.rglob("*") if p.is_file()) == [".lock"]  # nothing half-written
    monkeypatch.setattr(torch, "save", real_save)
    assert get_teacher(setting()).trained  # not cached, so trained again, and now cached
    assert not get_teacher(setting()).trained


def test_non_finite_loss_names_the_term(monkeypatch):
    """Validation keeps weights where nothing overflows, so a part is made to blow up here, as
    a diverging run's would."""
    from relkd.relation import RelationTerm

    real_term, real_ce = RelationTerm.__call__, torch.nn.functional.cross_entropy
    with monkeypatch.context() as m:
        m.setattr(RelationTerm, "__call__", lambda self, s, t: real_term(self, s, t) * float("inf"))
        with pytest.raises(NonFiniteLossError, match="part 'sp'"):
            run_trial(setting(), "sp")
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real_ce(*a, **k) * float("inf"))
    with pytest.raises(NonFiniteLossError, match="part 'ce' at epoch 0, step 1"):
        run_trial(setting(), "sp")


def test_tap_not_in_model_lists_the_taps():
    cfg = relkd.preset("sp")
    cfg["terms"][0]["tap"] = "stage9"
    with pytest.raises(ValueError, match=r"no tap 'stage9'.*stage1, stage2, stage3, last_stage, pool, logits"):
        run_trial(setting(), cfg)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    s = setting(data={"dataset": "fashion-mnist", "data_dir": str(tmp_path / "empty")})
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        run_trial(s, "none")


def test_cli_train_writes_metrics(tmp_path, capsys):
    setting_file = tmp_path / "s.yaml"
    setting_file.write_text(relkd.config.yaml_dump(SETTING))
    out = tmp_path / "run"
    code = main(["train", "--setting", str(setting_file), "--config", "kd", "--seeds", "0,1", "--eval-test",
                 "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "val_accuracy_std", "test_accuracy_std", "wall_seconds",
                "samples_per_second"):
        assert key in metrics
    assert [m["seed"] for m in metrics["per_seed"]] == [0, 1]
    assert 0 <= metrics["test_accuracy"] <= 1 and "kd" in metrics["per_seed"][0]["part_means"]
    assert relkd.load_config(out / "objective.yaml") == relkd.preset("kd")
    state = torch.load(out / "student_seed0.pt", weights_only=True)
    assert any(k.endswith("weight") for k in state)
    # evaluation beyond accuracy, per seed and averaged
    for m in (metrics, *metrics["per_seed"]):
        assert 0 <= m["ece"] <= 1 and m["nll"] > 0 and m["top5_accuracy"] >= m["test_accuracy"]
        assert set(m["degradation"]) == {"gaussian_noise", "gaussian_blur", "contrast", "occlusion"}
        assert all(set(v) == {"1", "2", "3", "4", "5"} for v in m["degradation"].values())
        assert 0 <= m["teacher_agreement"] <= 1
    noise = [m["degradation"]["gaussian_noise"]["3"] for m in metrics["per_seed"]]
    assert metrics["degradation"]["gaussian_noise"]["3"] == pytest.approx(sum(noise) / 2)
    capsys.readouterr()
    # relkd evaluate on the written checkpoints reproduces the run's test metrics
    code = main(["evaluate", "--setting", str(setting_file), "--checkpoint", f"a={out / 'student_seed0.pt'}",
                 "--checkpoint", f"b={out / 'student_seed1.pt'}", "--out", str(tmp_path / "eval"), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| a | gaussian_noise |" in printed and "ECE" in printed
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["results"]
    for label, m in zip("ab", metrics["per_seed"]):
        assert evaluation[label]["accuracy"] == pytest.approx(m["test_accuracy"])
        assert evaluation[label]["ece"] == pytest.approx(m["ece"])
        assert evaluation[label]["degradation"]["occlusion"]["5"] == pytest.approx(m["degradation"]["occlusion"]["5"])
    assert (tmp_path / "eval" / "degradation.png").stat().st_size > 5000
    assert main(["evaluate", "--setting", str(setting_file), "--checkpoint", str(out / "objective.yaml")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    code = main(["teacher", "train", "--setting", str(setting_file), "--json", "--quiet"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0 and info["trained"] is False and Path(info["checkpoint"]).exists()
    assert set(info) >= {"val_accuracy", "test_accuracy", "checkpoint"}




@pytest.mark.slow
@pytest.mark.fmnist
def test_real_fashion_mnist_teacher_and_kd_student():
    s = validate_setting({
        "name": "fmnist_smoke", "device": "cpu",
        "data": {"dataset": "fashion-mnist", "train_subset": 5000, "batch_size": 64},
        "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 1, "lr": 0.1, "schedule": "onecycle"},
        "student": {"model": "cnn_tiny", "params": {"width": 8}},
        "budget": {"epochs": 3, "lr": 0.1},
    })
    teacher = get_teacher(s)
    assert teacher.test_accuracy > 0.75  # one epoch on the whole training split
    m = run_trial(s, "kd", eval_test=True)
    assert m.val_accuracy > 0.5 and m.test_accuracy > 0.5
    assert m.samples_per_second > 0


def test_step_schedule_decays_at_the_milestones_and_keeps_other_teacher_keys():
    from relkd.engine import make_optimizer
    from relkd.setting import Recipe

    recipe = Recipe(epochs=8, lr=0.1, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    opt, sched = make_optimizer(torch.nn.Linear(2, 2), recipe, steps=80)
    lrs = []
    for _ in range(80):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[39] == pytest.approx(0.1) and lrs[40] == pytest.approx(0.01)
    assert lrs[59] == pytest.approx(0.01) and lrs[60] == pytest.approx(0.001)
    with pytest.raises(ConfigError, match=r"budget.milestones: expected increasing fractions"):
        setting(budget__milestones=[0.8, 0.2])
    # the step-only fields leave the teacher key of other schedules alone
    assert teacher_key(setting()) == teacher_key(setting(teacher__gamma=0.5))
    assert teacher_key(setting(teacher__schedule="step")) != teacher_key(
        setting(teacher__schedule="step", teacher__gamma=0.5))
