"""Transfer learning: class subsets, per-class training subsets, init checkpoints with a new
head, frozen stages, body/head learning rates, relkd pretrain, and the new setting fields'
validation. Synthetic data and width-4 CNNs: every test runs in seconds on a CPU."""
import copy
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given

from relkd.cli import main
from relkd.fields import ConfigError
from relkd.data import load_dataset
from relkd.engine import build_model, make_optimizer, load_data, run_trial, teacher_key
from relkd.models import create_model
from relkd.models.transfer import body_and_head, head_name, module_parts
from relkd.pretrain import resolve_inits
from relkd.setting import Recipe, load_setting, validate_setting
from contracts.test_hostile_input import FUZZ, check, hostile, mutate
from tiny import TINY_SETTING

ROOT = Path(__file__).resolve().parents[2]
SYNTH = {"dataset": "synthetic", "batch_size": 32, "params": {"train_size": 600, "test_size": 100}}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # relative init / pretrain paths resolve here
    from relkd.engine import TeacherOutputs

    TeacherOutputs.clear()
    return tmp_path / "cache"


def make(**sections) -> dict:
    """TINY_SETTING on 600 synthetic samples with sections merged in (``student={...}``)."""
    doc = copy.deepcopy(TINY_SETTING)
    doc["data"] = copy.deepcopy(SYNTH)
    for name, value in sections.items():
        doc[name] = {**doc.get(name, {}), **value}
    return doc


def save_source(path: Path, num_classes: int = 5, width: int = 4, seed: int = 123, model: str = "cnn_tiny"):
    """A relkd-format checkpoint (keys prefixed net.) of a model other than the target's init."""
    torch.manual_seed(seed)
    source = create_model(model, num_classes=num_classes, width=width) if model.startswith("cnn") else \
        create_model(model, num_classes=num_classes)
    for module in source.modules():  # BN statistics that differ from a fresh model's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    torch.save(source.state_dict(), path)
    return {k: v.clone() for k, v in source.state_dict().items()}


# ----------------------------------------------------------------------------- data


def test_class_subset_remaps_labels_and_counts_per_class():
    full = load_dataset("synthetic", train_size=600, test_size=100)
    sub = load_dataset("synthetic", train_size=600, test_size=100, classes=[7, "class_2", 4], train_per_class=15)
    assert sub.classes == ("class_7", "class_2", "class_4") and sub.num_classes == 3
    assert torch.bincount(sub.train_labels).tolist() == [15, 15, 15]
    # the test split is restricted to the same classes, each image under its new label
    for new, old in enumerate((7, 2, 4)):
        assert torch.equal(sub.test_images[sub.test_labels == new], full.test_images[full.test_labels == old])
    assert sub.test_labels.numel() == sum(int((full.test_labels == c).sum()) for c in (7, 2, 4))
    # the validation split does not depend on train_per_class; a larger subset is a superset
    no_subset = load_dataset("synthetic", train_size=600, test_size=100, classes=[7, "class_2", 4])
    assert torch.equal(sub.val_images, no_subset.val_images) and torch.equal(sub.val_labels, no_subset.val_labels)
    bigger = load_dataset("synthetic", train_size=600, test_size=100, classes=[7, 2, 4], train_per_class=30)
    assert set(sub.train_index.tolist()) < set(bigger.train_index.tolist())
    assert sub.mean == no_subset.mean  # normalisation from the whole training pool, as for teachers
    # names and indices select the same data; each selection has its own fingerprint
    assert bigger.fingerprint() != sub.fingerprint() != no_subset.fingerprint() != full.fingerprint()
    by_index = load_dataset("synthetic", train_size=600, test_size=100, classes=[7, 2, 4], train_per_class=15)
    assert by_index.fingerprint() == sub.fingerprint()


def test_teacher_data_sees_every_sample_of_the_kept_classes():
    s = validate_setting(make(data={"classes": [1, 3], "train_per_class": 10}))
    student, teacher = load_data(s), load_data(s, subset=False)
    assert torch.bincount(student.train_labels).tolist() == [10, 10]
    assert teacher.train_labels.numel() > 40 and teacher.classes == student.classes == ("class_1", "class_3")
    assert torch.equal(teacher.val_labels, student.val_labels)


