"""Does the margin hold at a longer budget? The study's verdict retrained at several budgets.

The study's verdict (:func:`relkd.results.ranking.search_verdict`) names two compositions: the
**winner** (the best searched composition) and the **best known** method (the best anchor
or tuned anchor), compared on validation accuracy at the study's short budget.
:func:`confirm_budgets` retrains those two, and ``none`` (CE alone) and ``kd``, with each
seed at each budget (``epochs``, e.g. 3, 9, 27), optionally on the full training set
(``full_train``: the setting's ``data.train_subset`` and ``data.train_per_class`` dropped),
evaluates every student on the **test split**, and reports for each budget each one's test
mean ± std, the margin winner − best known with Welch's 95% confidence interval and p-value,
winner − none, and the wall time of the budget's runs (the sum of the runs' own times)::

    relkd study confirm --study-name fmnist_quick --epochs 3,9,27 [--full-train]

The runs are runs of the confirm's :class:`relkd.study.queue.RunQueue` (``<study>.confirm``
in ``confirm.db``), with the keys of :mod:`relkd.study.confirm`: the composition's hash and
the setting's (:func:`relkd.study.confirm.setting_hash`: budget, learning rate and training
subset included). So an interrupted confirm resumes, several processes share the runs, a run
a single-budget confirm made at the same epochs is reused, and a run on the full training
set never stands for one on the subset. The table goes to ``confirm_budgets.md`` and
``confirm_budgets.json`` (``confirm_budgets_full_train.*`` with ``full_train``) beside
``confirm.json``, and to the study attribute ``relkd.confirm`` under ``budgets``
(``budgets_full_train``); where that attribute holds no single-budget confirm, its
single-budget fields (``epochs``, ``seeds``, ``rows``...) show the longest budget, so that
readers of the older format keep working.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import optuna

from ..adapt import resolve_student
from ..engine import run_trial
from ..files import write_text
from ..setting import Setting
from ..stats import mean_sd, welch_difference, welch_interval, welch_p
from ..text import markdown_table, p_value, percent
from .confirm import BUDGET_RECORDS, Candidate, import_runs_jsonl, queue_url, setting_hash
from .export import study_setting
from ..engine.tracking import open_tracker
from .queue import Run, RunQueue
from ..results.pareto import single_objective
from ..results.record import CONFIRM_ATTR, TrialRecord, set_study_document, study_document
from ..results.ranking import compositions, search_verdict
from .storage import run_dir

__all__ = ["confirm_budgets", "format_budgets", "parse_budgets", "check_budgets", "full_training_set",
           "budget_candidates", "ROLES"]

log = logging.getLogger(__name__)

#: What each retrained composition stands for, in the table's order.
ROLES = ("winner", "best known", "kd", "none")
_EXPECTED = "expected positive integers separated by commas, e.g. 3,9,27"


def parse_budgets(text: str) -> list[int]:
    """``"3,9,27"`` as ``[3, 9, 27]`` (one number: a list of one); ``ValueError`` naming
    ``epochs`` otherwise."""
    try:
        values = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"epochs: {_EXPECTED}, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ValueError(f"epochs: {_EXPECTED}, got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"epochs: expected each budget once, got {text!r}")
    return values


def check_budgets(epochs: Sequence[int]) -> list[int]:
    """The budgets, shortest first; ``ValueError`` naming ``epochs`` unless they are distinct
    integers >= 1."""
    values = list(epochs)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"epochs: {_EXPECTED}, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"epochs: expected each budget once, got {values!r}")
    return sorted(values)


def full_training_set(setting: Setting) -> Setting:
    """``setting`` whose students train on the whole training split (no ``train_subset``, no
    ``train_per_class``); validation and test splits stay as they are, and so does
    ``data.labelled``: more unlabelled images, as many labels."""
    return setting.replace(data=dataclasses.replace(setting.data, train_subset=None, train_per_class=None))


def budget_candidates(study: optuna.Study, setting: Setting) -> tuple[list[tuple[Candidate, list[str]]],
                                                                      dict[str, Any]]:
    """The compositions to retrain, each with its roles (:data:`ROLES`; a composition that is
    both, e.g. the best known method ``kd``, is trained once), and the study's verdict, which
    chose the winner and the best known method. Anchors train their preset for ``setting``'s
    models, as :mod:`relkd.study.confirm` does; a searched or tuned composition its trial's config."""
    verdict = search_verdict(study)
    if verdict is None:
        raise ValueError(f"study {study.study_name!r} has no verdict yet: a confirm at several budgets retrains the "
                         f"verdict's winner and best known method, so the study needs a completed searched "
                         f"composition and a completed anchor (relkd study status --study-name {study.study_name})")
    ranked = {c.trial.number: c for c in compositions(study)}
    anchors: dict[str, Any] = {}
    for c in ranked.values():  # best first
        if c.anchor is not None:
            anchors.setdefault(c.anchor, c)

    def of(number: int) -> Candidate:
        c = ranked[number]
        config = setting.preset(c.anchor) if c.anchor else c.record.config
        return Candidate(c.label, config, number, c.mean)

    chosen = [(of(verdict["best_searched"]["trial"]), "winner"), (of(verdict["best_anchor"]["trial"]), "best known")]
    for name in ("kd", "none"):
        c = anchors.get(name)
        chosen.append((Candidate(f"anchor {name}", setting.preset(name), None if c is None else c.trial.number,
                                 None if c is None else c.mean), name))
    merged: dict[str, tuple[Candidate, list[str]]] = {}
    for candidate, role in chosen:
        merged.setdefault(candidate.key, (candidate, []))[1].append(role)
    return list(merged.values()), verdict


