"""Ablate a study's winner: retrain one composition with each part removed or reset, paired by
seed, and measure what each part contributes.

A search says which composition won, not which of its parts made it win. :func:`ablate_study`
retrains the composition (default: the best searched one, by its mean over seeds) as it is
(``full``) and as each variant of :func:`ablation_variants`:

- each term removed (named after the term, else ``term0 (rbf/max/l1 at last_stage)``); removing
  the last term leaves CE (and KD) alone, which still trains;
- ``kd reset``: KD's weight and temperature set to the +kd presets' (:data:`relkd.presets.KD`);
- ``ce reset``: CE's weight set to the presets' (:data:`relkd.presets.KD_CE_WEIGHT` with KD, 1 without);
- ``recipe reset``: where the study tuned its learning rate (:mod:`relkd.tuning`), the full
  composition at the rate as written (``budget.lr``) instead of the tuned one.

A variant whose config equals ``full`` (after :func:`relkd.config.validate_config`) is skipped
and listed as such. Every variant is trained with the same seeds as ``full`` (default: the
study's seed + 0, 1, 2), at the study's setting and recipe, and evaluated on the **validation
split** (the ablation belongs to the search's analysis; the test split stays for the final
evaluation). A part's contribution is ``full - variant`` over the pairs of runs sharing a seed
(:func:`relkd.stats.paired_difference`: mean, 95% CI, paired t-test p).

Every run is a run of a :class:`relkd.study.queue.RunQueue`: the Optuna study
``<study>.ablate`` in ``runs/<study>/ablate/ablate.db`` (``out_dir``; ``storage`` puts it
elsewhere), and ``<study>.ablate.lr=<rate>`` beside it for the recipe reset (a queue trains
every run at its one setting), so an interrupted ablation resumes and several processes split
the runs. The table goes to ``ablation.json`` and ``ablation.md`` in that folder and to the
study attribute ``relkd.ablation`` (:data:`relkd.results.record.ABLATION_ATTR`), which the HTML
report shows::

    from relkd.study import load_relkd_study
    from relkd.study.ablate import ablate_study, format_ablation
    study, _ = load_relkd_study("fmnist_quick")
    print(format_ablation(ablate_study(study, seeds=3)))
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..adapt import resolve_student
from ..config import tap_label, validate_config
from ..engine import run_trial
from ..fields import ConfigError
from ..files import write_text
from ..presets import KD, KD_CE_WEIGHT
from ..pretrain import prepare_inits
from ..setting import Setting, comparable_setting, setting_record
from ..stats import Paired, paired_difference
from ..text import markdown_table, mean_pm, p_value, percent
from ..tuning import Tuning
from .export import composition_label, study_setting, study_tuning
from .queue import Run, RunQueue
from ..results.pareto import composition_summary, is_multi_objective, objectives_phrase
from ..results.record import ABLATION_ATTR, TrialRecord, set_study_document
from ..results.ranking import SIGNIFICANCE, compositions
from .storage import run_dir

__all__ = ["Variant", "ablation_variants", "ablate_study", "format_ablation", "contribution_sentence",
           "term_label", "DEFAULT_SEEDS", "MIN_SEEDS"]

log = logging.getLogger(__name__)

#: Seeds each variant trains with when none are given: the study's seed + 0, 1, 2.
DEFAULT_SEEDS = 3
#: A paired difference needs two pairs for its spread (its CI and p-value).
MIN_SEEDS = 2
_AUTO_NAME = re.compile(r"term\d+")


@dataclass(frozen=True)
class Variant:
    """One composition an ablation trains: ``name`` (``full``, a term's label, ``kd reset``,
    ``ce reset``, ``recipe reset``), ``kind`` (``full``, ``term``, ``kd``, ``ce``, ``recipe``),
    ``change`` (what differs from ``full``, in words), its objective ``config`` and, for the
    recipe reset, the learning rate ``lr`` it trains at instead of the study's."""

    name: str
    kind: str
    change: str
    config: dict[str, Any]
    lr: float | None = None

    @property
    def action(self) -> str:
        """What the variant does to the composition, for a sentence: ``dropping sp``."""
        if self.kind == "term":
            return f"dropping {self.name}"
        if self.kind == "kd":
            return f"resetting KD to the presets' (weight {KD['weight']:g}, temperature {KD['temperature']:g})"
        if self.kind == "ce":
            return f"resetting the CE weight to the presets' ({self.config['ce_weight']:g})"
        if self.kind == "recipe":
            return f"training at the untuned rate {self.lr:g} (budget.lr as written)"
        return "keeping the composition"