def test_bad_classes_and_per_class_counts_name_the_field():
    with pytest.raises(ConfigError, match=r"data.classes: unknown class 'class_x'"):
        load_data(validate_setting(make(data={"classes": ["class_x", 1]})))
    with pytest.raises(ConfigError, match=r"data.classes: class 12 is not an index 0..9"):
        load_data(validate_setting(make(data={"classes": [12, 1]})))
    with pytest.raises(ConfigError, match=r"data.classes: class 'class_1' \(class_1\) is given twice"):
        load_data(validate_setting(make(data={"classes": [1, "class_1"]})))
    with pytest.raises(ConfigError, match=r"data.train_per_class: train_per_class=500 is more than"):
        load_data(validate_setting(make(data={"classes": [1, 2], "train_per_class": 500})))


# ----------------------------------------------------------------------------- init and head


def test_init_loads_the_body_exactly_and_replaces_the_head(tmp_path):
    source = save_source(tmp_path / "source.pt", num_classes=7)
    s = validate_setting(make(student={"init": "source.pt"}))
    data = load_data(s)
    model = build_model(s.student, data, seed=0, device=torch.device("cpu"))
    state = model.state_dict()
    body = [k for k in source if not k.startswith("net.fc.")]
    assert len(body) == len(state) - 2 and all(torch.equal(state[k], source[k]) for k in body)
    assert state["net.fc.weight"].shape == (10, 16) and state["net.fc.bias"].shape == (10,)
    fresh = build_model(validate_setting(make()).student, data, seed=0, device=torch.device("cpu")).state_dict()
    assert torch.equal(state["net.fc.weight"], fresh["net.fc.weight"])  # the new head's own initialisation
    assert model.init_sha256 == run_trial(s, "none").init_sha256


def test_head_is_replaced_even_when_it_fits_unless_kept(tmp_path):
    source = save_source(tmp_path / "source.pt", num_classes=10)
    replaced = build_model(validate_setting(make(student={"init": "source.pt"})).student,
                            load_data(validate_setting(make())), 0, torch.device("cpu")).state_dict()
    kept = build_model(validate_setting(make(student={"init": {"path": "source.pt", "head": "keep"}})).student,
                        load_data(validate_setting(make())), 0, torch.device("cpu")).state_dict()
    assert not torch.equal(replaced["net.fc.weight"], source["net.fc.weight"])
    assert torch.equal(kept["net.fc.weight"], source["net.fc.weight"])
    assert torch.equal(replaced["net.stages.stage3.1.0.weight"], source["net.stages.stage3.1.0.weight"])


def test_mismatched_or_missing_checkpoints_give_clear_errors(tmp_path):
    save_source(tmp_path / "wide.pt", width=8)
    data = load_data(validate_setting(make()))
    with pytest.raises(ConfigError, match=r"student.init: checkpoint 'wide.pt' does not fit ConvNet: shape "
                                          r"mismatches: stages.stage1.0.0.weight: file \(8, 1, 3, 3\) vs model"):
        build_model(validate_setting(make(student={"init": "wide.pt"})).student, data, 0, torch.device("cpu"))
    save_source(tmp_path / "resnet.pt", model="resnet8")
    with pytest.raises(ConfigError, match=r"student.init: .* missing keys .* unexpected keys"):
        build_model(validate_setting(make(student={"init": "resnet.pt"})).student, data, 0, torch.device("cpu"))
    save_source(tmp_path / "five.pt", num_classes=5)
    with pytest.raises(ConfigError, match=r"head 'fc' has another number of classes: use head: replace"):
        build_model(validate_setting(make(student={"init": {"path": "five.pt", "head": "keep"}})).student,
                     data, 0, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"teacher.init.path: no such file 'nothing.pt'; make one with `relkd "
                                          r"pretrain --setting SOURCE.yaml --out FILE`"):
        teacher_key(validate_setting(make(teacher={"init": "nothing.pt"})))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"student.init: 'junk.pt' is not a checkpoint torch.load reads"):
        run_trial(validate_setting(make(student={"init": "junk.pt"})), "none")
    with pytest.raises(ConfigError, match=r"student.init.pretrain: no such setting file 'src.yaml'"):
        resolve_inits(validate_setting(make(student={"init": {"pretrain": "src.yaml"}})))
    with pytest.raises(ConfigError, match=r"student.init.pretrain: the source 'src.yaml' has not been trained or "
                                          r"loaded yet; call relkd.pretrain.resolve_inits"):
        run_trial(validate_setting(make(student={"init": {"pretrain": "src.yaml"}})), "none")  # the engine never trains it
    with pytest.raises(ConfigError, match=r"student.freeze: model 'cnn_tiny' has no stage 'stage4'"):
        run_trial(validate_setting(make(student={"freeze": ["stage4"]})), "none")


