"""How many students to train together on this device: measured, not guessed.

    size = best_population(setting)        # measured once per machine and student, then cached

:func:`measure_populations` times the training step of a population of K students of the
setting's architecture (forward, the loss of a typical composition, backward, optimizer step;
the engine :func:`relkd.engine.run_population` chooses) on one batch of the setting's shape, for growing
K, and reports students trained per second. :func:`best_population` picks the smallest K
within :data:`NEAR_BEST` of the best throughput, and 1 unless some K beats K = 1 by
:data:`MIN_GAIN` (a shared machine's noise must not choose for it). The answer is cached
under ``<cache>/calibration/`` per device name, student, batch shape, thread count and torch
version, so a study's workers on one machine agree and nothing is measured twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from typing import Any, Sequence

import torch

from ..cache import cache_root, file_lock
from ..objective import build_objective
from ..presets import preset
from ..files import write_text
from ..setting import Setting, resolve_device
from .build import build_model, load_data
from .device import autocast, free_device_memory, prepare_input, tf32

__all__ = ["best_population", "measure_populations", "choose_population", "CPU_SIZES", "GPU_SIZES",
           "MIN_GAIN", "NEAR_BEST"]

log = logging.getLogger(__name__)

CPU_SIZES = (1, 2, 4, 8)
GPU_SIZES = (1, 2, 4, 8, 16, 32, 64)
#: A population size is chosen over K = 1 only when it trains this many times as many students per second.
MIN_GAIN = 1.15
#: Among the sizes within this fraction of the best throughput the smallest is chosen (smaller
#: populations let the sampler learn from results sooner).
NEAR_BEST = 0.95
CALIBRATION_FORMAT = 2  # 2: the step includes a typical composition's loss


def measure_populations(setting: Setting, sizes: Sequence[int] = (), *, steps: int = 3, seconds: float = 0.5,
                        device: torch.device | None = None) -> dict[int, float]:
    """Students trained per second (K × steps / seconds) for each population size in
    ``sizes`` (default: :data:`CPU_SIZES` on the CPU, :data:`GPU_SIZES` on an accelerator),
    two warm-up steps then at least ``steps`` timed steps and ``seconds`` each. Stops growing K once the throughput
    falls below half the best so far or the device runs out of memory."""
    from .population import make_students

    device = device or resolve_device(setting.device)
    sizes = tuple(sizes) or (CPU_SIZES if device.type == "cpu" else GPU_SIZES)
    data = load_data(setting)
    template = build_model(setting.student, data, setting.seed, device)
    batch = setting.batch_size
    x, y = next(iter(data.train_loader(batch, device, seed=setting.seed, augment=False, shuffle=False)))
    x = prepare_input(x, device)
    # A typical composition (sp+kd: a relation term and KD) when the setting has a teacher: each
    # member's loss costs what it costs in a study. The teacher's taps are stood in for by the
    # template's own (relations are B x B whatever the widths; the cost is the student side's).
    objective = build_objective(preset("sp+kd" if setting.teacher is not None else "none"))
    with torch.no_grad():
        stand_in = {t: v.detach() for t, v in template(x, taps=objective.taps).items()}
    rates: dict[int, float] = {}
    for k in sizes:
        try:
            students = make_students("auto", template, k, setting.budget, 10_000, setting.precision)

            def step() -> None:
                with autocast(device, setting.precision):
                    outs = students.forward(x, objective.taps)
                    loss = sum(objective(o, stand_in if objective.needs_teacher else None, y)["total"] for o in outs)
                students.step(loss)

            step()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            done, start = 0, time.perf_counter()
            while done < steps or time.perf_counter() - start < seconds:
                step()
                done += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates[k] = k * done / max(time.perf_counter() - start, 1e-9)
        except torch.OutOfMemoryError:
            free_device_memory()
            log.info("population calibration: %d students do not fit on %s", k, device)
            break
        finally:
            students = None  # noqa: F841 - free the stacked copies before the next size
        log.info("population calibration on %s: K=%d trains %.2f students/s", device, k, rates[k])
        if rates[k] < 0.5 * max(rates.values()):
            break
    return rates


def choose_population(rates: dict[int, float]) -> int:
    """The size to train with, from :func:`measure_populations`' rates (see the module)."""
    if not rates:
        return 1
    best = max(rates.values())
    base = rates.get(1, min(rates.values()))
    if best < MIN_GAIN * base:
        return 1
    return min(k for k, r in rates.items() if r >= NEAR_BEST * best)


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} threads={torch.get_num_threads()}"


def best_population(setting: Setting, *, device: torch.device | None = None, refresh: bool = False) -> int:
    """The population size to train the setting's students with on this machine (see the
    module): measured on first use, then read from the cache (``refresh`` measures again)."""
    device = device or resolve_device(setting.device)
    batch = setting.batch_size
    ident: dict[str, Any] = {"format": CALIBRATION_FORMAT, "machine": _machine(device), "device": device.type,
                             "precision": setting.precision if device.type == "cuda" else "fp32",
                             "tf32": setting.tf32 and device.type == "cuda",
                             "student": setting.student.model, "params": setting.student.params,
                             "dataset": setting.data.dataset, "batch": batch, "optimizer": setting.budget.optimizer,
                             "torch": torch.__version__}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    file = cache_root() / "calibration" / f"population-{key}.json"
    with file_lock(file.with_suffix(".lock"), "the population calibration"):
        if file.is_file() and not refresh:
            try:
                record = json.loads(file.read_text())
                return int(record["population"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("population calibration %s is unreadable (%s); measuring again", file, err)
        try:
            with tf32(device, setting.tf32):
                rates = measure_populations(setting, device=device)
        except RuntimeError as err:  # a device error is no reason to stop a study: train one at a time
            log.warning("population calibration failed on %s (%s); training one trial at a time", device, err)
            return 1
        size = choose_population(rates)
        record = {**ident, "rates": {str(k): r for k, r in rates.items()}, "population": size}
        try:
            write_text(file, json.dumps(record, indent=2))
        except OSError as err:
            log.warning("could not cache the population calibration %s (%s)", file, err)
    log.info("population: %d students at a time on %s (measured: %s)", size, _machine(device),
             ", ".join(f"K={k}: {r:.2f}/s" for k, r in rates.items()))
    return size