def term_label(term: dict[str, Any], index: int) -> str:
    """A term's name, or (unnamed, or named as an unnamed term is: ``term1``) ``term<index>``
    with its choices: ``term0 (rbf/max/l1 at last_stage)``, ``term1 (fitnet at stage2)``."""

    name = term.get("name")
    if name and not _AUTO_NAME.fullmatch(name):
        return name
    return f"term{index} ({composition_summary({'terms': [term]})} at {tap_label(term['tap'])})"


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    cfg = validate_config(config)
    cfg.pop("meta", None)
    return cfg


def _without(config: dict[str, Any], index: int) -> dict[str, Any]:
    """``config`` without term ``index``; a term named as an unnamed term at another position is
    (``term2``, now at 1) loses the name, which its position gives it anyway."""
    cfg = copy.deepcopy(config)
    del cfg["terms"][index]
    for i, term in enumerate(cfg["terms"]):
        if _AUTO_NAME.fullmatch(term.get("name") or "") and term["name"] != f"term{i}":
            del term["name"]
    return cfg


def _candidates(config: dict[str, Any], tuning: Tuning | None) -> list[tuple[Variant, str | None]]:
    """Every variant that applies to ``config``, with why it is not trained (``None``: it is)."""
    full = _canonical(config)
    kd = full["kd"]
    candidates = [Variant("full", "full", "the composition as it is", full)]
    for i, term in enumerate(full["terms"]):
        label = term_label(term, i)
        alone = "" if len(full["terms"]) > 1 else f" ({'CE and KD' if kd else 'CE'} only)"
        candidates.append(Variant(label, "term", f"{label} removed{alone}", _without(full, i)))
    if kd is not None:
        change = (f"KD weight {kd['weight']:.4g} -> {KD['weight']:g}, temperature {kd['temperature']:.4g} -> "
                  f"{KD['temperature']:g} (the +kd presets')")
        candidates.append(Variant("kd reset", "kd", change, {**full, "kd": dict(KD)}))
    ce = KD_CE_WEIGHT if kd is not None else 1.0
    candidates.append(Variant("ce reset", "ce", f"CE weight {full['ce_weight']:.4g} -> {ce:g} (the presets')",
                              {**full, "ce_weight": ce}))
    if tuning is not None:
        candidates.append(Variant("recipe reset", "recipe", f"lr {tuning.lr:g} (tuned) -> {tuning.baseline:g} "
                                                            f"(budget.lr as written)", full, lr=tuning.baseline))
    out: list[tuple[Variant, str | None]] = []
    for variant in candidates:
        if variant.kind == "full":
            out.append((variant, None))
        elif variant.kind == "recipe":
            same = tuning is not None and tuning.lr == tuning.baseline
            out.append((variant, "the tuned rate is the rate as written" if same else None))
        else:
            try:
                cfg = validate_config(variant.config)
            except ConfigError as err:  # e.g. the last term of a composition without CE and KD
                out.append((variant, f"not a valid objective: {err}"))
                continue
            out.append((dataclasses.replace(variant, config=cfg), "the same config as full" if cfg == full else None))
    return out


def ablation_variants(config: dict[str, Any], tuning: Tuning | None = None) -> list[Variant]:
    """The variants an ablation of ``config`` trains, ``full`` first: each term removed, then
    KD and CE reset to the presets' and, with a ``tuning`` (:func:`relkd.study.export.study_tuning`),
    the recipe reset; less those identical to ``full``."""
    return [v for v, why in _candidates(config, tuning) if why is None]