def test_torchvision_weights_file_initialises_a_tv_model(tmp_path):
    torch.manual_seed(5)
    source = create_model("tv:mobilenet_v3_small", num_classes=1000).net  # torchvision's own layout and head
    torch.save(source.state_dict(), tmp_path / "mobilenet_v3_small.pth")
    s = validate_setting(make(student={"model": "tv:mobilenet_v3_small", "params": {},
                                       "init": "mobilenet_v3_small.pth", "freeze": "body"}))
    model = build_model(s.student, load_data(s), 0, torch.device("cpu"))
    assert head_name(model) == "classifier.3"  # torchvision's recipe: replace the last layer only
    state, expected = model.net.state_dict(), source.state_dict()
    assert state["classifier.3.weight"].shape == (10, 1024)
    assert all(torch.equal(state[k], v) for k, v in expected.items() if not k.startswith("classifier.3."))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["net.classifier.3.weight", "net.classifier.3.bias"]
    parts = module_parts(model, (1, 28, 28))
    assert parts["features.0.0"] == "stage1" and parts["classifier.0"] == "neck" and parts["classifier.3"] == "head"
    assert model.num_stages == 5 and parts["features.12.0"] == "stage5"


# ----------------------------------------------------------------------------- freezing and lr groups


@pytest.mark.parametrize("freeze, frozen_prefixes", [
    (["stage1", "stage2"], ("net.stages.stage1.", "net.stages.stage2.")),
    ("body", ("net.stages.",)),
])
def test_frozen_parameters_and_their_bn_statistics_do_not_move(tmp_path, freeze, frozen_prefixes):
    source = save_source(tmp_path / "source.pt")
    s = validate_setting(make(student={"init": "source.pt", "freeze": freeze}, budget={"epochs": 2}))
    model = run_trial(s, "none", return_model=True).model
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith("net.fc.") or key.endswith("num_batches_tracked"):
            continue
        if key.startswith(frozen_prefixes):
            assert torch.equal(value, source[key]), key  # weights and BN running statistics
        else:
            assert not torch.equal(value, source[key]), key
    assert model.training and all(not model.net.get_submodule(n).training for n in model.frozen_norms)
    assert {p.requires_grad for n, p in model.named_parameters() if n.startswith(frozen_prefixes)} == {False}


def test_body_and_head_learning_rates_follow_the_schedule():
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=3, width=4)
    model.net.stages.stage1.requires_grad_(False)
    recipe = Recipe(epochs=1, lr=0.2, body_lr_scale=0.1, schedule="cosine")
    opt, sched = make_optimizer(model, recipe, steps=10)
    body, head = body_and_head(model)
    assert [g["name"] for g in opt.param_groups] == ["body", "head"]
    assert opt.param_groups[1]["params"] == head and len(head) == 2 and head[0] is model.net.fc.weight
    trainable_body = [p for p in body if p.requires_grad]
    assert opt.param_groups[0]["params"] == trainable_body and len(trainable_body) < len(body)  # frozen: left out
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx([0.02, 0.2])
    for body_lr, head_lr in lrs:
        assert body_lr == pytest.approx(0.1 * head_lr)
    assert lrs[5][1] == pytest.approx(0.2 * 0.5)  # cosine at half the steps
    opt, sched = make_optimizer(model, Recipe(lr=0.2, body_lr_scale=0.5, schedule="onecycle"), steps=10)
    peaks = [max(g["lr"] for g in opt.param_groups)]
    for _ in range(10):
        opt.step()
        sched.step()
        peaks.append([g["lr"] for g in opt.param_groups])
    assert max(p[0] for p in peaks[1:]) == pytest.approx(0.1, rel=0.05)
    assert max(p[1] for p in peaks[1:]) == pytest.approx(0.2, rel=0.05)
    one, _ = make_optimizer(model, Recipe(lr=0.2), steps=10)  # default: one group, as before
    assert len(one.param_groups) == 1


