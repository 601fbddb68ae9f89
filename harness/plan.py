"""What a sweep will run, known before it runs: the job list and its validation.

Hydra's basic sweeper expands `hydra.sweeper.params` plus the command line into a cartesian
product of jobs; `planned_jobs` performs that same expansion, so that every job's settings can
be validated before the first one starts (a bad value in the 17th point of a sweep stops the
sweep before any directory is made) and so that progress can say "point 3 of 24".
"""

from __future__ import annotations

import copy
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import Point, SettingError, validate
from harness.variants import Variant, resolve


def task_config(config: DictConfig) -> DictConfig:
    """The config without its `hydra` node: what a job function receives."""
    task = copy.deepcopy(config)
    with_flag = OmegaConf.is_struct(task)
    OmegaConf.set_struct(task, False)
    task.pop("hydra", None)
    OmegaConf.set_struct(task, with_flag)
    return task


def check(task: DictConfig) -> tuple[Point, list[Variant]]:
    """Validate a task config: its Point and the variants to run, or SettingError."""
    point = validate(task)
    return point, resolve(list(task.variants), point.targets, point.device, list(task.exclude_variants))


def planned_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of every job the basic sweeper will launch, in launch order."""
    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(args)
    return BasicSweeper.split_arguments(parsed, None)[0]


def apply_overrides(task: DictConfig, overrides: list[str]) -> DictConfig:
    """A copy of `task` with one job's `key=value` overrides applied (config groups and
    hydra.* keys are left to Hydra: they were already composed into `task`)."""
    job = copy.deepcopy(task)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.startswith("hydra") or override.is_add() or override.is_delete() or override.is_force_add():
            continue   # Hydra's own settings, and config groups added with `+`, are Hydra's to check
        if OmegaConf.select(job, key, default=_MISSING) is _MISSING:
            raise SettingError(f"{key}: no such setting (see conf/config.yaml for every key)")
        value = override.value()
        try:
            OmegaConf.update(job, key, value, merge=False)
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0]
            raise SettingError(f"{key}={value!r} is not allowed: {reason}") from None
    return job


_MISSING: Any = object()


def check_sweep(config: DictConfig) -> int:
    """Validate every job of a multirun; return how many there are.

    Having checked every job here, the harness turns off the basic sweeper's own check, which
    composes every job's whole config once more before launching it (0.2 s a job on 2 cores,
    as much as the launch's own composition): it halves the sweep's per-point overhead."""
    task = task_config(config)
    jobs = planned_jobs(config)
    for overrides in jobs:
        check(apply_overrides(task, overrides))
    BasicSweeper.validate_batch_is_legal = _validated_already
    return len(jobs)


def _validated_already(self: BasicSweeper, batch: Any) -> None:
    """Replaces BasicSweeper.validate_batch_is_legal once check_sweep has passed."""
