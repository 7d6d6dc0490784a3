"""Published methods as objective configs, faithful to the papers.

``preset(name)`` returns a fresh canonical config dict; ``list_presets()`` lists them.
Each entry's ``family`` property says which terms it has (``relation``, ``feature``; none for
``none`` and ``kd``) and ``year`` when its method was published. Every relation and feature
preset also exists with KD added (``sp+kd``, ``rkd+kd``, ...): CE weight
0.1, KD weight 0.9 at T = 4 (the ``kd`` preset's recipe, RepDistiller's KD command) plus
the terms; ``crd+kd`` alone is the published CRD+KD command (CE 1, KD 1 at T = 4, CRD 0.8).
The multi-layer presets read the layers RepDistiller reads on the models they are built for
(``stages``; see "Layers" below).
Each preset's values are checked against direct implementations in ``tests/reference.py``
and ``tests/reference_features.py``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from .registry import Registry

log = logging.getLogger(__name__)

PRESETS = Registry("preset", bind=False)

KD = {"weight": 0.9, "temperature": 4.0}
KD_CE_WEIGHT = 0.1

# CC's loss is a mean of squared kernel differences; its published weight (0.02, CRD's
# benchmark) belongs to a differently scaled variant. relkd's default puts the weighted CC
# term on the scale of SP's weighted term for the same features (measured with
# benchmarks/preset_scale.py on random student/teacher features).
CC_WEIGHT = 400.0

#: the body stages a preset built without models reads (three groups, as on the CNNs and CIFAR networks)
THREE_STAGES = ("stage1", "stage2", "last_stage")
#: (the student's body stages, the teacher's): see "Layers" below
Stages = tuple[Sequence[str], Sequence[str]]


def _config(terms: list[dict[str, Any]], ce_weight: float = 1.0, kd: dict[str, float] | None = None) -> dict:
    return {"relkd_config": 1, "ce_weight": ce_weight, "kd": dict(kd) if kd else None, "terms": terms}


def _sp() -> list[dict[str, Any]]:
    return [{
        "name": "sp", "tap": "last_stage", "view": "flatten",
        "affinity": {"name": "dot"}, "normalisation": {"name": "row_l2"}, "loss": {"name": "mse"},
        "weight": 3000.0,
    }]


def _rkd_d() -> list[dict[str, Any]]:
    return [{
        "name": "rkd_d", "tap": "pool", "view": "flatten",
        "affinity": {"name": "euclidean"}, "normalisation": {"name": "mean"},
        "loss": {"name": "smooth_l1", "beta": 1.0}, "weight": 25.0,
    }]


def _rkd_a() -> list[dict[str, Any]]:
    return [{
        "name": "rkd_a", "tap": "pool", "view": "flatten",
        "affinity": {"name": "angle"}, "normalisation": {"name": "none"},
        "loss": {"name": "smooth_l1", "beta": 1.0}, "weight": 50.0,
    }]


def _pkt() -> list[dict[str, Any]]:
    return [{
        "name": "pkt", "tap": "pool", "view": "flatten",
        "affinity": {"name": "cosine01"}, "normalisation": {"name": "row_sum"},
        "loss": {"name": "kl", "eps": 1e-7}, "weight": 30000.0,
    }]


def _cc() -> list[dict[str, Any]]:
    return [{
        "name": "cc", "tap": "pool", "view": "flatten",
        "affinity": {"name": "rbf_taylor", "gamma": 0.4, "order": 2}, "normalisation": {"name": "none"},
        "loss": {"name": "mse"}, "weight": CC_WEIGHT,
    }]


@PRESETS.register("none", relation=False)
def none(stages: Stages = (THREE_STAGES, THREE_STAGES)) -> dict:
    """Cross-entropy only (the student trained alone)."""
    return _config([])


@PRESETS.register("kd", relation=False)
def kd(stages: Stages = (THREE_STAGES, THREE_STAGES)) -> dict:
    """Hinton KD: 0.1 CE + 0.9 T^2 KL(softmax(t/T) || softmax(s/T)), T = 4."""
    return _config([], KD_CE_WEIGHT, KD)


def _relation_preset(name: str, terms: Callable[..., list[dict[str, Any]]], doc: str, family: str = "relation",
                     year: int | None = None, kd_recipe: tuple[float, dict[str, float]] = (KD_CE_WEIGHT, KD),
                     layered: bool = False) -> None:
    """Register ``name`` and ``name+kd``; ``terms(stages)`` when ``layered`` (the layers it reads
    depend on the models' stages), else ``terms()``; ``kd_recipe``: +kd's CE weight and KD."""
    def plain(stages: Stages = (THREE_STAGES, THREE_STAGES)) -> dict:
        return _config(terms(stages) if layered else terms())

    def with_kd(stages: Stages = (THREE_STAGES, THREE_STAGES)) -> dict:
        return _config(terms(stages) if layered else terms(), kd_recipe[0], kd_recipe[1])

    ce, kd_spec = kd_recipe
    plain.__doc__ = doc
    with_kd.__doc__ = (f"{doc.splitlines()[0].rstrip('.')} plus KD (CE {ce:g}, KD {kd_spec['weight']:g}, "
                       f"T = {kd_spec['temperature']:g}).")
    PRESETS.add(name, plain, relation=family == "relation", family=family, year=year, layered=layered)
    PRESETS.add(f"{name}+kd", with_kd, relation=family == "relation", family=family, base=name, year=year,
                layered=layered)


_relation_preset("sp", _sp, """Similarity-preserving KD (Tung & Mori 2019), weight 3000.
    Tap last_stage, flattened; G = F F^T, rows L2-normalised; mean squared difference over B^2 entries.""",
                 year=2019)
_relation_preset("rkd_d", _rkd_d, """RKD distance (Park et al. 2019), weight 25.
    Tap pool; pairwise distances / mean positive distance; smooth L1 (beta 1) over B^2 entries.""", year=2019)
_relation_preset("rkd_a", _rkd_a, """RKD angle (Park et al. 2019), weight 50.
    Tap pool; triplet angle cosines <e_ij, e_kj>; smooth L1 (beta 1) over B^3 values.""", year=2019)
_relation_preset("rkd", lambda: _rkd_d() + _rkd_a(), """RKD distance (weight 25) plus angle (weight 50).
    Park et al. 2019: both RKD-D and RKD-A terms at tap pool.""", year=2019)
_relation_preset("pkt", _pkt, """Probabilistic knowledge transfer (Passalis & Tefas 2018), weight 30000.
    Tap pool; (cos + 1)/2, rows sum to one; mean of t log((t + 1e-7)/(s + 1e-7)) over B^2 entries.""", year=2018)
_relation_preset("cc", _cc, f"""Correlation congruence (Peng et al. 2019), weight {CC_WEIGHT:g}.
    Tap pool, rows L2-normalised; 2nd-order Taylor Gaussian kernel (gamma 0.4); mean squared difference.""",
                 year=2019)


# Feature-level methods (relkd.features). Weights: RepDistiller's benchmark commands
# (scripts/run_cifar_distill.sh of Tian et al.'s public code, the CRD paper's Table 1 setup,
# which Quinn et al. follow): FitNet 100, AT 1000, NST 50, VID 1, CRD 0.8; alone, CE keeps
# weight 1 (RepDistiller's -r 1 -a 0). SRM: its authors' code (viebboy/SRM) weighs the pixel
# and image losses 1 each, at three stages on CIFAR-100.
#
# Layers: RepDistiller's (train_student.py, helper/loops.py). Its models return the features
# [f0 (the stem), f1 .. fK (each group of blocks' output), pool]; AT, NST and VID read
# feat[1:-1], every group's output without the stem (the papers' "end of each group of
# residual blocks"), paired index by index as Python's zip pairs them (the first min(K_s, K_t)
# groups when the depths differ); FitNets reads feat[2] (--hint_layer 2: the second group, the
# middle one of the CIFAR networks' three); CRD reads pool. relkd's name for a model's groups
# is its body stages (relkd.models.body_stages: stage1, stage2, last_stage on the CNNs and
# CIFAR networks; stage2 .. stage4, last_stage on a torchvision ResNet, whose stage1 is the
# stem). A preset built without models (preset(name)) reads three groups; built for a
# student and a teacher (preset(name, stages=...), Setting.preset, relkd show-config
# --setting), it reads theirs.


def _feature(name: str, tap: Any, method: dict[str, Any], weight: float) -> dict[str, Any]:
    return {"kind": "feature", "name": name, "tap": tap, "method": method, "weight": weight}


def _pair(student: str, teacher: str) -> str | dict[str, str]:
    return student if student == teacher else {"student": student, "teacher": teacher}


def _every_stage(stem: str, method: dict[str, Any], weight: float, stages: Stages) -> list[dict[str, Any]]:
    """One term per group pair (zip of the student's and the teacher's body stages)."""
    return [_feature(f"{stem}_{s}", _pair(s, t), method, weight) for s, t in zip(*stages)]


def _fitnet(stages: Stages) -> list[dict[str, Any]]:
    student, teacher = (names[min(1, len(names) - 1)] for names in stages)  # feat[2]: the second group
    return [_feature("fitnet", _pair(student, teacher), {"name": "fitnet"}, 100.0)]


def _at(stages: Stages) -> list[dict[str, Any]]:
    return _every_stage("at", {"name": "at", "p": 2.0}, 1000.0, stages)


def _nst(stages: Stages) -> list[dict[str, Any]]:
    return _every_stage("nst", {"name": "nst"}, 50.0, stages)


def _vid(stages: Stages) -> list[dict[str, Any]]:
    return _every_stage("vid", {"name": "vid"}, 1.0, stages)


def _srm(stages: Stages) -> list[dict[str, Any]]:
    return _every_stage("srm", {"name": "srm"}, 1.0, stages)


def _crd() -> list[dict[str, Any]]:
    return [_feature("crd", "pool", {"name": "crd"}, 0.8)]


_relation_preset("fitnet", _fitnet, """FitNets hint (Romero et al. 2015), weight 100.
    Tap: the second group's output (stage2; RepDistiller's hint_layer 2); RepDistiller's ConvReg
    regressor to the teacher's width and size, trained jointly; mean squared error.""",
                 family="feature", year=2015, layered=True)