# ----------------------------------------------------------------------------- relkd pretrain


def test_pretrain_cli_writes_checkpoint_and_meta_then_reuses_them(tmp_path, capsys):
    source = make(data={"classes": [0, 1, 2, 3, 4]}, budget={"epochs": 1})
    del source["teacher"]  # a pretrain setting needs no teacher
    (tmp_path / "src.yaml").write_text(json.dumps(source))
    assert main(["pretrain", "--setting", "src.yaml", "--out", "out/src.pt", "--json", "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out)
    meta = json.loads((tmp_path / "out" / "src.json").read_text())
    assert first["trained"] and meta["sha256"] == first["sha256"] and meta["classes"][0] == "class_0"
    from relkd.cache import file_sha256

    assert file_sha256(tmp_path / "out" / "src.pt") == meta["sha256"]
    state = torch.load(tmp_path / "out" / "src.pt", weights_only=True)
    assert state["net.fc.weight"].shape == (5, 16)
    assert main(["pretrain", "--setting", "src.yaml", "--out", "out/src.pt", "--json", "--quiet"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert not second["trained"] and second["sha256"] == first["sha256"]
    # a target setting that names the source setting uses the same cached checkpoint
    target = validate_setting(make(data={"classes": [5, 6, 7, 8, 9], "train_per_class": 10},
                                   student={"init": {"pretrain": "src.yaml"}}))
    assert run_trial(resolve_inits(target), "none").init_sha256 == first["sha256"]
    assert main(["pretrain", "--setting", "missing.yaml"]) == 2


# ----------------------------------------------------------------------------- settings and keys


@pytest.mark.parametrize("section, value, expected", [
    ("data", {"classes": 5}, "data.classes: expected a list of at least two distinct class indices"),
    ("data", {"classes": [3]}, "data.classes: expected a list of at least two"),
    ("data", {"classes": [1, 1]}, "data.classes[1]: class 1 is given twice"),
    ("data", {"classes": [1, -2]}, "data.classes[1]: expected a class index >= 0 or a class name"),
    ("data", {"train_per_class": 0}, "data.train_per_class: expected an integer >= 1"),
    ("data", {"train_per_class": 5, "train_subset": 50}, "data.train_per_class: give data.train_subset"),
    ("student", {"init": 3}, "student.init: expected a checkpoint path or a mapping"),
    ("student", {"init": {"path": "a.pt", "pretrain": "b.yaml"}}, "student.init: give exactly one of path"),
    ("student", {"init": {"path": ""}}, "student.init.path: expected the path of a state-dict file"),
    ("student", {"init": {"path": "a.pt", "head": "new"}}, "student.init.head: expected one of replace, keep"),
    ("student", {"init": {"file": "a.pt"}}, "student.init.file: unknown field"),
    ("teacher", {"init": {"pretrain": 1}}, "teacher.init.pretrain: expected the path of a setting file"),
    ("student", {"freeze": "all"}, "student.freeze: expected a list of stage names such as [stage1, stage2], or body"),
    ("student", {"freeze": ["stage0"]}, "student.freeze[0]: expected a stage name stage1, stage2"),
    ("student", {"freeze": ["body", "stage1"]}, "student.freeze[0]: expected a stage name stage1, stage2, ... (see "
                                                "the model's taps); body stands alone"),
    ("budget", {"body_lr_scale": 0}, "budget.body_lr_scale: expected a finite number > 0 and <= 1"),
    ("teacher", {"body_lr_scale": 2}, "teacher.body_lr_scale: expected a finite number > 0 and <= 1"),
    ("student", {"model": "tv:resnet18", "params": {"weights": "w.pt"}, "init": "w.pt"},
     "student.init: give either student.init or student.params.weights, not both"),
])
def test_bad_values_of_the_new_fields_name_the_field(section, value, expected):
    with pytest.raises(ConfigError) as err:
        validate_setting(make(**{section: value}))
    assert any(line.startswith(expected) for line in err.value.errors), err.value.errors


TRANSFER = make(data={"classes": [5, "class_6", 7], "train_per_class": 20},
                student={"init": {"pretrain": "src.yaml", "head": "replace"}, "freeze": ["stage1"]},
                teacher={"init": "t.pt", "freeze": "body", "body_lr_scale": 0.5},
                budget={"body_lr_scale": 0.1})


@FUZZ
@given(case=hostile(TRANSFER))
def test_transfer_setting_loader_never_crashes(case):
    path, value, delete, _ = case
    check(validate_setting, mutate(TRANSFER, path, value, delete))


def test_defaults_leave_canonical_form_and_keys_unchanged(tmp_path):
    plain = validate_setting(make())
    explicit = validate_setting(make(data={"classes": None, "train_per_class": None},
                                     teacher={"init": None, "freeze": [], "body_lr_scale": 1.0},
                                     student={"init": None, "freeze": []}, budget={"body_lr_scale": 1.0}))
    assert explicit == plain and explicit.to_dict() == plain.to_dict()
    assert not {"classes", "train_per_class"} & set(plain.to_dict()["data"])
    assert "body_lr_scale" not in plain.to_dict()["budget"] and "init" not in plain.to_dict()["student"]
    assert teacher_key(explicit) == teacher_key(plain)
    assert load_data(explicit).fingerprint() == load_data(plain).fingerprint()
    # the new fields round-trip, and each one that changes the teacher changes its key
    save_source(tmp_path / "t.pt", width=8)
    full = validate_setting(TRANSFER)
    assert validate_setting(full.to_dict()) == full
    assert full.to_dict()["student"]["init"] == {"pretrain": "src.yaml", "head": "replace"}
    with_init = validate_setting(make(teacher={"init": "t.pt"}))
    init_key = teacher_key(with_init)
    keys = {teacher_key(plain), init_key, teacher_key(validate_setting(make(teacher={"freeze": "body"}))),
            teacher_key(validate_setting(make(teacher={"body_lr_scale": 0.5}))),
            teacher_key(validate_setting(make(data={"classes": [1, 2, 3]})))}
    assert len(keys) == 5
    # the key follows the init file's content, not its path
    (tmp_path / "moved.pt").write_bytes((tmp_path / "t.pt").read_bytes())
    assert teacher_key(validate_setting(make(teacher={"init": "moved.pt"}))) == init_key
    save_source(tmp_path / "t.pt", width=8, seed=9)  # same path, new content: a new teacher
    assert teacher_key(with_init) != init_key
    # per-class subsets are a student matter: the teacher's key ignores them
    assert teacher_key(validate_setting(make(data={"classes": [1, 2, 3], "train_per_class": 5}))) == \
        teacher_key(validate_setting(make(data={"classes": [1, 2, 3]})))


def test_shipped_transfer_files_are_valid():
    from relkd.study.compare import load_compare
    from relkd.study import load_study_spec

    source = load_setting(ROOT / "studies" / "pretrain_fmnist_source.yaml", teacher_required=False)
    assert source.teacher is None and source.data.classes == (0, 1, 2, 3, 4)
    study = load_study_spec(ROOT / "studies" / "transfer_fmnist.yaml")
    compare = load_compare(ROOT / "studies" / "compare_transfer_fmnist.yaml")
    for s in (study.setting, compare.setting):
        assert s.data.classes == (5, 6, 7, 8, 9) and s.data.train_per_class
        assert s.student.init.pretrain == "studies/pretrain_fmnist_source.yaml"
        assert s.student.model == source.student.model
    assert len(compare.seeds) >= 3 and {"none", "kd"} <= set(compare.runs)
