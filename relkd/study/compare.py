"""The method-comparison benchmark: for one teacher/student pair, the baseline student and
each method preset alone and with KD, with N seeds at a fixed budget, on the test split.

A compare file is a setting plus a ``compare`` section::

    compare:
      methods: [sp, rkd_d, rkd_a, pkt, cc]   # method presets (relation or feature); each alone and with KD
      with_kd: true
      seeds: 3                               # a count (0, 1, 2) or a list
      storage: null                          # default sqlite:///runs/<name>/optuna.db
      findings: null                         # quinn: say whether the run agrees with Quinn et al.'s findings

Every (method, seed) run is a run of a :class:`relkd.study.queue.RunQueue` (one trial of
the compare's Optuna study, named after the setting), so a compare resumes after an
interruption (finished runs are kept, failed ones are enqueued again) and several processes
(``--storage`` on a shared database) split the queued runs between them. Compare studies
written before run queues (trials with the parameters ``method`` and ``seed``) resume too.
The table gives per method the mean ± std test accuracy, the gain over the baseline
(``none``), the rank, and for each method the gain of ``method+kd`` over ``kd``; the Spearman
correlation between the standalone gains and the gains with KD says whether a method that
helps alone also helps on top of KD. With ``findings: quinn`` the table also says, for each of
Quinn, McGuinness & Mileo's (2021) four findings, whether this run agrees
(:func:`quinn_findings`; the criteria are fixed here, before any run).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from ..engine import run_trial
from ..fields import ConfigError, FieldChecker, read_yaml_file
from ..files import write_text
from ..presets import PRESETS, preset
from ..adapt import resolve_student
from ..registry import unknown_name_message
from ..setting import Setting, setting_or_errors
from ..text import markdown_table, mean_pm, percent
from ..tuning import resolve_recipe
from .export import recipe_status
from ..engine.tracking import open_tracker
from .queue import Run, RunQueue, completed_runs
from ..results.record import COMPARE_ATTR, RECIPE_ATTR, TrialRecord, set_study_document, study_document
from .storage import redact, resolve_storage, run_dir

__all__ = ["CompareSpec", "load_compare", "validate_compare", "run_compare", "compare_runs", "compare_table",
           "format_markdown", "quinn_findings"]

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("sp", "rkd", "pkt", "cc")
BASELINES = ("none", "kd")
_FIELDS = ("methods", "with_kd", "seeds", "storage", "findings")
FINDINGS = ("quinn",)


@dataclass(frozen=True)
class CompareSpec:
    setting: Setting
    methods: tuple[str, ...]
    with_kd: bool
    seeds: tuple[int, ...]
    storage: str | None = None
    findings: str | None = None

    @property
    def runs(self) -> tuple[str, ...]:
        """Every objective the compare trains: baselines, methods, methods with KD."""
        kd_variants = tuple(f"{m}+kd" for m in self.methods) if self.with_kd else ()
        return (*BASELINES, *self.methods, *kd_variants)


def validate_compare(document: Any, source: str | os.PathLike | None = None) -> CompareSpec:
    """Check a compare mapping; every error names its field."""
    c = FieldChecker()
    setting = setting_or_errors(document, c, source)
    section = document.get("compare") or {}
    methods, with_kd, seeds, storage, findings = DEFAULT_METHODS, True, (0, 1, 2), None, None
    if c.mapping(section, "compare", _FIELDS):
        methods = section.get("methods", list(DEFAULT_METHODS))
        if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
            c.error("compare.methods", f"expected a list of method presets such as [sp, rkd, pkt, cc, crd], got "
                                       f"{methods!r}")
            methods = []
        known = [n for n in PRESETS.list() if n not in BASELINES and not n.endswith("+kd")]
        for i, m in enumerate(methods):
            if m not in known:
                c.error(f"compare.methods[{i}]", unknown_name_message("method preset", m, known))
        with_kd = c.boolean(section.get("with_kd", True), "compare.with_kd")
        raw = section.get("seeds", 3)
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
            seeds = tuple(range(raw))
        elif isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in raw) and len(set(raw)) == len(raw):
            seeds = tuple(raw)
        else:
            c.error("compare.seeds", f"expected a count >= 1 or a list of distinct seeds >= 0, got {raw!r}")
        storage = section.get("storage")
        if storage is not None and not isinstance(storage, str):
            c.error("compare.storage", f"expected a storage URL, got {storage!r}")
        findings = section.get("findings")
        if findings is not None and findings not in FINDINGS:
            c.error("compare.findings", f"expected one of {', '.join(FINDINGS)} or null, got {findings!r}")
        elif findings == "quinn" and (not with_kd or "crd" not in methods or len(methods) < 3):
            c.error("compare.findings", "quinn's findings compare methods alone and with KD and ask whether CRD is "
                                        "best: set with_kd: true and list crd among at least 3 methods")
    if c.errors:
        raise ConfigError(c.errors, source)
    return CompareSpec(setting, tuple(dict.fromkeys(methods)), with_kd, seeds, storage, findings)


def load_compare(path: str | os.PathLike) -> CompareSpec:
    return validate_compare(read_yaml_file(path), path)


def _legacy_run(trial: optuna.trial.FrozenTrial) -> Run | None:
    """The run of a compare trial written before run queues: its parameters ``method`` and
    ``seed`` (an enqueued trial has them in its fixed parameters until it starts)."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    method, seed = params.get("method"), params.get("seed")
    if not isinstance(method, str) or method not in PRESETS.list() or not isinstance(seed, int):
        return None
    return Run(method, preset(method), seed, label=method, params={"method": method, "seed": seed})