def _config_key(config: dict[str, Any]) -> str:
    """The composition without term names, for telling runs apart."""
    cfg = copy.deepcopy(config)
    for term in cfg["terms"]:
        term.pop("name", None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def _setting_hash(setting: Setting) -> str:
    """What a finished run depends on besides composition, seed and epochs."""
    record = comparable_setting(setting_record(setting))
    inits = prepare_inits(setting)  # the init files' content, wherever they lie
    if inits:
        record["inits"] = inits
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _chosen(study: optuna.Study, trial: int | None) -> FrozenTrial:
    """The trial to ablate: ``trial`` (a re-run stands for the trial it re-runs), else the best
    searched composition by its mean over seeds."""
    if trial is None:
        searched = [c for c in compositions(study) if not c.known]
        if not searched:
            raise ValueError(f"trial: study {study.study_name!r} has no completed searched composition yet; let the "
                             f"search finish, or ablate an anchor by number with the trial argument")
        return searched[0].trial
    matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
    if not matches:
        raise ValueError(f"trial: study {study.study_name!r} has no trial {trial}; expected one of its trials "
                         f"0..{len(study.trials) - 1}")
    chosen = matches[0]
    if chosen.state != TrialState.COMPLETE:
        state = {TrialState.FAIL: "failed", TrialState.PRUNED: "was pruned"}.get(chosen.state,
                                                                                 f"is {chosen.state.name.lower()}")
        raise ValueError(f"trial: trial {trial} {state}, not complete; ablate a completed trial (see `relkd study "
                         f"status`)")
    record = TrialRecord.of(chosen)
    if isinstance(record.rerun, dict) and record.config is None:
        return _chosen(study, int(record.rerun["of"]))
    if record.config is None:
        raise ValueError(f"trial: trial {trial} holds no composition (objective_config); ablate a trial of the search")
    return chosen


def _seed_list(seeds: int | Sequence[int], base: int) -> list[int]:
    """A count (the study's seed + 0, 1, ...) or the seeds themselves, at least :data:`MIN_SEEDS`."""
    listed = list(range(base, base + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(listed) < MIN_SEEDS:
        raise ValueError(f"seeds: expected at least {MIN_SEEDS} seeds (a paired difference needs two pairs for its "
                         f"confidence interval and p-value), got {len(listed)}; give a count like 3 or a list "
                         f"like 0,1,2")
    if len(set(listed)) != len(listed) or min(listed) < 0:
        raise ValueError(f"seeds: expected distinct seeds >= 0, got {listed}")
    return listed


def contribution_sentence(variant: Variant, paired: Paired) -> str:
    """One plain sentence on what a part contributes: ``dropping sp costs 1.23 points (95% CI
    0.40 .. 2.10, paired p = 0.02)``, or ``... changes nothing beyond seed noise (...)``."""
    points = 100 * paired.mean
    verb = "costs" if points > 0 else "gains"
    if paired.p is None:  # the same difference on every seed: no spread to test it against
        if paired.mean == 0:
            return f"{variant.action} changes nothing: the same accuracy with every seed"
        return f"{variant.action} {verb} {abs(points):.2f} points with every seed alike (no spread: no p-value)"
    ci = f"95% CI {100 * paired.low:.2f} .. {100 * paired.high:.2f}, paired p = {paired.p:.2g}"
    if paired.p < SIGNIFICANCE:
        return f"{variant.action} {verb} {abs(points):.2f} points ({ci})"
    return f"{variant.action} changes nothing beyond seed noise ({points:+.2f} points, {ci})"


def ablate_study(study: optuna.Study, *, trial: int | None = None, seeds: int | Sequence[int] = DEFAULT_SEEDS,
                 epochs: int | None = None, out_dir: str | os.PathLike | None = None, device: str | None = None,
                 progress: bool = False, storage: str | None = None) -> dict[str, Any]:
    """Retrain a composition of ``study`` with each part removed or reset; return the table.

    ``trial``: the trial whose composition is ablated (default: the best searched one);
    ``seeds``: a count (the study's seed + 0, 1, ...) or the seeds, at least two; ``epochs``
    defaults to the study's budget; ``device`` overrides the study's. Runs already in the queue
    (same setting, composition, seed and epochs) are reused; the queue is ``storage`` or, by
    default, SQLite at ``out_dir/ablate.db`` (``out_dir``: ``runs/<study>/ablate``)."""

    if is_multi_objective(study):
        raise ValueError(f"study_name: study {study.study_name!r} has {objectives_phrase(study)}; an ablation needs "
                         f"one (it compares validation accuracies of one composition's variants): ablate a study of "
                         f"one objective, or export a trial of the Pareto front (relkd study export --trial N "
                         f"--out best.yaml) and train its variants with relkd train")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs}")
    setting = study_setting(study)  # at the tuned rate where the study tuned one
    seed_list = _seed_list(seeds, setting.seed)
    chosen = _chosen(study, trial)
    epochs = epochs or setting.budget.epochs
    setting = setting.with_budget(epochs=epochs)
    if device:
        setting = setting.replace(device=device)
    tuning = study_tuning(study)
    candidates = _candidates(TrialRecord.of(chosen).config, tuning)
    variants = [v for v, why in candidates if why is None]
    out = Path(out_dir) if out_dir is not None else run_dir(study.study_name) / "ablate"
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'ablate.db').as_posix()}"
    label = composition_label(chosen)
    values: dict[int, list[float]] = {}  # by the variant's index
    for lr in dict.fromkeys(v.lr for v in variants):  # one queue per rate: a queue trains at one setting
        at = setting if lr is None else setting.with_budget(lr=lr)
        name = f"{study.study_name}.ablate" + ("" if lr is None else f".lr={lr:g}")
        key = _setting_hash(at)
        runs = {i: [Run(f"{_config_key(v.config)}@{key}", v.config, s, epochs, f"{label}: {v.name}")
                    for s in seed_list] for i, v in enumerate(variants) if v.lr == lr}
        queue = RunQueue.open(name, url, seed=setting.seed)
        done = queue.run([r for rs in runs.values() for r in rs], resolve_student(at, progress=progress),
                         eval_test=False, progress=progress, train=run_trial,
                         on_start=lambda run: log.info("ablate: %s, seed %d, %d epochs", run.label, run.seed, epochs))
        missing = [r for rs in runs.values() for r in rs if r.id not in done]
        if missing:
            raise ValueError(f"ablate {study.study_name!r}: {len(missing)} runs did not finish (e.g. "
                             f"{missing[0].label}, seed {missing[0].seed}); run the command again to retry them")
        values.update({v: [float(done[r.id].value) for r in rs] for v, rs in runs.items()})
    full = values[0]
    rows = []
    for i, variant in enumerate(variants):
        row: dict[str, Any] = {
            "variant": variant.name, "kind": variant.kind, "change": variant.change,
            "lr": setting.budget.lr if variant.lr is None else variant.lr, "values": values[i],
            "mean": statistics.fmean(values[i]), "std": statistics.stdev(values[i]),
            "contribution": None, "sentence": None, "objective_config": variant.config,
        }
        if variant.kind != "full":
            paired = paired_difference(full, values[i])
            row["contribution"] = dataclasses.asdict(paired)
            row["sentence"] = contribution_sentence(variant, paired)
        rows.append(row)
    table = {"study": study.study_name, "trial": chosen.number, "composition": label,
             "summary": composition_summary(TrialRecord.of(chosen).config), "epochs": epochs,
             "seeds": seed_list, "lr": setting.budget.lr, "metric": "validation accuracy", "rows": rows,
             "skipped": [{"variant": v.name, "change": v.change, "why": why} for v, why in candidates if why],
             "objective_config": rows[0]["objective_config"]}
    table["files"] = [str(out / "ablation.json"), str(out / "ablation.md")]
    write_text(out / "ablation.json", json.dumps(table, indent=2))
    write_text(out / "ablation.md", format_ablation(table))
    set_study_document(study, ABLATION_ATTR, {k: v for k, v in table.items() if k != "rows"} |
                        {"rows": [{k: v for k, v in r.items() if k != "objective_config"} for r in rows]})
    log.info("ablate: wrote %s", " and ".join(table["files"]))
    return table