def _margin(b: list[float], a: list[float]) -> dict[str, Any]:
    """``mean(b) - mean(a)`` with its standard error, Welch's 95% CI and p (``None`` where undefined)."""
    difference, se, p = welch_difference(b, a)
    ci = welch_interval(b, a)
    return {"difference": difference, "standard_error": se, "ci": None if ci is None else list(ci), "p": p}


def confirm_budgets(study: optuna.Study, *, epochs: Sequence[int] | None = None, seeds: Sequence[int] = (0, 1, 2),
                    full_train: bool = False, out_dir: str | os.PathLike | None = None, device: str | None = None,
                    progress: bool = False, storage: str | None = None,
                    log_to: str | None = None) -> dict[str, Any]:
    """Retrain the verdict's winner, its best known method, ``none`` and ``kd`` with each seed
    at each budget of ``epochs`` (default: twice the study's budget), on the full training set
    with ``full_train``; test them; return the table (see the module's docstring).

    ``device`` overrides the study's; runs already in the queue are reused; the queue is
    ``storage``, else ``$RELKD_CONFIRM_STORAGE``, else SQLite at ``out_dir/confirm.db``
    (``runs/<study>/confirm``; :func:`relkd.study.confirm.queue_url`);
    ``log_to``: a tracker each run is logged to (:mod:`relkd.engine.tracking`)."""

    single_objective(study, "a confirm at several budgets", "it retrains the verdict's winner and best known "
                     "method, and a study of several objectives has no verdict; export a trial of the Pareto front "
                     "(relkd study export --trial N) and train it with relkd train")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected each seed once, got {list(seeds)}")
    study_level = study_setting(study)
    budgets = check_budgets(epochs) if epochs is not None else [2 * study_level.budget.epochs]
    setting = full_training_set(study_level) if full_train else study_level
    if device:
        setting = setting.replace(device=device)
    chosen, verdict = budget_candidates(study, setting)
    out = Path(out_dir) if out_dir is not None else run_dir(study.study_name) / "confirm"
    out.mkdir(parents=True, exist_ok=True)
    hashes = {e: setting_hash(setting.with_budget(epochs=e)) for e in budgets}

    def run_of(candidate: Candidate, seed: int, e: int) -> Run:  # the run ids of relkd.study.confirm
        return Run(f"{candidate.key}@{hashes[e]}", candidate.config, seed, e, candidate.label)

    runs = [run_of(c, s, e) for e in budgets for c, _ in chosen for s in seeds]  # shortest budget first
    queue = RunQueue.open(f"{study.study_name}.confirm", queue_url(storage, out), seed=setting.seed)
    import_runs_jsonl(queue, out / "runs.jsonl", runs)
    results = queue.run(runs, resolve_student(setting, progress=progress), eval_test=True, progress=progress,
                        train=run_trial, tracker=open_tracker(log_to, f"{study.study_name}.confirm"),
                        on_start=lambda run: log.info("confirm: %s, seed %d, %d epochs%s", run.label,
                                                                       run.seed, run.epochs,
                                                                       ", full training set" if full_train else ""))
    missing = [r for r in runs if r.id not in results]
    if missing:
        raise ValueError(f"confirm {study.study_name!r}: {len(missing)} runs did not finish (e.g. {missing[0].label}, "
                         f"{missing[0].epochs} epochs, seed {missing[0].seed}); run the command again to retry them")
    by_budget = [_budget(e, chosen, [results[run_of(c, s, e).id] for c, _ in chosen for s in seeds], len(seeds))
                 for e in budgets]
    data = setting.data
    table = {
        "study": study.study_name, "epochs": budgets, "seeds": list(seeds), "full_train": full_train,
        "data": {"train_subset": data.train_subset, "train_per_class": data.train_per_class},
        "study_data": {"train_subset": study_level.data.train_subset,
                       "train_per_class": study_level.data.train_per_class},
        "study_epochs": study_level.budget.epochs,
        "verdict": {k: verdict[k] for k in ("outcome", "difference", "standard_error", "ci", "p", "seeds")},
        "candidates": [{"label": c.label, "roles": roles, "trial": c.trial, "study_value": c.study_value,
                        "objective_config": c.config} for c, roles in chosen],
        "by_budget": by_budget,
    }
    name = BUDGET_RECORDS[1] if full_train else BUDGET_RECORDS[0]
    write_text(out / f"confirm_{name}.json", json.dumps(table, indent=2))
    write_text(out / f"confirm_{name}.md", format_budgets(table))
    _record(study, name, table)
    return table