_relation_preset("at", _at, """Attention transfer (Zagoruyko & Komodakis 2017), weight 1000 at each stage.
    Taps: every group's output (stage1, stage2, last_stage); normalised channel means of squared
    activations; mean squared error.""", family="feature", year=2017, layered=True)
_relation_preset("nst", _nst, """Neural selectivity transfer (Huang & Wang 2017), weight 50 at each stage.
    Taps: every group's output (stage1, stage2, last_stage); MMD of normalised channel maps with
    the kernel (x . y)^2.""", family="feature", year=2017, layered=True)
_relation_preset("vid", _vid, """Variational information distillation (Ahn et al. 2019), weight 1 at each stage.
    Taps: every group's output (stage1, stage2, last_stage); Gaussian likelihood with a learned
    variance per teacher channel.""", family="feature", year=2019,
                 layered=True)
_relation_preset("srm", _srm, """Sparse representation matching (Tran et al. 2021), weight 1 at each stage.
    Taps: every group's output (stage1, stage2, last_stage); pixel and image labels from the
    teacher's sparse codes (M = 2 C_t).""", family="feature", year=2021,
                 layered=True)
_relation_preset("crd", _crd, """Contrastive representation distillation (Tian et al. 2020), weight 0.8.
    Tap pool; embedding heads (128), memory banks, NCE with 16384 negatives at temperature 0.07.
    crd+kd is the published CRD+KD command: CE 1, KD 1 (T = 4), CRD 0.8.""",
                 family="feature", year=2020, kd_recipe=(1.0, {"weight": 1.0, "temperature": 4.0}))


def preset(name: str, *, stages: Stages | None = None) -> dict:
    """A fresh canonical config for the preset ``name`` (see :func:`list_presets`).

    ``stages``: the student's and the teacher's body stages (:func:`relkd.models.body_stages`;
    :meth:`relkd.setting.Setting.preset` passes its models'), which the multi-layer presets
    (FitNets, AT, NST, VID, SRM) read as RepDistiller does; by default three groups,
    ``stage1``, ``stage2``, ``last_stage``."""
    from .config import validate_config

    entry = PRESETS.get(name)
    if stages is None:
        return validate_config(entry.obj())
    student, teacher = (tuple(s) for s in stages)
    if not student or not teacher:
        raise ValueError(f"preset {name!r}: stages must name at least one body stage of each model, got {stages!r}")
    if entry.property("layered", default=False) and len(student) != len(teacher):
        log.warning("preset %s: the student has %d groups of blocks and the teacher %d; as RepDistiller's zip does, "
                    "the first %d of each are paired", name, len(student), len(teacher),
                    min(len(student), len(teacher)))
    return validate_config(entry.obj((student, teacher)))


def list_presets(pattern: str = "*") -> list[str]:
    """Preset names matching a wildcard pattern."""
    return PRESETS.list(pattern)
