"""relkd.results.record: the typed trial record, the one place a trial attribute is named."""
import ast
import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from relkd.engine import TRIAL_FIELDS
from relkd.results.record import (CONFIG_ATTR, RERUN_ATTR, RUN_ATTR, TRIAL_ATTRS, TUNED_ATTR, TrialRecord,
                                  is_counted, is_known, is_searched, set_trial_attrs, trial_attrs, trial_counts)

PACKAGE = Path(__file__).resolve().parents[2] / "relkd"

EXAMPLE = {
    "config": {"relkd_config": 1, "terms": []}, "part_means": {"ce": 0.5}, "wall_seconds": 2.0, "train_seconds": 1.5,
    "samples_per_second": 100.0, "seed": 3, "versions": {"relkd": "0"}, "val_history": [0.5, 0.6], "epochs": 2,
    "worker": "h:1", "population": 4, "init_sha256": "ab", "student_params": 10, "student_macs": 20,
    "student": {"model": "cnn_tiny"}, "anchor": "kd", "anchor_in_space": True, "tuned_anchor": "sp",
    "invalid_combination": ["rule"], "skipped": "why", "pruned_reason": "median", "error": "boom",
    "rerun": {"of": 1, "seed": 4}, "refined_from": "sp", "run": {"id": "x"}, "test_accuracy": 0.4,
    "imported_from": "runs.jsonl",
}


def attribute_fields():
    return [f.name for f in dataclasses.fields(TrialRecord) if "doc" in f.metadata]


def test_every_attribute_field_is_read_back_from_a_stored_trial():
    assert sorted(EXAMPLE) == sorted(attribute_fields())  # the example covers every field
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.6, user_attrs=trial_attrs(**EXAMPLE)))
    record = TrialRecord.of(study.trials[0])
    assert {name: getattr(record, name) for name in EXAMPLE} == EXAMPLE
    assert record.value == 0.6 and record.number == 0 and record.state == TrialState.COMPLETE
    stored = study.trials[0].user_attrs
    assert stored[CONFIG_ATTR] == EXAMPLE["config"] and stored[RUN_ATTR] == EXAMPLE["run"]
    assert stored[RERUN_ATTR] == EXAMPLE["rerun"] and stored[TUNED_ATTR] == "sp"
    assert set(stored) == set(TRIAL_ATTRS)  # every attribute documented, under its stored name


def test_a_trial_without_attributes_reads_as_none_and_a_running_trial_has_no_values():
    study = optuna.create_study()
    trial = study.ask()
    set_trial_attrs(trial, seed=5, config={"terms": []})
    record = TrialRecord.of(trial)
    assert record.seed == 5 and record.config == {"terms": []} and record.anchor is None
    assert record.state == TrialState.RUNNING and record.values is None and record.value is None


def test_a_writer_cannot_invent_an_attribute():
    with pytest.raises(TypeError, match="not fields of a TrialRecord: anchr, sed; they are: config, "):
        trial_attrs(anchr="kd", sed=1, seed=2)


def test_run_results_store_only_record_fields():
    assert set(TRIAL_FIELDS) <= set(attribute_fields())


def test_known_searched_counted_and_counts_read_the_record():
    study = optuna.create_study(direction="maximize")
    kinds = {
        "anchor": (TrialState.COMPLETE, trial_attrs(anchor="kd", config={})),
        "tuned": (TrialState.COMPLETE, trial_attrs(tuned_anchor="kd", config={})),
        "searched": (TrialState.COMPLETE, trial_attrs(config={})),
        "pruned": (TrialState.PRUNED, trial_attrs(config={}, pruned_reason="median")),
        "invalid": (TrialState.PRUNED, trial_attrs(invalid_combination=["rule"])),
        "skipped": (TrialState.PRUNED, trial_attrs(skipped="full")),
        "rerun": (TrialState.COMPLETE, trial_attrs(rerun={"of": 0, "seed": 1})),
    }
    for state, attrs in kinds.values():
        study.add_trial(create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                     intermediate_values={} if state == TrialState.COMPLETE else {1: 0.1},
                                     user_attrs=attrs))
    by_kind = dict(zip(kinds, study.trials))
    assert [k for k, t in by_kind.items() if is_known(t)] == ["anchor", "tuned"]
    assert [k for k, t in by_kind.items() if is_searched(t)] == ["searched", "pruned", "invalid", "skipped"]
    assert [k for k, t in by_kind.items() if is_counted(t)] == ["anchor", "tuned", "searched", "pruned"]
    counts = trial_counts(study)
    assert (counts["complete"], counts["pruned"], counts["invalid_draws"], counts["skipped"], counts["reruns"]) == \
        (3, 1, 1, 1, 1)


def _attribute_literals(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """Where a module names a trial attribute by a string: ``set_user_attr("x", ...)``,
    ``x.user_attrs["x"]``, ``x.user_attrs.get("x")``, ``"x" in x.user_attrs`` and
    ``user_attrs={"x": ...}``."""
    names = set(TRIAL_ATTRS)
    found = []

    def named(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in names

    def is_user_attrs(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "user_attrs"

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        hit = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "set_user_attr" and node.args and named(node.args[0]):
                hit = node.args[0]
            elif node.func.attr == "get" and is_user_attrs(node.func.value) and node.args and named(node.args[0]):
                hit = node.args[0]
            for kw in node.keywords:
                if kw.arg == "user_attrs" and isinstance(kw.value, ast.Dict):
                    hit = next((k for k in kw.value.keys if named(k)), hit)
        elif isinstance(node, ast.Subscript) and is_user_attrs(node.value) and named(node.slice):
            hit = node.slice
        elif isinstance(node, ast.Compare) and named(node.left) and any(is_user_attrs(c) for c in node.comparators):
            hit = node.left
        if hit is not None:
            found.append(f"{path.relative_to(root)}:{hit.lineno}: {hit.value!r}")
    return found


def test_no_module_but_the_record_spells_a_trial_attribute():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "record.py" or path.parent.name != "results"
             for hit in _attribute_literals(path)]
    assert not found, "read trials through TrialRecord.of(trial) and write them with set_trial_attrs/trial_attrs:\n" \
        + "\n".join(found)


def test_the_spelling_check_finds_each_way_of_spelling_an_attribute(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('trial.set_user_attr("seed", 1)\nt.user_attrs["anchor"]\nt.user_attrs.get("rerun")\n'
                      '"error" in t.user_attrs\nstudy.enqueue_trial({}, user_attrs={"anchor": "kd"})\n'
                      't.user_attrs.get("unrelated")\n')
    hits = _attribute_literals(module, tmp_path)
    assert [h.split(": ")[1] for h in hits] == ["'seed'", "'anchor'", "'rerun'", "'error'", "'anchor'"]
