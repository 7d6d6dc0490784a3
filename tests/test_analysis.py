"""Analysis of a study: design-choice groups, importance, plots, the HTML report."""
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import optuna
import pytest

from relkd.analysis.choices import NO_TERM, choice_group, choice_stats, completed, trial_choices
from relkd.analysis.importance import EVALUATORS, study_importance
from relkd.analysis.plots import cell_invalid, write_study_plots
from relkd.analysis.report import render_report, write_report
from relkd.cli import main
from relkd.fields import yaml_dump
from relkd.presets import preset
from relkd.study import confirm_study, run_study, validate_study
from tiny import TINY_SETTING

# the shipped plots the shared study can draw (pareto and recipe have nothing to draw for it);
# the tests check these and every other plot written, so a new plot needs no edit here
DRAWN = ("history", "intermediate", "marginals", "interaction_affinity_normalisation",
         "interaction_normalisation_loss", "weights", "importance")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """One synthetic study of 24 trials, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("analysis")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELKD_CACHE_DIR", str(folder / "cache"))
        mp.setenv("RELKD_RUNS_DIR", str(folder / "runs"))
        mp.delenv("OPTUNA_STORAGE", raising=False)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        doc = {**TINY_SETTING, "search": {"tap": ["last_stage", "pool"], "view": "avgpool"},
               "optuna": {"n_trials": 24, "sampler": {"name": "tpe", "n_startup_trials": 6}}}
        (folder / "study.yaml").write_text(yaml_dump(doc))
        result = run_study(validate_study(doc), progress=False)
        yield folder, result


@pytest.fixture
def env(study_dir, monkeypatch):
    folder, result = study_dir
    monkeypatch.setenv("RELKD_CACHE_DIR", str(folder / "cache"))
    monkeypatch.setenv("RELKD_RUNS_DIR", str(folder / "runs"))
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    return folder, result


@pytest.mark.parametrize("param, group", [
    ("n_terms", "terms"), ("term0.affinity", "affinity"), ("term1.normalisation", "normalisation"),
    ("term0.loss", "loss"), ("term0.tap", "tap"), ("term2.view", "view"), ("term0.weight", "weights"),
    ("ce_weight", "weights"), ("kd.weight", "weights"), ("kd", "KD"), ("kd.temperature", "KD"),
    ("term1.rbf.gamma", "component params"), ("term0.smooth_l1.beta", "component params"),
])
def test_every_search_parameter_has_its_design_choice(param, group):
    assert choice_group(param) == group


def test_trial_choices_count_each_term():
    rkd = trial_choices(preset("rkd+kd"))
    assert rkd["affinity"] == {"euclidean", "angle"} and rkd["loss"] == {"smooth_l1"}
    assert rkd["terms"] == {"2"} and rkd["kd"] == {"on"}
    assert trial_choices(preset("none"))["affinity"] == {NO_TERM}


@pytest.mark.slow
@pytest.mark.parametrize("evaluator", sorted(EVALUATORS))
def test_importances_sum_to_one_and_name_the_grouped_choices(env, evaluator):
    _, result = env
    imp = study_importance(result.study, evaluator)
    assert sum(imp["importances"].values()) == pytest.approx(1.0)
    assert sum(imp["groups"].values()) == pytest.approx(1.0)
    assert {"affinity", "normalisation", "loss", "tap", "weights", "KD"} <= set(imp["groups"])
    for param in imp["importances"]:
        assert choice_group(param) in imp["groups"]
    best_affinity = imp["best_per_choice"]["affinity"]
    stats = choice_stats(completed(result.study), "affinity")
    assert {k: v["count"] for k, v in best_affinity.items()} == {k: s.count for k, s in stats.items()}
    top_value = max(v["best"] for v in best_affinity.values())
    assert top_value == max(t.value for t in completed(result.study))


def test_importance_needs_completed_search_trials(tmp_path):
    study = optuna.create_study(direction="maximize")
    with pytest.raises(ValueError, match="importance needs at least 3"):
        study_importance(study)


@pytest.mark.slow
def test_cli_importance_json(env, capsys):
    assert main(["study", "importance", "--study-name", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sum(out["importances"].values()) == pytest.approx(1.0)
    assert out["evaluator"] == "ped_anova" and "affinity" in out["best_per_choice"]
    best = out["best_composition_per_choice"]["affinity"]
    assert best["value"] == next(iter(out["best_per_choice"]["affinity"]))
    from relkd.analysis.choices import trial_choices

    assert best["value"] in trial_choices(best["objective_config"])["affinity"]


def test_invalid_interaction_cells_follow_the_rules():
    assert cell_invalid("affinity", "normalisation", "angle", "center")     # (B,B,B) into a matrix-only step
    assert cell_invalid("affinity", "normalisation", "dot", "row_sum")      # signed into non-negative
    assert not cell_invalid("affinity", "normalisation", "dot", "row_l2")
    assert cell_invalid("normalisation", "loss", "mean", "kl")               # kl needs distributions
    assert not cell_invalid("normalisation", "loss", "row_softmax", "kl")


@pytest.mark.slow
def test_plots_are_valid_images(env, tmp_path):
    import matplotlib.image as mpimg

    _, result = env
    paths = write_study_plots(result.study, tmp_path)
    stems = {p.stem for p in paths}
    assert sorted(p.name for p in paths) == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))
    assert set(DRAWN) <= stems
    for stem in sorted(stems):
        png = tmp_path / f"{stem}.png"
        image = mpimg.imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 300, stem
        assert image[..., :3].std() > 0.02, f"{stem} is blank"
        root = ET.parse(tmp_path / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg") and (tmp_path / f"{stem}.svg").stat().st_size > 5000


@pytest.mark.slow
def test_report_is_self_contained_and_has_every_section(env, tmp_path):
    _, result = env
    confirm_study(result.study, top_k=1, seeds=[0, 1], epochs=1, out_dir=tmp_path / "confirm")
    text = render_report(result.study, result.storage, top_k=3)
    for needle in ("Anchors against the best search trials", "Top 3 compositions", "relkd_config: 1",
                   "What mattered", "p vs kd", "anchor <code>kd</code>"):
        assert needle in text, needle
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()
    sources = [part.split('"', 1)[0] for part in text.split('src="')[1:]]
    figures = [part.split('"', 1)[0] for part in text.split('<img alt="')[1:]]
    assert set(DRAWN) <= set(figures) and len(sources) == len(figures)
    assert all(s.startswith("data:image/png;base64,") for s in sources)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(html_path, png_path):
    """Load a page in headless Chromium; return its console messages and the screenshot."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,1600", f"--screenshot={png_path}", html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return console, png_path


