"""The training engine: teachers trained once into the store, distillation runs, evaluation.

Everything a search trial runs is here::

    setting = load_setting("studies/fmnist_full.yaml")
    teacher = get_teacher(setting)                  # trained once, then loaded from the cache
    result = run_trial(setting, preset("kd"), report=lambda epoch, acc: False)  # a RunResult

One loop (:func:`fit`) trains both teachers (CE only) and students (any objective).
Search only ever sees validation accuracy; the test split is evaluated only when a run
asks for it (``eval_test=True``). The rooms:

- :mod:`.device`: autocast and memory layout;
- :mod:`.build`: the setting's data splits and models (init checkpoints, frozen parts);
- :mod:`.training`: :func:`fit`, the optimizer and schedule, :func:`evaluate`, and the training
  step that :func:`fit` and populations share (:func:`~.training.train_step`);
- :mod:`.teacher_outputs`: the teacher's taps cached per sample;
- :mod:`.teacher`: the teacher's key and :func:`get_teacher`;
- :mod:`.result`: :class:`RunResult`, what a run returns, and which of it a trial stores;
- :mod:`.runs`: :func:`run_trial` and :func:`train_runs`;
- :mod:`.population`: :func:`run_population`, K students with their own objectives in one pass
  (engines: :mod:`.fold`, vmap, a loop); :mod:`.calibrate` measures the size to use;
- :mod:`.memory`: what a composition's relation terms need in memory.
"""
from ..cache import cache_root
from .build import apply_transfer, build_model, init_file, load_data, transfer_ident
from .device import autocast, free_device_memory, prepare_input
from .population import run_population
from .result import TRIAL_FIELDS, RunResult
from .runs import RunEvaluation, run_trial, train_runs
from .teacher import CHECKPOINT_FORMAT, TeacherResult, get_teacher, teacher_key
from .teacher_outputs import TeacherOutputs
from .training import FitResult, NonFiniteLossError, Report, evaluate, fit, make_optimizer, param_groups

__all__ = [
    "NonFiniteLossError", "RunResult", "TRIAL_FIELDS", "TeacherResult", "TeacherOutputs", "FitResult", "Report",
    "RunEvaluation",
    "CHECKPOINT_FORMAT", "cache_root", "load_data", "build_model", "init_file", "apply_transfer", "transfer_ident",
    "get_teacher", "teacher_key", "fit", "evaluate", "make_optimizer", "param_groups", "autocast", "prepare_input",
    "free_device_memory",
    "run_trial", "train_runs", "run_population",
]