def _budget(epochs: int, chosen: list[tuple[Candidate, list[str]]], trials: list[Any], n: int) -> dict[str, Any]:
    """One budget's rows and margins from its completed runs (``n`` seeds of each candidate, in order)."""
    rows, test_of = [], {}
    for i, (candidate, roles) in enumerate(chosen):
        mine = trials[i * n:(i + 1) * n]
        test = [float(TrialRecord.of(t).test_accuracy) for t in mine]
        val_mean, val_std = mean_sd([float(t.value) for t in mine])
        test_mean, test_std = mean_sd(test)
        rows.append({"label": candidate.label, "roles": roles, "trial": candidate.trial, "seeds": len(mine),
                     "val_mean": val_mean, "val_std": val_std, "test_mean": test_mean, "test_std": test_std,
                     "test": test, "wall_seconds": sum(float(TrialRecord.of(t).wall_seconds or 0.0) for t in mine)})
        for role in roles:
            test_of[role] = test
    return {"epochs": epochs, "runs": len(trials), "wall_seconds": sum(r["wall_seconds"] for r in rows),
            "rows": rows, "margin": _margin(test_of["winner"], test_of["best known"]),
            "over_none": _margin(test_of["winner"], test_of["none"])}


def _record(study: optuna.Study, name: str, table: dict[str, Any]) -> None:
    """``table`` (without configs) into the study attribute under ``name``; the attribute's
    single-budget fields show the longest budget unless a single-budget confirm wrote them."""
    previous = study_document(study, CONFIRM_ATTR)
    record = dict(previous) if isinstance(previous, dict) else {}
    record[name] = {k: v for k, v in table.items() if k != "candidates"} | {
        "candidates": [{k: v for k, v in c.items() if k != "objective_config"} for c in table["candidates"]]}
    if "rows" not in record or record.get("rows_from") in BUDGET_RECORDS:
        last = table["by_budget"][-1]
        test = {tuple(r["roles"]): r["test"] for r in last["rows"]}
        kd = next(v for roles, v in test.items() if "kd" in roles)
        known_roles, known = next((roles, v) for roles, v in test.items() if "best known" in roles)
        study_values = {c["label"]: c["study_value"] for c in table["candidates"]}
        rows = [{"label": r["label"], "trial": r["trial"], "study_value": study_values[r["label"]],
                 "seeds": r["seeds"], "val_mean": r["val_mean"], "val_std": r["val_std"],
                 "test_mean": r["test_mean"], "test_std": r["test_std"],
                 "p_vs_kd": None if "kd" in r["roles"] else welch_p(r["test"], kd),
                 "p_vs_best_preset": None if "best known" in r["roles"] else welch_p(r["test"], known)}
                for r in last["rows"]]
        label = next(r["label"] for r in last["rows"] if tuple(r["roles"]) == known_roles)
        record.update({"study": table["study"], "epochs": last["epochs"], "seeds": table["seeds"],
                       "best_preset": label.removeprefix("anchor "),
                       "rows": sorted(rows, key=lambda r: -r["test_mean"]), "rows_from": name})
    set_study_document(study, CONFIRM_ATTR, record)


