import importlib
import pkgutil

import pytest

import relkd
from relkd.analysis.plots import PLOTS
from relkd.cli import LISTED, main
from relkd.data import DATASETS
from relkd.evaluation import DEGRADATIONS
from relkd.features import FEATURES
from relkd.models import MODELS
from relkd.presets import PRESETS
from relkd.registry import Component, Param, Registry, markdown_tables
from relkd.relation import AFFINITIES, LOSSES, NORMALISATIONS, VIEWS



def all_registries() -> list[Registry]:
    """Every registry any relkd module holds, found by importing them all: the contract tests below
    run over each entry, so a new entry (or a new registry) is tested without editing a test."""
    found = {}
    for info in pkgutil.walk_packages(relkd.__path__, "relkd."):
        for value in vars(importlib.import_module(info.name)).values():
            if isinstance(value, Registry):
                found[id(value)] = value
    return sorted(found.values(), key=lambda registry: registry.kind)


REGISTRIES = all_registries()
ENTRIES = [(registry, name) for registry in REGISTRIES for name in registry.list()]


def make_registry() -> Registry:
    reg = Registry("widget")

    @reg.register("scale", params=[Param("factor", 2.0, search=(0.1, 10.0), log=True, min=0.0, min_inclusive=False)],
                  symmetric=True)
    def scale(x, factor=2.0):
        """Multiply by a factor. y = factor * x."""
        return factor * x

    @reg.register(params=[Param("n", 1, int, min=0, max=3), Param("flag", False, bool),
                          Param("mode", "a", str, choices=("a", "b"))])
    def shift(x, n=1, flag=False, mode="a"):
        """Add n. y = x + n."""
        return x + n

    return reg


def test_register_create_list_info():
    reg = make_registry()
    assert reg.list() == ["scale", "shift"]
    assert reg.list("sc*") == ["scale"]
    assert reg.list("*i*") == ["shift"]
    assert reg.create("scale", factor=3.0)(2.0) == 6.0
    assert reg.create("scale")(2.0) == 4.0  # default
    assert reg.create("shift")(1) == 2  # name taken from the function
    info = reg.info("scale")
    assert info.description == "Multiply by a factor. y = factor * x."
    assert info.param("factor").search == (0.1, 10.0)
    assert info.properties["symmetric"] is True
    assert "scale" in reg and "nope" not in reg and len(reg) == 2
    assert reg.create("shift", n=2).to_config() == {"name": "shift", "n": 2, "flag": False, "mode": "a"}


def test_duplicate_registration_raises():
    reg = make_registry()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("scale")(lambda x: x)


def test_entry_needs_a_description():
    reg = Registry("widget")
    with pytest.raises(ValueError, match="description or a docstring"):
        reg.add("nodoc", lambda x: x)


def test_unknown_name_lists_valid_names_and_closest():
    with pytest.raises(ValueError) as err:
        AFFINITIES.create("cosin")
    text = str(err.value)
    assert "did you mean 'cosine'?" in text
    for name in AFFINITIES.list():
        assert name in text
    with pytest.raises(ValueError, match="Valid names"):
        LOSSES.get("zzzzzz")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"factor": -1.0}, r"factor.*> 0"),
        ({"factor": "big"}, r"factor.*a number"),
        ({"factor": float("nan")}, r"finite"),
        ({"factr": 1.0}, r"did you mean 'factor'"),
        ({"factor": True}, r"a number"),
    ],
)
def test_bad_params_name_the_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        make_registry().create("scale", **params)


def test_param_types_and_bounds():
    reg = make_registry()
    assert reg.create("shift", n=3.0).params["n"] == 3  # an integral float is accepted for an int
    for bad in ({"n": 4}, {"n": 1.5}, {"flag": 1}, {"mode": "c"}):
        with pytest.raises(ValueError):
            reg.create("shift", **bad)


def test_every_entry_documents_its_formula_and_params():
    for registry in (AFFINITIES, NORMALISATIONS, LOSSES, VIEWS):
        for entry in registry.entries():
            assert entry.description, entry.name
            assert "=" in entry.doc or "->" in entry.doc, f"{registry.kind} {entry.name}: docstring needs its formula"
            for p in entry.params:
                p.check(p.default)  # defaults satisfy their own bounds
                if p.search is not None:
                    p.check(p.type(p.search[0]))
                    p.check(p.type(p.search[1]))


@pytest.mark.parametrize("registry, name", ENTRIES, ids=[f"{r.kind}:{n}" for r, n in ENTRIES])
def test_every_entry_describes_itself_and_its_params_validate(registry, name):
    entry = registry.get(name)
    assert entry.name == name and entry.kind == registry.kind and entry.description.strip()
    assert "\n" not in entry.description and "|" not in name  # one table row in relkd list --markdown
    assert len({p.name for p in entry.params}) == len(entry.params)
    for p in entry.params:
        assert p.check(p.default) == p.default, f"{registry.kind} {name}: {p.name}'s default breaks its bounds"
        if p.search is not None:
            lo, hi = p.search
            assert lo < hi and (not p.log or lo > 0), f"{registry.kind} {name}: {p.name}'s search range"
            p.check(p.type(lo))
            p.check(p.type(hi))
    assert entry.resolve_params({}) == entry.defaults()
    assert entry.param_errors({"not_a_parameter": 1})
    if registry.bind:  # a bound component is rebuilt from the form configs store
        component = registry.create(name)
        assert isinstance(component, Component) and component.to_config() == {"name": name, **entry.defaults()}
        assert registry.from_spec(component.to_config()).params == component.params


@pytest.mark.parametrize("kind", list(LISTED))
def test_relkd_list_shows_every_entry(kind, capsys):
    registry = LISTED[kind]
    assert main(["list", kind]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{kind} ({len(registry)}):")
    for entry in registry.entries():
        assert f"  {entry.name:<14} {entry.description}" in out
    table = markdown_tables({kind: registry})
    assert all(f"| `{name}` |" in table for name in registry.list())


def test_the_contract_covers_every_registry():
    known = (AFFINITIES, NORMALISATIONS, LOSSES, VIEWS, FEATURES, PRESETS, MODELS, DATASETS, PLOTS, DEGRADATIONS,
             *LISTED.values())
    assert all(any(registry is found for found in REGISTRIES) for registry in known)
    assert len({registry.kind for registry in REGISTRIES}) == len(REGISTRIES)


def test_required_entries_exist():
    assert set(AFFINITIES.list()) >= {"dot", "cosine", "euclidean", "sq_euclidean", "rbf", "rbf_taylor",
                                      "pearson", "angle"}
    assert set(NORMALISATIONS.list()) >= {"none", "row_l2", "mean", "max", "row_softmax", "row_sum", "minmax",
                                          "zscore", "center", "frobenius"}
    assert set(LOSSES.list()) >= {"mse", "l1", "smooth_l1", "kl", "js", "cosine"}
    assert set(VIEWS.list()) >= {"flatten", "avgpool"}
