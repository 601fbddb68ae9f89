"""What a sweep will run, known before it runs: the job list and its validation.

`planned_jobs` expands `hydra.sweeper.params` plus the command line into the cartesian product
of jobs, in launch order, with Hydra's public override parser; the harness's sweeper
(hydra_plugins/harness_sweeper) launches exactly that list. So every job's settings are
validated (`check_sweep`, through the same `harness.job.check` a job runs) before the first
one starts: a bad value in the 17th point of a sweep stops the sweep before any directory is
made, and progress can say "point 3 of 24".
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import SettingError
from harness.job import check


@dataclass
class SweeperConf:
    """`hydra/sweeper: harness` (conf/config.yaml): the sweeper that launches `planned_jobs`."""

    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessSweeper"
    params: Optional[Dict[str, str]] = None  # key: comma-separated values, as Hydra's basic sweeper


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=SweeperConf, provider="harness")


def task_config(config: DictConfig) -> DictConfig:
    """The config without its `hydra` node: what a job function receives."""
    task = copy.deepcopy(config)
    with_flag = OmegaConf.is_struct(task)
    OmegaConf.set_struct(task, False)
    task.pop("hydra", None)
    OmegaConf.set_struct(task, with_flag)
    return task


def planned_jobs(params: dict[str, Any], arguments: list[str]) -> list[list[str]]:
    """The override lists of every job of a sweep, in launch order: one list of values per key
    (a sweep `a=1,2` gives two; a plain `a=1` one), keys in order of first appearance, a later
    value of a key replacing an earlier one, and the cartesian product of the lists."""
    args = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    per_key: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(args):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise SettingError(
                    f"{key}: only comma-separated values can be swept (not ranges or intervals)"
                )
            per_key[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
        else:
            per_key[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*per_key.values())]


def apply_overrides(task: DictConfig, overrides: list[str]) -> DictConfig:
    """A copy of `task` with one job's `key=value` overrides applied (config groups and
    hydra.* keys are left to Hydra: they were already composed into `task`)."""
    job = copy.deepcopy(task)
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.startswith("hydra") or override.is_add() or override.is_delete() or override.is_force_add():
            continue  # Hydra's own settings, and config groups added with `+`, are Hydra's to check
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


# A point's fixed cost (a Hydra job's launch, inputs, references, compilation), in bytes of the
# byte model: the calibration that lets the ETA weigh a 26 GB GPU point against a 1 GB one.
# CUDA: the 12 points of `+sweep=gpu` on an H200 (every variant, 1.0 to 25.8 GB moved by fwd_bwd)
# took 10.9 to 27.1 s; a least-squares line through them is 11.9 s + 0.62 s/GB, i.e. a fixed
# cost of ~19 GB of traffic (torch.compile's compilations, allocations, the float64
# references). With 2^34 B (17 GB) the ETA replayed on that log is within 23% of the truth from
# the second point on (tests/cli/test_progress.py); the earlier 2^29 B read 2.2-5.8x too long.
# CPU: ~0.27 s a point of fixed cost on 2 cores (README, Measured cost).
_FIXED_BYTES = {"cpu": 2**24, "cuda": 2**34}


def job_weight(points: list[Any]) -> float:
    """How long a job should take relative to the others of its sweep (for the progress ETA):
    per point, its fixed cost plus the bytes its fwd_bwd mode moves."""
    fixed = [_FIXED_BYTES[p.device.split(":")[0]] for p in points]
    return float(sum(fixed) + sum(p.family.bytes_moved(p, "fwd_bwd") for p in points))


def check_sweep(config: DictConfig) -> list[float]:
    """Validate every job of a multirun; return each job's weight (job_weight), in launch order."""
    task = task_config(config)
    params = config.hydra.sweeper.get("params") or {}
    jobs = planned_jobs(dict(params), list(config.hydra.overrides.task))
    return [job_weight(check(apply_overrides(task, overrides))[0]) for overrides in jobs]