@pytest.mark.slow
@pytest.mark.needs("chromium")
def test_report_loads_in_a_real_browser(env, tmp_path, capsys):
    import matplotlib.image as mpimg

    assert main(["study", "report", "--study-name", "tiny", "--out", str(tmp_path / "report.html")]) == 0
    console, shot = _chromium(tmp_path / "report.html", tmp_path / "shot.png")
    assert console == []
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.005  # text and tables, not a blank page
    # the check would see an error: a page with one is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>undefinedFunction();</script>x</body></html>")
    console, _ = _chromium(bad, tmp_path / "bad.png")
    assert any("undefinedFunction" in line for line in console)


@pytest.mark.slow
def test_cli_plot_and_report_write_files(env, tmp_path, capsys):
    assert main(["study", "plot", "--study-name", "tiny", "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "importance.svg").exists()
    path = write_report(env[1].study, env[1].storage, tmp_path / "r" / "report.html")
    assert path.stat().st_size > 50_000


@pytest.mark.slow
def test_every_registered_plot_is_written_and_shown_in_the_report(env, tmp_path):
    from relkd.analysis.plots import PLOTS, PlotNotApplicable, study_plots

    _, result = env
    written = {p.stem for p in write_study_plots(result.study, tmp_path)}
    # one student size: no trade-off to draw (results/test_pareto.py); no tuned rate (test_tuning.py)
    assert set(DRAWN) <= written and not written & {"pareto", "recipe"}
    page = render_report(result.study, "sqlite:///x.db")
    for entry in study_plots():
        if entry.name in written:
            assert f'alt="{entry.name}"' in page and entry.property("caption") in page
        else:  # left out only when it says it has nothing to draw for this study
            assert f'alt="{entry.name}"' not in page
            inputs = {"study": result.study, "evaluator": "ped_anova"}
            if "importance" in entry.property("inputs"):
                inputs["importance"] = study_importance(result.study, "ped_anova")
            with pytest.raises(PlotNotApplicable):
                entry.obj(*(inputs[i] for i in entry.property("inputs")), **entry.property("arguments"))
    assert written <= set(PLOTS.list())


@pytest.mark.slow
def test_a_plot_registered_once_reaches_the_files_and_the_report(env, tmp_path):
    """Registering one function is the whole edit: no list in the report to keep in step."""
    from relkd.analysis.plots import PLOTS, study_plot
    from relkd.figures import pyplot

    _, result = env

    def draw(study, evaluator):
        fig, ax = pyplot().subplots()
        ax.plot([t.number for t in study.trials], [t.value or 0 for t in study.trials])
        return fig

    study_plot("trial_values", "Every trial's value, in trial order.")(draw)
    try:
        assert {"trial_values.png", "trial_values.svg"} <= {p.name for p in write_study_plots(result.study, tmp_path)}
        page = render_report(result.study, "sqlite:///x.db")
        assert 'alt="trial_values"' in page and "Every trial&#x27;s value, in trial order." in page
        with pytest.raises(ValueError, match="plot 'trial_values' is already registered"):
            study_plot("trial_values", "again")(draw)
    finally:
        PLOTS._entries.pop("trial_values", None)  # noqa: SLF001 - leave the registry as it was
