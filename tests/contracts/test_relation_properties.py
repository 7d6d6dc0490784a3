"""Properties every affinity, normalisation, loss and valid combination must have."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relkd.relation import (
    AFFINITIES,
    LOSSES,
    NORMALISATIONS,
    RelationTerm,
    combination_problems,
    is_valid_combination,
)

VALID = [c for c in itertools.product(AFFINITIES.list(), NORMALISATIONS.list(), LOSSES.list())
         if is_valid_combination(*c)]
DEGENERATE = ["random", "identical", "zeros", "zero_row", "duplicates", "large", "small"]
FAST = settings(max_examples=25, deadline=None)


def features(kind: str, b: int, d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    if kind == "identical":
        x = x[:1].expand(b, d).clone()
    elif kind == "zeros":
        x = torch.zeros(b, d, dtype=torch.float64)
    elif kind == "zero_row":
        x[0] = 0
    elif kind == "duplicates":
        x[b // 2:] = x[: b - b // 2]
    elif kind == "large":
        x = x * 1e6
    elif kind == "small":
        x = x * 1e-6
    return x.to(dtype)


def permute(m: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    for dim in range(m.dim()):
        m = m.index_select(dim, perm)
    return m


def test_rules_accept_and_reject_what_they_should():
    assert len(VALID) > 300
    assert combination_problems("cosine01", "row_sum", "kl") == []  # PKT
    assert combination_problems("cosine", "row_sum", "mse")  # row_sum needs non-negative input
    assert combination_problems("euclidean", "none", "kl")  # kl needs distributions
    assert combination_problems("angle", "center", "mse")  # center is for matrices
    assert is_valid_combination({"name": "rbf_taylor", "order": 2}, "row_sum", "js")
    assert not is_valid_combination({"name": "rbf_taylor", "order": 3}, "row_sum", "js")
    for kind in (AFFINITIES, NORMALISATIONS, LOSSES):  # every entry is usable in some combination
        position = {AFFINITIES: 0, NORMALISATIONS: 1, LOSSES: 2}[kind]
        assert {c[position] for c in VALID} == set(kind.list())


def test_building_an_invalid_term_names_the_rule():
    with pytest.raises(ValueError, match=r"relation term 'bad': normalisation 'row_sum' needs non-negative"):
        RelationTerm("pool", "dot", "row_sum", "kl", name="bad")


@pytest.mark.parametrize("name", AFFINITIES.list())
@FAST
@given(b=st.integers(2, 9), d=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_affinity_is_permutation_equivariant(name, b, d, seed):
    x = features("random", b, d, seed, torch.float64)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    fn = AFFINITIES.create(name)
    out = fn(x)
    assert out.shape == (b,) * AFFINITIES.get(name).properties["order"]
    torch.testing.assert_close(fn(x[perm]), permute(out, perm), rtol=1e-9, atol=1e-9)
    if AFFINITIES.get(name).property("nonnegative"):
        assert (out >= 0).all()
    if AFFINITIES.get(name).properties["symmetric"]:
        torch.testing.assert_close(out, out.t(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NORMALISATIONS.list())
@FAST
@given(b=st.integers(2, 9), seed=st.integers(0, 10_000), cube=st.booleans())
def test_normalisation_is_permutation_equivariant(name, b, seed, cube):
    entry = NORMALISATIONS.get(name)
    if cube and (entry.property("matrix_only") or entry.property("requires_nonnegative")):
        cube = False
    x = features("random", b, 5, seed, torch.float64)
    m = AFFINITIES.create("angle" if cube else "cosine01")(x)
    if not cube and name != "row_sum":
        m = m - 0.3  # signed input, except where non-negative input is required
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed + 1))
    fn = NORMALISATIONS.create(name)
    out = fn(m)
    assert out.shape == m.shape and torch.isfinite(out).all()
    torch.testing.assert_close(fn(permute(m, perm)), permute(out, perm), rtol=1e-9, atol=1e-9)
    if entry.property("output") == "distribution":
        torch.testing.assert_close(out.sum(-1), torch.ones_like(out.sum(-1)))
    if entry.property("output") == "nonnegative":
        assert (out >= 0).all()


@pytest.mark.parametrize("name", LOSSES.list())
@FAST
@given(b=st.integers(2, 9), seed=st.integers(0, 10_000))
def test_loss_is_permutation_invariant_and_zero_on_identical(name, b, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.rand(b, b, generator=g, dtype=torch.float64), torch.rand(b, b, generator=g, dtype=torch.float64)
    if LOSSES.get(name).property("requires") == "distribution":
        s, t = s / s.sum(1, keepdim=True), t / t.sum(1, keepdim=True)
    perm = torch.randperm(b, generator=g)
    fn = LOSSES.create(name)
    value = fn(s, t)
    assert value.dim() == 0 and value >= -1e-12
    torch.testing.assert_close(fn(permute(s, perm), permute(t, perm)), value, rtol=1e-9, atol=1e-12)
    assert abs(float(fn(t, t))) < 1e-12
    if LOSSES.get(name).properties["symmetric"]:
        torch.testing.assert_close(fn(t, s), value, rtol=1e-9, atol=1e-12)


@FAST
@given(combo=st.sampled_from(VALID), b=st.integers(2, 8), ds=st.integers(1, 10), dt=st.integers(1, 16),
       seed=st.integers(0, 10_000))
def test_term_loss_is_permutation_invariant(combo, b, ds, dt, seed):
    term = RelationTerm("pool", *combo)
    s, t = features("random", b, ds, seed, torch.float64), features("random", b, dt, seed + 1, torch.float64)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(term(s[perm], t[perm]), term(s, t), rtol=1e-7, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("combo", VALID, ids="/".join)
def test_every_valid_combination_is_zero_on_identical_and_finite_on_degenerate_batches(combo):
    term = RelationTerm("pool", *combo)
    for i, kind in enumerate(DEGENERATE):
        b = 2 if i % 3 == 0 else 6
        x = features(kind, b, 7, i)
        assert abs(float(term(x, x.clone()))) < 1e-5, (kind, float(term(x, x)))
        s = x.clone().requires_grad_(True)
        t = features("random", b, 11, 100 + i)  # teacher wider than the student
        value = term(s, t)
        value.backward()
        assert torch.isfinite(value), kind
        assert torch.isfinite(s.grad).all(), kind


@pytest.mark.parametrize("kind", ["affinity", "normalisation", "loss"])
def test_components_run_in_bfloat16(kind):
    x = features("random", 8, 6, 0)
    for name in {"affinity": AFFINITIES, "normalisation": NORMALISATIONS, "loss": LOSSES}[kind].list():
        if kind == "affinity":
            out = AFFINITIES.create(name)(x.bfloat16())
            ref = AFFINITIES.create(name)(x.bfloat16().float())
        elif kind == "normalisation":
            m = AFFINITIES.create("cosine01")(x)
            out, ref = NORMALISATIONS.create(name)(m.bfloat16()), NORMALISATIONS.create(name)(m.bfloat16().float())
        else:
            m = NORMALISATIONS.create("row_softmax")(AFFINITIES.create("cosine")(x))
            m2 = NORMALISATIONS.create("row_softmax")(AFFINITIES.create("cosine")(x.flip(0) * 2))
            out, ref = LOSSES.create(name)(m.bfloat16(), m2.bfloat16()), LOSSES.create(name)(m.float(), m2.float())
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all(), name
        torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.05, msg=f"{kind} {name}")


@pytest.mark.parametrize("combo", [("dot", "row_l2", "mse"), ("cosine01", "row_sum", "kl"),
                                   ("angle", "none", "smooth_l1"), ("rbf", "row_softmax", "js")])
def test_term_computes_in_float32_for_bfloat16_features(combo):
    term = RelationTerm("pool", *combo)
    s, t = features("random", 8, 6, 1).bfloat16(), features("random", 8, 9, 2).bfloat16()
    value = term(s, t)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, term(s.float(), t.float()))


def test_views():
    fmap = torch.randn(4, 3, 5, 5)
    assert RelationTerm("x", "dot", view="flatten").view(fmap).shape == (4, 75)
    assert RelationTerm("x", "dot", view="avgpool").view(fmap).shape == (4, 3)
    torch.testing.assert_close(RelationTerm("x", "dot", view="auto").view(fmap), fmap.mean((2, 3)))
    torch.testing.assert_close(RelationTerm("x", "dot", view="maxpool").view(fmap), fmap.amax((2, 3)))
    vec = torch.randn(4, 3)
    for view in ("flatten", "avgpool", "auto", "maxpool"):
        assert torch.equal(RelationTerm("x", "dot", view=view).view(vec), vec)
    with pytest.raises(ValueError, match="at least \\(B, D\\)"):
        RelationTerm("x", "dot")(torch.randn(4), torch.randn(4))