def compare_runs(spec: CompareSpec) -> list[Run]:
    """Every (method, seed) run of the compare, in the order they are enqueued; its trial
    has the parameters ``method`` and ``seed``."""
    configs = {m: spec.setting.preset(m) for m in spec.runs}  # the layers of the setting's models
    return [Run(m, configs[m], seed, label=m, params={"method": m, "seed": seed}) for m in spec.runs
            for seed in spec.seeds]


def _open(spec: CompareSpec, storage: str | None) -> RunQueue:
    name = f"{spec.setting.name}"
    url = resolve_storage(storage, name, spec.storage)
    queue = RunQueue.open(name, url, seed=spec.setting.seed, heartbeat_interval=60, legacy=_legacy_run,
                          choices={"method": list(spec.runs), "seed": list(spec.seeds)})
    study = queue.study
    record = {"methods": list(spec.runs), "seeds": list(spec.seeds),
              "setting": {k: v for k, v in spec.setting.to_dict().items() if k not in ("compare", "device")}}
    stored = study_document(study, COMPARE_ATTR)
    if stored is None:
        set_study_document(study, COMPARE_ATTR, record)
    elif stored["setting"] != record["setting"]:
        raise ValueError(f"compare {name!r} in {redact(url)} was run with a different setting; use another name "
                         f"or storage")
    return queue


def run_compare(spec: CompareSpec, *, storage: str | None = None, out_dir: str | os.PathLike | None = None,
                progress: bool = False, log_to: str | None = None) -> dict[str, Any]:
    """Train every (run, seed) that the compare's study does not have yet, then write the
    table (``compare.csv``, ``compare.md``, ``compare.json``) and the bar chart
    (``compare.png``, ``compare.svg``) into ``out_dir`` (default ``runs/<name>/compare``).
    ``log_to``: a tracker each run is logged to (:mod:`relkd.engine.tracking`)."""
    tracker = open_tracker(log_to, spec.setting.name)
    # a missing init file or an unreachable adapt ratio stops here, not in every run; the runs start from
    # the resolved checkpoints (a {pretrain: ...} init, an adapted student)
    setting = resolve_student(spec.setting, progress=progress)
    queue = _open(spec, storage)
    study = queue.study
    recorded = study_document(study, RECIPE_ATTR)  # every process of the compare trains at one rate
    setting, tuning = resolve_recipe(setting, progress=progress, recorded=recorded)
    if tuning is not None and recorded is None:
        set_study_document(study, RECIPE_ATTR, tuning.record())
    runs = compare_runs(spec)
    waiting = queue.add(runs)
    if waiting > 0:
        log.info("compare %s: %d of %d runs to train", study.study_name, waiting, len(runs))
    # Takes queued runs one at a time, so that processes sharing the storage share the queue.
    queue.run(runs, setting, eval_test=True, progress=progress, catch=(Exception,), train=run_trial, tracker=tracker)
    missing = sorted((r.key, r.seed) for r in queue.missing(runs))
    if missing:
        raise ValueError(f"compare {study.study_name!r}: {len(missing)} runs did not finish (e.g. {missing[0]}); "
                         f"run the command again to retry them")
    table = compare_table(study, spec)
    out = Path(out_dir) if out_dir is not None else run_dir(study.study_name) / "compare"
    write_text(out / "compare.json", json.dumps(table, indent=2))
    write_text(out / "compare.md", format_markdown(table))
    fields = ["method", "seeds", "test_mean", "test_std", "val_mean", "gain", "rank", "kd_gain"]
    rows = io.StringIO(newline="")
    writer = csv.DictWriter(rows, fieldnames=fields)
    writer.writeheader()
    for row in table["rows"]:
        writer.writerow({k: row.get(k) for k in fields})
    write_text(out / "compare.csv", rows.getvalue())
    _bar_chart(table, out)
    table["files"] = [str(out / n) for n in ("compare.csv", "compare.md", "compare.json", "compare.png",
                                             "compare.svg")]
    return table