def format_ablation(table: dict[str, Any]) -> str:
    """The ablation table as Markdown, then one sentence per part."""
    lines = [
        (f"Ablation: study {table['study']}, {table['composition']} ({table['summary']}), {table['epochs']} epoch(s), "
         f"seeds {', '.join(map(str, table['seeds']))}; validation accuracy % (mean ± std over seeds); contribution: "
         f"full - variant in points, paired by seed (mean, 95% CI, paired t-test p)."),
        "",
    ]
    rows = []
    for r in table["rows"]:
        c = r["contribution"] or {}
        ci = "" if c.get("low") is None else f"{percent(c['low'])} .. {percent(c['high'])}"
        rows.append([r["variant"], r["change"], mean_pm(r["mean"], r["std"]), percent(c.get("mean"), sign=True), ci,
                     p_value(c.get("p"))])
    lines.append(markdown_table(["variant", "change", "val %", "contribution", "95% CI", "p"], rows))
    if table.get("skipped"):
        lines += ["", "Not trained: " + "; ".join(f"{s['variant']} ({s['why']})" for s in table["skipped"]) + "."]
    sentences = [r["sentence"] for r in table["rows"] if r["sentence"]]
    if sentences:
        lines += ["", *(f"- {s[0].upper()}{s[1:]}." for s in sentences)]
    return "\n".join(lines) + "\n"
