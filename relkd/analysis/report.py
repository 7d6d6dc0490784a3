"""One self-contained HTML page per study: summary, anchors against the best trials, the
top compositions with their YAML, importance, every plot, and the confirm and ablation tables
when they exist; a multi-objective study (accuracy against student size) gets its Pareto front, as a
plot and a table, in place of the sections that rank by one value. Images are embedded as
base64 PNG and the page has no scripts and no external references, so it opens anywhere
without network access.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import tempfile
from pathlib import Path
from typing import Any

import optuna

from ..fields import yaml_dump
from ..files import write_text
from ..text import percent
from ..study import study_status, tool_storage
from ..results.ranking import compositions, search_verdict, verdict_line
from ..study.confirm import BUDGET_RECORDS
from ..study.confirm_budgets import format_budgets
from ..results.record import ABLATION_ATTR, CONFIRM_ATTR, SETTING_ATTR, study_document, versions
from ..study.artifacts import upload_study_file
from .importance import study_importance
from ..results.pareto import FRONT_COLUMNS, front_cells, is_multi_objective, objective_names, pareto_front
from .plots import study_plots, write_study_plots

__all__ = ["write_report", "render_report"]

log = logging.getLogger(__name__)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; } .muted { color: #777; }
"""

def _table(header: list[str] | None, rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    if header is None:
        head_html = ""
    else:
        head_html = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join(
        "<tr>" + "".join(f"<td class=\"num\">{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>" for r in rows)
    return f"<table>{head_html}<tbody>{body}</tbody></table>"


def _summary(study: optuna.Study, url: str) -> str:
    setting = study_document(study, SETTING_ATTR) or {}
    status = study_status(study)
    budget = setting.get("budget", {})
    rows = [
        ["storage", html.escape(tool_storage(url))],
        ["dataset", html.escape(str(setting.get("data", {}).get("dataset")))],
        ["teacher → student", html.escape(f"{setting.get('teacher', {}).get('model')} → "
                                          f"{setting.get('student', {}).get('model')}")],
        ["budget", html.escape(f"{budget.get('epochs')} epochs, {budget.get('optimizer')}, lr {budget.get('lr')}, "
                               f"{budget.get('schedule')}")],
        ["seed", html.escape(str(setting.get("seed")))],
        ["trials", html.escape(", ".join(f"{k} {v}" for k, v in status["counts"].items() if v))],
    ]
    if status["recipe"]:  # the study tuned its learning rate first (relkd.tuning): the recipe and the headroom
        rows.append(["tuned recipe", html.escape(status["recipe"]["line"])])
    if "objectives" in status:
        aims = ["maximised" if i == 0 else "minimised" for i in range(len(status["objectives"]))]
        rows.append(["objectives", html.escape(", ".join(f"{n} ({a})" for n, a in zip(status["objectives"], aims)))])
    return _table(None, rows)


def _anchors_vs_best(study: optuna.Study) -> str:
    ranked = compositions(study)
    kd = next((c.mean for c in ranked if c.anchor == "kd"), None)
    rows = [c for c in ranked if c.known] + [c for c in ranked if not c.known][:3]
    rows.sort(key=lambda c: (-c.mean, c.trial.number))
    body = [[f"anchor <code>{html.escape(c.anchor)}</code>" if c.anchor else
             f"tuned <code>{html.escape(c.tuned)}</code> (trial {c.trial.number})" if c.tuned else
             f"search trial {c.trial.number}",
             c.spread(), "" if kd is None else f"{100 * (c.mean - kd):+.2f}"] for c in rows]
    verdict = f"<p><strong>Verdict:</strong> {html.escape(verdict_line(search_verdict(study)))}</p>"
    return verdict + _table(["composition", "validation accuracy (mean ± std over seeds)", "vs kd (points)"], body,
                            numeric={1, 2})


def _top_k(study: optuna.Study, k: int) -> str:
    parts = []
    for rank, c in enumerate(compositions(study)[:k], start=1):
        parts.append(f"<h3>{rank}. {html.escape(c.label)}: {c.spread()}</h3>"
                     f"<pre>{html.escape(yaml_dump(c.record.config))}</pre>")
    return "".join(parts) or "<p class=\"muted\">No completed trial yet.</p>"


def _importance(study: optuna.Study, evaluator: str) -> str:
    try:
        result = study_importance(study, evaluator)
    except ValueError as err:
        return f"<p class=\"muted\">{html.escape(str(err))}</p>"
    rows = [[html.escape(g), f"{v:.3f}"] for g, v in sorted(result["groups"].items(), key=lambda kv: -kv[1])]
    best = []
    for choice, values in result["best_per_choice"].items():
        if values:
            name, stats = next(iter(values.items()))
            best.append([html.escape(choice), f"<code>{html.escape(name)}</code>", percent(stats["best"], unit="%"),
                         str(stats["count"])])
    return (f"<p>{html.escape(evaluator)} over {result['trials_used']} searched trials, "
            f"{result['pruned_used']} of them pruned and counted at the rung they reached "
            f"(score: {html.escape(result['score'])})."
            f"</p>{_table(['design choice', 'importance'], rows, numeric={1})}"
            f"<h3>Best value of each choice</h3>"
            f"{_table(['choice', 'best value', 'best accuracy', 'trials using it'], best, numeric={2, 3})}")


def _not_yet(study: optuna.Study, noun: str, command: str, what: str) -> str:
    """The paragraph in place of a table a command has not written yet: the command, and what it does."""
    return (f"<p class=\"muted\">No {noun} yet: <code>relkd study {command} --study-name "
            f"{html.escape(study.study_name)}</code> {what}.</p>")


def _confirm(study: optuna.Study) -> str:
    confirm = study_document(study, CONFIRM_ATTR)
    if not confirm:
        return _not_yet(study, "confirm run", "confirm", "retrains the leaders with several seeds on the test split")

    def pm(mean: Any, std: Any) -> str:
        return "" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}"

    def p(value: Any) -> str:
        return "" if value is None else f"{value:.3g}"

    rows = [[html.escape(r["label"]), pm(r["val_mean"], r["val_std"]), pm(r["test_mean"], r["test_std"]),
             p(r["p_vs_kd"]), p(r["p_vs_best_preset"])] for r in confirm["rows"]]
    budgets = "".join(f"<pre>{html.escape(format_budgets(confirm[key]))}</pre>" for key in BUDGET_RECORDS
                      if isinstance(confirm.get(key), dict))  # relkd study confirm --epochs 3,9,27 [--full-train]
    return (f"<p>{confirm['epochs']} epochs, seeds {', '.join(map(str, confirm['seeds']))}; test accuracy is the "
            f"final evaluation; Welch's t-test p-values.</p>"
            + _table(["composition", "val %", "test %", "p vs kd", f"p vs {confirm.get('best_preset') or 'preset'}"],
                     rows, numeric={1, 2, 3, 4}) + budgets)


def _ablation(study: optuna.Study) -> str:
    """The table ``relkd study ablate`` stored (:mod:`relkd.study.ablate`); the report trains nothing."""
    table = study_document(study, ABLATION_ATTR)
    if not table:
        return _not_yet(study, "ablation", "ablate",
                        "retrains the best searched composition with each part removed or reset, paired by seed")
    rows = []
    for r in table["rows"]:
        c = r.get("contribution") or {}
        rows.append([html.escape(r["variant"]), html.escape(r["change"]),
                     f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}", "" if not c else f"{100 * c['mean']:+.2f}",
                     "" if c.get("low") is None else f"{100 * c['low']:.2f} .. {100 * c['high']:.2f}",
                     "" if c.get("p") is None else f"{c['p']:.3g}"])
    sentences = "".join(f"<li>{html.escape(r['sentence'])}</li>" for r in table["rows"] if r.get("sentence"))
    skipped = "; ".join(f"{s['variant']} ({s['why']})" for s in table.get("skipped") or [])
    return (f"<p>{html.escape(table['composition'])} (<code>{html.escape(table['summary'])}</code>), "
            f"{table['epochs']} epochs, seeds {', '.join(map(str, table['seeds']))}: validation accuracy, each variant "
            f"with the same seeds as the full composition; a part's contribution is full − variant in points, "
            f"paired by seed (mean, 95% CI, paired t-test p).</p>"
            + _table(["variant", "change", "val %", "contribution", "95% CI", "p"], rows, numeric={2, 3, 4, 5})
            + (f"<ul>{sentences}</ul>" if sentences else "")
            + (f"<p class=\"muted\">Not trained: {html.escape(skipped)}.</p>" if skipped else ""))