def compare_table(study: optuna.Study, spec: CompareSpec) -> dict[str, Any]:
    """Per run: seeds, test mean ± std, validation mean, gain over ``none``, rank; per
    method: gain of ``method+kd`` over ``kd``; Spearman of the two gains; with ``findings``, Quinn's."""
    test: dict[str, list[float]] = {m: [] for m in spec.runs}
    val: dict[str, list[float]] = {m: [] for m in spec.runs}
    done = completed_runs(study, _legacy_run)  # one trial per run: the first that completed
    found = sorted((done[r.id].number, r.key, done[r.id]) for r in compare_runs(spec) if r.id in done)
    for _, method, t in found:
        test[method].append(TrialRecord.of(t).test_accuracy)
        val[method].append(t.value)
    means = {m: statistics.fmean(v) for m, v in test.items() if v}
    baseline = means["none"]
    ranking = sorted(means, key=lambda m: -means[m])
    rows = []
    for m in spec.runs:
        row = {"method": m, "seeds": len(test[m]), "test_mean": means[m],
               "test_std": statistics.stdev(test[m]) if len(test[m]) > 1 else 0.0,
               "val_mean": statistics.fmean(val[m]), "gain": means[m] - baseline, "rank": ranking.index(m) + 1,
               "kd_gain": None}
        if spec.with_kd and m in spec.methods:
            row["kd_gain"] = means[f"{m}+kd"] - means["kd"]
        rows.append(row)
    spearman = None
    if spec.with_kd and len(spec.methods) >= 3:
        from scipy import stats

        alone = [means[m] - baseline for m in spec.methods]
        with_kd = [means[f"{m}+kd"] - means["kd"] for m in spec.methods]
        with warnings.catch_warnings():  # a constant side makes rho NaN: the table then says None
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            rho = stats.spearmanr(alone, with_kd).statistic
        spearman = None if rho is None or math.isnan(rho) else float(rho)
    table = {"compare": study.study_name, "seeds": list(spec.seeds), "budget_epochs": spec.setting.budget.epochs,
             "teacher": spec.setting.teacher.model, "student": spec.setting.student.model, "rows": rows,
             "spearman_gain_alone_vs_with_kd": spearman}
    if spec.findings == "quinn":
        table["findings"] = quinn_findings(table, spec.methods)
    if recipe_status(study) is not None:  # the runs trained at a tuned rate (relkd.tuning)
        table["recipe"] = recipe_status(study)
    return table


