"""Forward + backward time of each feature preset's term (relkd.features), composed by relkd
(term -> method module, float32 guard, checks) versus a direct single-function version of
the same formula with the same trained parts, measured interleaved in one run on the CPU;
then CRD's memory-bank size at the dataset sizes relkd ships.

The shapes are those of the quick setting's pair (cnn_tiny student, cnn_small teacher on
28 x 28 Fashion-MNIST images): each term at the tap its preset uses. Each direct function is
checked against relkd and against the independent oracle in tests/reference_features.py
before it is timed.

    .venv/bin/python benchmarks/feature_terms.py [--reps 100] [--batches 64,128] [--markdown]
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import reference_features as rf  # noqa: E402
from relation_terms import time_all, timing_args  # noqa: E402

import relkd  # noqa: E402

#: (student, teacher) channels and spatial size of each tap in the quick pair (cnn_tiny -> cnn_small).
TAPS = {"stage1": (16, 32, 28), "stage2": (32, 64, 14), "last_stage": (64, 128, 7), "pool": (64, 128, None)}
#: Training-set sizes relkd ships: the quick subset, Fashion-MNIST's train split less validation, CIFAR-100's.
DATASETS = {"fmnist quick (train_subset 8000)": 8000, "fashion-mnist (54000 train)": 54000,
            "cifar-100 (45000 train)": 45000}


def at_direct(method, fs, ft, index):
    a_s = F.normalize(fs.abs().pow(2).mean(1).flatten(1))
    a_t = F.normalize(ft.abs().pow(2).mean(1).flatten(1))
    return (a_s - a_t).pow(2).mean()


def nst_direct(method, fs, ft, index):
    s, t = F.normalize(fs.flatten(2), dim=2), F.normalize(ft.flatten(2), dim=2)
    return (torch.bmm(s, s.transpose(1, 2)).pow(2).mean() + torch.bmm(t, t.transpose(1, 2)).pow(2).mean()
            - 2 * torch.bmm(s, t.transpose(1, 2)).pow(2).mean())


def fitnet_direct(method, fs, ft, index):
    return F.mse_loss(method.regressor(fs), ft)


def vid_direct(method, fs, ft, index):
    var = (F.softplus(method.log_scale) + 1e-5).view(1, -1, 1, 1)
    return (0.5 * ((method.regressor(fs) - ft).pow(2) / var + var.log())).mean()


def crd_direct(method, fs, ft, index):
    e_s = F.normalize(method.embed_s(fs), dim=1)
    e_t = F.normalize(method.embed_t(ft), dim=1)
    rows = torch.cat([index[:, None], method.last_negatives], 1)
    n, m = method.memory_s.shape[0], method.negatives
    noise = m / n

    def nce(x):
        return -(torch.log(x[:, 0] / (x[:, 0] + noise + 1e-7)).sum()
                 + torch.log(noise / (x[:, 1:] + noise + 1e-7)).sum()) / x.shape[0]

    x_s = torch.exp((e_s @ method.memory_t.t()).gather(1, rows) / method.temperature) / method.z[0]
    x_t = torch.exp((e_t @ method.memory_s.t()).gather(1, rows) / method.temperature) / method.z[1]
    return nce(x_s) + nce(x_t)


def srm_direct(method, fs, ft, index):
    with torch.no_grad():
        a = torch.sigmoid(ft.permute(0, 2, 3, 1) @ method.dictionary + method.bias)
        codes = a * (a >= a.topk(method.k, dim=-1).values[..., -1:])
    z = method.head(fs)
    return F.cross_entropy(z, codes.argmax(-1)) + F.binary_cross_entropy(torch.sigmoid(z).mean((2, 3)),
                                                                         codes.mean((1, 2)))


DIRECT = {"at": at_direct, "nst": nst_direct, "fitnet": fitnet_direct, "vid": vid_direct, "crd": crd_direct,
          "srm": srm_direct}


def oracle(name, method, fs, ft, index, memory):
    if name == "at":
        return rf.at_loss(fs, ft)
    if name == "nst":
        return rf.nst_loss(fs, ft)
    if name == "fitnet":
        return rf.fitnet_loss(fs, ft, method.regressor)
    if name == "vid":
        return rf.vid_loss(fs, ft, method.regressor, method.log_scale)
    if name == "srm":
        return rf.srm_loss(fs, ft, method.head.weight, method.head.bias, method.dictionary, method.bias, method.k)
    return rf.crd_loss(fs, ft, method.embed_s.weight, method.embed_s.bias, method.embed_t.weight,
                       method.embed_t.bias, *memory, index, method.last_negatives, method.temperature,
                       method.z[0], method.z[1])


def features(tap: str, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c_s, c_t, hw = TAPS[tap]
    shape = (lambda c: (b, c, hw, hw)) if hw else (lambda c: (b, c))
    s = torch.relu(torch.randn(*shape(c_s), generator=g))
    t = torch.relu(torch.randn(*shape(c_t), generator=g))
    return s.requires_grad_(True), t


def setup(name: str, b: int, samples: int = 8000):
    """The preset's first term, built for the quick pair's shapes; its inputs and a batch of indices."""
    term = relkd.build_objective(name).terms[-1]
    tap = relkd.preset(name)["terms"][-1]["tap"]
    s, t = features(tap, b)
    term.build(s, t, samples)
    if name == "srm":  # its dictionary stage, on this batch
        term.method.stage(lambda: iter([t]), None)
    index = torch.randperm(samples, generator=torch.Generator().manual_seed(1))[:b]
    return term, s, t, index


def fwd_bwd(fn, s: torch.Tensor) -> float:
    start = time.perf_counter()
    fn().backward()
    elapsed = time.perf_counter() - start
    s.grad = None
    return elapsed


def time_pair(name: str, b: int, reps: int) -> dict:
    term, s, t, index = setup(name, b)
    method = term.method
    method.eval()  # CRD's banks stay put, so both sides see the same state on every repetition
    memory = (method.memory_s.clone(), method.memory_t.clone()) if name == "crd" else None
    composed_value = term(s, t, index)
    direct_value = DIRECT[name](method, s, t, index)
    torch.testing.assert_close(composed_value, direct_value, rtol=1e-4, atol=1e-6)  # same formula
    torch.testing.assert_close(oracle(name, method, s, t, index, memory), direct_value, rtol=1e-4, atol=1e-6)

    def composed():
        return term(s, t, index)

    def direct():
        if name == "crd":  # a draw of its own, as the composed term makes on every call
            method.last_negatives = torch.randint(method.memory_s.shape[0], (b, method.negatives))
        return DIRECT[name](method, s, t, index)

    for _ in range(3):  # warm-up
        fwd_bwd(composed, s), fwd_bwd(direct, s)
    times_c, times_d = [], []
    for i in range(reps):  # interleaved, alternating order, so both see the same machine load
        if i % 2:
            times_c.append(fwd_bwd(composed, s)), times_d.append(fwd_bwd(direct, s))
        else:
            times_d.append(fwd_bwd(direct, s)), times_c.append(fwd_bwd(composed, s))
    c, d = statistics.median(times_c), statistics.median(times_d)
    return {"term": name, "batch": b, "composed_ms": c * 1e3, "direct_ms": d * 1e3, "ratio": c / d}


def crd_memory() -> list[tuple[str, int, float]]:
    """CRD's two memory banks (student and teacher), built for each shipped training-set size."""
    rows = []
    for label, n in DATASETS.items():
        term, *_ = setup("crd", 4, n)
        nbytes = sum(b.numel() * b.element_size() for name, b in term.method.named_buffers() if "memory" in name)
        rows.append((label, n, nbytes / 2**20))
    return rows


def main() -> None:
    args = timing_args(__doc__, 100, "64,128")
    time_all(args, DIRECT, time_pair, "quick pair's shapes")
    bar = "|" if args.markdown else " "
    print(f"\n{bar} CRD memory banks (feat_dim 128, float32) {bar} samples {bar} MiB {bar}")
    if args.markdown:
        print("|---|---|---|")
    for label, n, mib in crd_memory():
        print(f"{bar} {label} {bar} {n} {bar} {mib:.1f} {bar}")


if __name__ == "__main__":
    main()
