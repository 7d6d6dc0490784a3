"""Confirm a study's winners: retrain them with several seeds at a longer budget and test them.

Short trials rank compositions noisily. :func:`confirm_study` retrains the ``top_k`` best
compositions and the anchors that matter (``none``, ``kd`` and the best relation preset of
the study) with each seed, evaluates every student on the **test split**, and compares
them with Welch's t-test against ``kd`` and against the best preset.

Every run is a run of a :class:`relkd.study.queue.RunQueue`: the Optuna study
``<study>.confirm`` in ``runs/<study>/confirm/confirm.db`` (``out_dir``; ``storage`` or
``$RELKD_CONFIRM_STORAGE`` puts it elsewhere, e.g. on a database several machines share),
so an interrupted confirm resumes where it stopped and several processes split the runs. The
finished runs of a confirm made before run queues (``runs.jsonl`` in the same folder) are read
into the queue instead of being trained again. The table goes to ``confirm.json`` and
``confirm.md`` beside it and to the study attribute ``relkd.confirm``.

Whether the search's margin holds at longer budgets or on the full training set (the
verdict's winner and best known method at several budgets) is :mod:`relkd.study.confirm_budgets`,
which trains through the same queue with the same run keys (:func:`setting_hash`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna

from ..config import validate_config
from ..engine import run_trial
from ..files import write_text
from ..adapt import resolve_student
from ..pretrain import prepare_inits
from .export import anchor_values, composition_label, ranked_trials, study_setting
from ..engine.tracking import open_tracker
from .queue import Run, RunQueue
from ..results.pareto import single_objective
from ..results.ranking import compositions
from ..stats import mean_sd, welch_p
from ..text import markdown_table, mean_pm, p_value, percent
from ..setting import comparable_setting, setting_record
from ..results.record import CONFIRM_ATTR, TrialRecord, set_study_document, study_document
from .storage import run_dir

__all__ = ["confirm_study", "Candidate", "welch_p", "format_table", "setting_hash", "import_runs_jsonl",
           "BUDGET_RECORDS", "QUEUE_STORAGE_ENV", "queue_url"]

log = logging.getLogger(__name__)

BASELINE_ANCHORS = ("none", "kd")
#: The keys of the study attribute that hold confirms at several budgets
#: (:mod:`relkd.study.confirm_budgets`), kept when a single-budget confirm rewrites the attribute.
BUDGET_RECORDS = ("budgets", "budgets_full_train")
#: The environment variable that gives the confirm's queue storage where no ``storage`` argument
#: (``--queue-storage``) does: processes on several machines then share the runs.
QUEUE_STORAGE_ENV = "RELKD_CONFIRM_STORAGE"


def queue_url(storage: str | None, out: Path) -> str:
    """The storage of the confirm's run queue: ``storage``, else ``$RELKD_CONFIRM_STORAGE``,
    else SQLite at ``out/confirm.db`` (one machine's)."""
    if storage is not None and not str(storage).strip():
        raise ValueError("storage: expected a storage URL such as sqlite:///runs/confirm.db, "
                         "postgresql+psycopg://user@host/db or journal:PATH, got ''")
    return storage or os.environ.get(QUEUE_STORAGE_ENV) or f"sqlite:///{(out / 'confirm.db').as_posix()}"


@dataclass(frozen=True)
class Candidate:
    label: str
    config: dict[str, Any]
    trial: int | None = None
    study_value: float | None = None

    @property
    def key(self) -> str:
        text = json.dumps(_comparable(self.config), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config without provenance and term names, for telling duplicates apart."""
    cfg = validate_config(config)
    cfg.pop("meta", None)
    for term in cfg["terms"]:
        term.pop("name", None)
    return cfg


def setting_hash(setting: Any) -> str:
    """What a finished run depends on besides composition, seed and epochs."""
    record = comparable_setting(setting_record(setting))
    inits = prepare_inits(setting)  # the init files' content, wherever they lie (none: the hash is as before)
    if inits:
        record["inits"] = inits
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _candidates(study: optuna.Study, setting: Any, top_k: int) -> list[Candidate]:
    """The anchors ``none``, ``kd`` and the best relation preset (for ``setting``'s models),
    then the ``top_k`` best search compositions that differ from each other and from the anchors."""
    anchors = anchor_values(study)
    trial_of = {r.anchor: r.number for r in map(TrialRecord.of, ranked_trials(study)) if r.anchor is not None}
    relation = {name: value for name, value in anchors.items() if name not in BASELINE_ANCHORS}
    best_preset = max(relation, key=relation.get) if relation else None
    chosen = [Candidate(f"anchor {name}", setting.preset(name), trial_of.get(name), anchors.get(name))
              for name in (*BASELINE_ANCHORS, *([best_preset] if best_preset else []))]
    seen = {c.key for c in chosen}
    found = 0
    for c in compositions(study, include_anchors=False):  # best mean over seeds first, like the anchors'
        if found >= top_k:
            break
        t = c.trial
        candidate = Candidate(composition_label(t), c.record.config, t.number, c.mean)
        if candidate.key in seen:  # the same composition as an anchor or a better trial
            continue
        seen.add(candidate.key)
        chosen.append(candidate)
        found += 1
    if found < top_k:
        log.warning("study %s has %d distinct completed search compositions; confirming %d instead of top %d",
                    study.study_name, found, found, top_k)
    return chosen


def _runs(candidates: Sequence[Candidate], seeds: Sequence[int], epochs: int, hashed: str) -> list[Run]:
    """Each candidate with each seed; a run's key is the composition's and the setting's hash."""
    return [Run(f"{c.key}@{hashed}", c.config, seed, epochs, c.label) for c in candidates for seed in seeds]


def import_runs_jsonl(queue: RunQueue, path: Path, runs: Sequence[Run]) -> int:
    """Store the runs a confirm made before run queues wrote to ``runs.jsonl`` (one JSON
    record a line: key, setting, label, seed, epochs, val_accuracy, test_accuracy,
    wall_seconds) as completed runs of ``queue``, for the ``runs`` it does not have yet;
    the file stays. Return how many were read in."""
    if not path.exists():
        return 0
    found: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            found[Run(f"{record['key']}@{record['setting']}", {}, record["seed"], record["epochs"]).id] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("skipping a damaged line in %s", path)
    imported = 0
    for run in queue.missing(runs):
        if run.id in found:
            queue.record(run, found[run.id], imported_from=str(path))
            imported += 1
    if imported:
        log.info("confirm: read %d finished runs from %s", imported, path)
    return imported


def confirm_study(study: optuna.Study, *, top_k: int = 3, seeds: Sequence[int] = (0, 1, 2),
                  epochs: int | None = None, out_dir: str | os.PathLike | None = None,
                  device: str | None = None, progress: bool = False, storage: str | None = None,
                  log_to: str | None = None) -> dict[str, Any]:
    """Retrain the top-k compositions and the anchors with each seed; return the table.

    ``epochs`` defaults to twice the study's budget; ``device`` overrides the study's. Runs
    already in the queue (same setting, composition, seed and epochs) are reused; the queue
    is ``storage``, else ``$RELKD_CONFIRM_STORAGE``, else SQLite at ``out_dir/confirm.db``
    (:func:`queue_url`): processes given one queue storage share the runs. ``log_to``: a tracker
    each run is logged to (:mod:`relkd.engine.tracking`)."""

    single_objective(study, "confirm", "it retrains the leaders of one ranking; export a trial of the Pareto front "
                     "instead (relkd study export --trial N, or --max-params N, --out best.yaml writes its config "
                     "and its student section, best.student.yaml) and train that with relkd train")
    if top_k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {top_k}")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected each seed once, got {list(seeds)}")
    setting = study_setting(study)
    epochs = epochs or 2 * setting.budget.epochs
    setting = setting.with_budget(epochs=epochs)
    if device:
        setting = setting.replace(device=device)
    hashed = setting_hash(setting)
    candidates = _candidates(study, setting, top_k)
    if not any(c.trial is not None and not c.label.startswith("anchor") for c in candidates):
        log.warning("study %s has no completed search trial yet: confirming the anchors only", study.study_name)
    out = Path(out_dir) if out_dir is not None else run_dir(study.study_name) / "confirm"
    out.mkdir(parents=True, exist_ok=True)
    runs = _runs(candidates, seeds, epochs, hashed)
    queue = RunQueue.open(f"{study.study_name}.confirm", queue_url(storage, out), seed=setting.seed)
    import_runs_jsonl(queue, out / "runs.jsonl", runs)
    results = queue.run(runs, resolve_student(setting, progress=progress), eval_test=True, progress=progress,
                        train=run_trial, tracker=open_tracker(log_to, f"{study.study_name}.confirm"),
                        on_start=lambda run: log.info("confirm: %s, seed %d, %d epochs", run.label, run.seed, epochs))
    missing = [r for r in runs if r.id not in results]
    if missing:
        raise ValueError(f"confirm {study.study_name!r}: {len(missing)} runs did not finish (e.g. {missing[0].label}, "
                         f"seed {missing[0].seed}); run the command again to retry them")

    def values(candidate: Candidate, metric: str) -> list[float]:
        trials = [results[Run(f"{candidate.key}@{hashed}", {}, s, epochs).id] for s in seeds]
        return [t.value if metric == "val_accuracy" else getattr(TrialRecord.of(t), metric) for t in trials]

    kd = next((c for c in candidates if c.label == "anchor kd"), None)
    best_preset = next((c for c in candidates if c.label.startswith("anchor ")
                        and c.label.split(" ", 1)[1] not in BASELINE_ANCHORS), None)
    rows = []
    for candidate in candidates:
        test = values(candidate, "test_accuracy")
        val_mean, val_std = mean_sd(values(candidate, "val_accuracy"))
        test_mean, test_std = mean_sd(test)
        rows.append({
            "label": candidate.label, "trial": candidate.trial, "study_value": candidate.study_value,
            "seeds": len(test), "val_mean": val_mean, "val_std": val_std, "test_mean": test_mean,
            "test_std": test_std,
            "p_vs_kd": None if kd is None or candidate is kd else welch_p(test, values(kd, "test_accuracy")),
            "p_vs_best_preset": None if best_preset is None or candidate is best_preset
            else welch_p(test, values(best_preset, "test_accuracy")),
            "objective_config": candidate.config,
        })
    rows.sort(key=lambda r: -r["test_mean"])
    table = {"study": study.study_name, "epochs": epochs, "seeds": list(seeds),
             "best_preset": best_preset.label.split(" ", 1)[1] if best_preset else None, "rows": rows}
    write_text(out / "confirm.json", json.dumps(table, indent=2))
    write_text(out / "confirm.md", format_table(table))
    previous = study_document(study, CONFIRM_ATTR)
    kept = {k: v for k, v in previous.items() if k in BUDGET_RECORDS} if isinstance(previous, dict) else {}
    set_study_document(study, CONFIRM_ATTR, {k: v for k, v in table.items() if k != "rows"} |
                        {"rows": [{k: v for k, v in r.items() if k != "objective_config"} for r in rows]} | kept)
    return table


def format_table(table: dict[str, Any]) -> str:
    """The confirm table as Markdown."""
    preset_name = table.get("best_preset") or "best preset"
    lines = [
        f"Confirm: study {table['study']}, {table['epochs']} epochs, seeds {', '.join(map(str, table['seeds']))}, "
        f"test accuracy (mean ± std); Welch's t-test p-values.",
        "",
        markdown_table(["composition", "study val", "val", "test", "p vs kd", f"p vs {preset_name}"],
                       [[r["label"], percent(r["study_value"]), mean_pm(r["val_mean"], r["val_std"]),
                         mean_pm(r["test_mean"], r["test_std"]), p_value(r["p_vs_kd"]),
                         p_value(r["p_vs_best_preset"])] for r in table["rows"]]),
    ]
    return "\n".join(lines) + "\n"