def _points(margin: dict[str, Any]) -> list[str]:
    """A margin's cells: difference, 95% CI (points) and Welch p."""
    ci = margin["ci"]
    return [percent(margin["difference"], sign=True),
            "" if ci is None else f"{percent(ci[0], sign=True)} .. {percent(ci[1], sign=True)}", p_value(margin["p"])]


def _data_phrase(table: dict[str, Any]) -> str:
    def named(data: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in data.items() if v is not None)

    study = named(table["study_data"])
    if not table["full_train"]:
        return f"on the study's training subset ({study})" if study else "on the full training set, as the study"
    return (f"on the full training set (the study trained on {study})" if study
            else "on the full training set, as the study")


def format_budgets(table: dict[str, Any]) -> str:
    """The table as Markdown: one row per budget and composition (test accuracy, mean ± std),
    then one line of margins per budget."""
    verdict = table["verdict"]
    by_role = {role: c["label"] for c in table["candidates"] for role in c["roles"]}
    ci = verdict["ci"]
    study_margin = f"{100 * verdict['difference']:+.2f} points" + (
        "" if ci is None else f", 95% CI {100 * ci[0]:+.2f} .. {100 * ci[1]:+.2f}") + (
        "" if verdict["p"] is None else f", Welch p = {verdict['p']:.3g}")
    lines = [
        f"Confirm at several budgets: study {table['study']}, seeds {', '.join(map(str, table['seeds']))}, trained "
        f"{_data_phrase(table)}; test accuracy % (mean ± std over seeds).",
        "",
        f"Winner: {by_role['winner']} (the best searched composition); best known: {by_role['best known']}; as the "
        f"study's verdict chose them at {table['study_epochs']} epochs on validation ({verdict['outcome']}: "
        f"{study_margin}).",
        "",
    ]
    study_values = {c["label"]: c["study_value"] for c in table["candidates"]}
    lines.append(markdown_table(
        ["epochs", "composition", "role", "study val", "val", "test"],
        [[budget["epochs"], r["label"], ", ".join(r["roles"]), percent(study_values[r["label"]]),
          f"{percent(r['val_mean'])} ± {percent(r['val_std'])}",
          f"{percent(r['test_mean'])} ± {percent(r['test_std'])}"]
         for budget in table["by_budget"] for r in budget["rows"]]))
    lines += ["", "Margins on the test split, in points (Welch's 95% CI and p); minutes: the budget's runs' wall "
                  "time, summed.", ""]
    lines.append(markdown_table(
        ["epochs", "winner − best known", "95% CI", "p", "winner − none", "95% CI", "p", "runs", "minutes"],
        [[budget["epochs"], *_points(budget["margin"]), *_points(budget["over_none"]), budget["runs"],
          f"{budget['wall_seconds'] / 60:.1f}"] for budget in table["by_budget"]]))
    return "\n".join(lines) + "\n"
