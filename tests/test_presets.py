"""Each preset checked against the direct from-the-formula implementations in reference.py."""
import pytest
import torch

import relkd
import reference as ref
from gradients import assert_total_and_student_gradients_match

B = 16


def make_taps(seed: int, student: bool, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    width = 24 if student else 40
    taps = {
        "logits": torch.randn(B, 10, generator=g, dtype=dtype) * 3,
        "pool": torch.randn(B, width, generator=g, dtype=dtype),
        "last_stage": torch.relu(torch.randn(B, width // 2, 4, 4, generator=g, dtype=dtype)),
    }
    if student:
        for t in taps.values():
            t.requires_grad_(True)
    return taps


REFERENCE_TERMS = {
    "sp": ("last_stage", ref.sp_loss, 3000.0),
    "rkd_d": ("pool", ref.rkd_distance_loss, 25.0),
    "rkd_a": ("pool", ref.rkd_angle_loss, 50.0),
    "pkt": ("pool", ref.pkt_loss, 30000.0),
    "cc": ("pool", ref.cc_loss, None),
}
PRESET_TERMS = {"sp": ["sp"], "rkd_d": ["rkd_d"], "rkd_a": ["rkd_a"], "rkd": ["rkd_d", "rkd_a"],
                "pkt": ["pkt"], "cc": ["cc"]}


def expected_total(name, s, t, y):
    with_kd = name.endswith("+kd") or name == "kd"
    base = name.removesuffix("+kd")
    ce = torch.nn.functional.cross_entropy(s["logits"], y)
    total = (0.1 if with_kd else 1.0) * ce
    if with_kd:
        total = total + 0.9 * ref.kd_loss(s["logits"], t["logits"], T=4.0)
    for term in PRESET_TERMS.get(base, []):
        tap, fn, weight = REFERENCE_TERMS[term]
        weight = weight if weight is not None else relkd.presets.CC_WEIGHT
        total = total + weight * fn(s[tap], t[tap])
    return total


def test_every_preset_is_listed_and_valid():
    names = relkd.list_presets()
    for base in ["sp", "rkd_d", "rkd_a", "rkd", "pkt", "cc"]:
        assert base in names and f"{base}+kd" in names
    assert "none" in names and "kd" in names
    for name in names:
        assert relkd.validate_config(relkd.preset(name)) == relkd.preset(name)


@pytest.mark.parametrize("name", sorted(n for n in relkd.list_presets()
                                         if relkd.presets.PRESETS.get(n).property("family") != "feature"))
@pytest.mark.parametrize("seed", [0, 1])
def test_preset_total_and_gradient_match_reference(name, seed):
    s, t, y = make_taps(seed, True), make_taps(seed + 100, False), torch.randint(10, (B,))
    parts = relkd.build_objective(name)(s, t, y)
    assert_total_and_student_gradients_match(parts["total"], expected_total(name, s, t, y), s)


@pytest.mark.parametrize("term", sorted(REFERENCE_TERMS))
def test_unweighted_term_matches_reference_in_float32(term):
    tap, fn, _ = REFERENCE_TERMS[term]
    s, t = make_taps(3, True, torch.float32), make_taps(4, False, torch.float32)
    parts = relkd.build_objective(term)(s, t, torch.randint(10, (B,)))
    torch.testing.assert_close(parts[term], fn(s[tap], t[tap]), rtol=1e-4, atol=1e-7)


def test_kd_matches_reference_and_weights():
    s, t, y = make_taps(5, True), make_taps(6, False), torch.randint(10, (B,))
    parts = relkd.build_objective("kd")(s, t, y)
    torch.testing.assert_close(parts["kd"], ref.kd_loss(s["logits"], t["logits"], T=4.0), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(parts["kd.weighted"], 0.9 * parts["kd"])
    torch.testing.assert_close(parts["ce.weighted"], 0.1 * parts["ce"])
    torch.testing.assert_close(parts["total"], parts["kd.weighted"] + parts["ce.weighted"])


def test_reference_values_are_not_trivially_zero():
    # The comparisons above would pass vacuously if both sides were ~0.
    s, t = make_taps(7, True), make_taps(8, False)
    for term, (tap, fn, _) in REFERENCE_TERMS.items():
        assert fn(s[tap], t[tap]).abs() > 1e-6, term


def test_paper_values_in_presets():
    sp = relkd.preset("sp")["terms"][0]
    assert (sp["tap"], sp["view"], sp["affinity"]["name"], sp["normalisation"]["name"], sp["loss"]["name"],
            sp["weight"]) == ("last_stage", "flatten", "dot", "row_l2", "mse", 3000.0)
    assert [t["weight"] for t in relkd.preset("rkd")["terms"]] == [25.0, 50.0]
    assert relkd.preset("pkt")["terms"][0]["weight"] == 30000.0
    cc = relkd.preset("cc")["terms"][0]["affinity"]
    assert cc == {"name": "rbf_taylor", "gamma": 0.4, "order": 2}
    kd = relkd.preset("kd")
    assert kd["ce_weight"] == 0.1 and kd["kd"] == {"weight": 0.9, "temperature": 4.0}
    assert relkd.preset("pkt+kd")["kd"] == kd["kd"]


def test_objective_reports_missing_tap():
    s = make_taps(0, True)
    t = make_taps(1, False)
    del t["pool"]
    with pytest.raises(ValueError, match=r"term 'rkd_d' needs tap 'pool' from the teacher.*teacher's taps are"):
        relkd.build_objective("rkd")(s, t, torch.randint(10, (B,)))


def test_taps_derived_from_terms():
    assert relkd.build_objective("rkd+kd").taps == ("logits", "pool")
    assert relkd.build_objective("sp").taps == ("logits", "last_stage")
    assert not relkd.build_objective("none").needs_teacher
    assert relkd.build_objective("none")({"logits": torch.randn(4, 3)}, None, torch.tensor([0, 1, 2, 0]))["total"] > 0