def quinn_findings(table: dict[str, Any], methods: tuple[str, ...]) -> list[dict[str, Any]]:
    """Whether the run agrees with each of Quinn, McGuinness & Mileo's (2021) findings, by
    criteria fixed before any run:

    (i) contradictions with the original papers: every paper reports that its method improves
        the student over training alone; a method whose mean test gain over ``none`` is <= 0
        contradicts it. Agrees when at least one method does.
    (ii) no general correlation between a method's gain alone and its gain with KD: agrees when
        the Spearman correlation of the two gains is not significant (p >= 0.05).
    (iii) older, simpler methods ahead of newer ones: agrees when the Spearman correlation
        between the publication year and the gain alone is negative.
    (iv) CRD best: agrees when CRD has the highest mean test accuracy of the methods alone.
    """
    from scipy import stats

    rows = {r["method"]: r for r in table["rows"]}
    alone = {m: rows[m]["gain"] for m in methods}
    with_kd = {m: rows[m]["kd_gain"] for m in methods}
    out = []
    losing = [m for m in methods if alone[m] <= 0]
    losing_kd = [m for m in methods if with_kd[m] is not None and with_kd[m] <= 0]
    out.append({"finding": "(i) results contradict the original papers", "agrees": bool(losing),
                "evidence": f"{len(losing)} of {len(methods)} methods do not beat the student trained alone "
                            f"({', '.join(losing) or 'none'}); with KD, {len(losing_kd)} do not beat kd "
                            f"({', '.join(losing_kd) or 'none'})"})
    years = {m: PRESETS.get(m).property("year") for m in methods}
    dated = [m for m in methods if years[m] is not None]
    with warnings.catch_warnings():  # a constant side makes rho NaN, which the evidence says
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        correlation = stats.spearmanr([alone[m] for m in methods], [with_kd[m] for m in methods])
        age = stats.spearmanr([years[m] for m in dated], [alone[m] for m in dated])
    rho, p = float(correlation.statistic), float(correlation.pvalue)
    out.append({"finding": "(ii) no general correlation between gains alone and with KD",
                "agrees": bool(math.isnan(p) or p >= 0.05),
                "evidence": f"Spearman rho {rho:.2f}, p {p:.2f} over {len(methods)} methods"})
    rho_age = float(age.statistic)
    out.append({"finding": "(iii) older, simpler methods ahead of newer ones",
                "agrees": bool(not math.isnan(rho_age) and rho_age < 0),
                "evidence": f"Spearman rho between publication year and gain alone {rho_age:.2f} "
                            f"(p {float(age.pvalue):.2f}; " + ", ".join(f"{m} {years[m]}" for m in dated) + ")"})
    ranked = sorted(methods, key=lambda m: -rows[m]["test_mean"])
    ranked_kd = sorted(methods, key=lambda m: -rows[f"{m}+kd"]["test_mean"])
    out.append({"finding": "(iv) CRD best", "agrees": ranked[0] == "crd",
                "evidence": f"CRD ranks {ranked.index('crd') + 1} of {len(methods)} alone (best: {ranked[0]}) and "
                            f"{ranked_kd.index('crd') + 1} with KD (best: {ranked_kd[0]}+kd)"})
    return out


def format_markdown(table: dict[str, Any]) -> str:
    lines = [table["recipe"]["line"], ""] if table.get("recipe") else []
    lines.append(markdown_table(
        ["method", "seeds", "test accuracy (%)", "gain over none", "rank", "gain of +kd over kd"],
        [[r["method"], r["seeds"], mean_pm(r["test_mean"], r["test_std"]), percent(r["gain"], sign=True), r["rank"],
          percent(r["kd_gain"], sign=True)] for r in table["rows"]]))
    rho = table["spearman_gain_alone_vs_with_kd"]
    lines.append("")
    lines.append("Spearman correlation between each method's gain alone (over none) and its gain with KD "
                 f"(over kd): {'n/a' if rho is None else f'{rho:.2f}'}")
    if table.get("findings"):
        lines += ["", markdown_table(["Quinn et al.'s finding", "this run", "evidence"],
                                     [[f["finding"], "agrees" if f["agrees"] else "disagrees", f["evidence"]]
                                      for f in table["findings"]])]
    return "\n".join(lines) + "\n"


def _bar_chart(table: dict[str, Any], out: Path) -> None:
    from ..figures import pyplot, save_figure

    plt = pyplot()
    rows = {r["method"]: r for r in table["rows"]}
    methods = [m for m in rows if m not in BASELINES and not m.endswith("+kd")]
    fig, ax = plt.subplots(figsize=(1.4 * len(methods) + 3, 4.5))
    width = 0.38
    xs = range(len(methods))
    alone = [rows[m] for m in methods]
    ax.bar([x - width / 2 for x in xs], [100 * r["test_mean"] for r in alone], width,
           yerr=[100 * r["test_std"] for r in alone], capsize=3, label="alone", color="tab:blue")
    if all(f"{m}+kd" in rows for m in methods):
        with_kd = [rows[f"{m}+kd"] for m in methods]
        ax.bar([x + width / 2 for x in xs], [100 * r["test_mean"] for r in with_kd], width,
               yerr=[100 * r["test_std"] for r in with_kd], capsize=3, label="with KD", color="tab:orange")
    for name, style in (("none", "--"), ("kd", ":")):
        ax.axhline(100 * rows[name]["test_mean"], color="grey", linestyle=style, linewidth=1,
                   label=f"{name} {100 * rows[name]['test_mean']:.2f}%")
    values = [100 * r["test_mean"] for r in table["rows"]]
    ax.set_ylim(min(values) - 3, max(values) + 2)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(methods)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{table['compare']}: {table['teacher']} → {table['student']}, {table['budget_epochs']} epochs, "
                 f"{len(table['seeds'])} seeds (mean ± std)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, out, "compare")