def _figures(study: optuna.Study, evaluator: str) -> dict[str, str]:
    """Every plot written for the study as an HTML figure, by name, in the report's order."""
    with tempfile.TemporaryDirectory() as folder:
        written = {p.stem for p in write_study_plots(study, folder, evaluator=evaluator)}
        parts = {}
        for entry in study_plots():
            stem, caption = entry.name, entry.property("caption")
            if stem not in written:
                continue
            data = base64.b64encode((Path(folder) / f"{stem}.png").read_bytes()).decode("ascii")
            parts[stem] = (f"<figure><img alt=\"{html.escape(stem)}\" src=\"data:image/png;base64,{data}\">"
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return parts


def _plots(figures: dict[str, str]) -> str:
    return "".join(figures.values()) or "<p class=\"muted\">No plots: no completed trial yet.</p>"


def _pareto(study: optuna.Study, figure: str) -> str:
    rows = pareto_front(study)
    if not rows:
        return figure + "<p class=\"muted\">No completed trial records its student's size yet.</p>"
    cells = [[html.escape(c) for c in front_cells(r)] for r in rows]
    names = objective_names(study)
    return (figure + f"<p>The {len(rows)} trials no other trial beats on both {html.escape(names[0])} and "
            f"{html.escape(', '.join(names[1:]))}, smallest student first (ratio: what the student was pruned to). "
            f"Export one with <code>relkd study export --study-name {html.escape(study.study_name)} --trial N "
            f"--out best.yaml</code>, or the most accurate within a size with <code>--max-params N</code>.</p>"
            + _table(list(FRONT_COLUMNS), cells, numeric={0, 1, 2, 3, 4}))


def render_report(study: optuna.Study, url: str, *, top_k: int = 5, evaluator: str = "ped_anova") -> str:
    """The report as one HTML string."""
    title = f"relkd study {study.study_name}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figures = _figures(study, evaluator)
    if is_multi_objective(study):
        names = ", ".join(objective_names(study))
        skipped = (f"<p class=\"muted\">Not shown for a study with several objectives ({html.escape(names)}): the "
                   f"anchors against the best, the top compositions, importance and confirmation, which rank "
                   f"trials by one value.</p>")
        sections = [
            ("Summary", _summary(study, url)),
            ("Pareto front", _pareto(study, figures.pop("pareto", "")) + skipped),
        ] + ([("Plots", _plots(figures))] if figures else [])
    else:
        sections = [
            ("Summary", _summary(study, url)),
            ("Anchors against the best search trials", _anchors_vs_best(study)),
            (f"Top {top_k} compositions", _top_k(study, top_k)),
            ("What mattered", _importance(study, evaluator)),
            ("Confirmation on the test split", _confirm(study)),
            ("Ablation: what each part contributes", _ablation(study)),
            ("Plots", _plots(figures)),
        ]
    body = "".join(f"<h2>{html.escape(name)}</h2>{content}" for name, content in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class=\"muted\">Generated {stamp} by relkd {versions()['relkd']}. Search trials see validation "
            f"accuracy only.</p>{body}</body></html>")


def write_report(study: optuna.Study, url: str, out: str | Path, *, top_k: int = 5,
                 evaluator: str = "ped_anova") -> Path:
    """Write the report to ``out`` (an HTML file) and upload it to the study's artifact store
    under its file name (:mod:`relkd.study.artifacts`); returns the path."""
    path = write_text(out, render_report(study, url, top_k=top_k, evaluator=evaluator))
    log.info("wrote report %s", path)
    upload_study_file(study, path)
    return path
