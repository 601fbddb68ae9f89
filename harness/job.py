"""A job, as plain functions: the points a config asks for, and the rows measuring them gives.

    pts = points(cfg)                          # validated once; SettingError names the bad key
    vs = variants(cfg, pts)                    # the requested ones, or every one that supports them
    rows = run(pts, vs, cfg.timing, cfg.memory, metadata, num_threads=cfg.num_threads)

The command line (harness/app.py) is a thin layer over these, and so are the tests: following
`logit_scale=3` from the command line to its parquet column is `points` (one validation, in
the family's point module), then `run` (one `run_point` per point), then `results.write_rows`.
Before a sweep launches, `check` runs the same validation on every job's config.

The `family` setting picks the problem family (harness/family.py) whose points, variants and
reference a job uses; its package is imported only when a job asks for it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from typing import Any, Callable, Iterator

import torch

from harness import heap
from harness.config import SettingError, call_timeout, schema_defaults, validate_threads, validate_timing
from harness.family import Family
from harness.loss import settings
from harness.measure import deadline, environment
from harness.registry import Variant
from harness.runner import run_point

# family setting -> the package whose FAMILY it is (imported at first use: a cross-entropy job
# never imports the linear family's modules, nor the other way round).
FAMILIES = {
    "cross_entropy": "harness.cross_entropy",
    "linear_cross_entropy": "harness.linear_cross_entropy",
    "vocab_parallel_cross_entropy": "harness.vocab_parallel_cross_entropy",
}


def family(cfg: Any) -> Family:
    """The config's problem family; cross_entropy when the config has no `family` key (a config
    written before the setting existed)."""
    return named_family(cfg.get("family", "cross_entropy"))


def named_family(name: Any) -> Family:
    """A family by its name in FAMILIES, or by the import path of a module with a FAMILY (a
    user's own family: `family=my_pkg.my_family`), as variants load by import path."""
    module = FAMILIES.get(name) if isinstance(name, str) else None
    if module is None and isinstance(name, str) and "." in name:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise SettingError(f"family={name!r} does not import ({exc}): check the module path") from None
        if not isinstance(getattr(module, "FAMILY", None), Family):
            raise SettingError(f"family={name!r} has no FAMILY (a harness.family.Family) to measure with")
        return module.FAMILY
    if module is None:
        raise SettingError(
            f"family={name!r} is not allowed: use {' or '.join(FAMILIES)}, or the import path of a "
            "module with a FAMILY"
        )
    return importlib.import_module(module).FAMILY


def _readers(key: str) -> list[str]:
    """The registered families that read `key` (imported only to name them in an error)."""
    return [name for name in FAMILIES if key in named_family(name).reads]


def points(cfg: Any) -> list[Any]:
    """The validated points of a job config, in the order they are measured. Every setting
    that is not a point's (timing, threads) is checked here as well, and a point setting the
    family does not read is refused unless it holds its default, so a config that passes runs
    what it says."""
    validate_timing(cfg.timing)
    validate_threads(cfg.get("num_threads"))
    fam = family(cfg)
    settings.refuse_unread(cfg, fam.name, fam.reads, schema_defaults(), _readers)
    return settings.scan_points(cfg, fam.point)


def variants(cfg: Any, pts: list[Any]) -> list[Variant]:
    """The variants that run at the job's points (which share their family, targets and device)."""
    first = pts[0]
    chosen = first.family.registry.resolve(
        list(cfg.variants), first.targets, first.device, list(cfg.exclude_variants)
    )
    if cfg.variants or getattr(first, "required_options", None):
        return chosen
    # The plain loss: a variant that only composes options around another one would measure
    # that one twice (torch_composed is F.cross_entropy here), so the default set leaves it out.
    return [v for v in chosen if not v.plain_equivalent] or chosen


def check(cfg: Any) -> tuple[list[Any], list[Variant]]:
    """Both of the above: what the pre-launch check of a sweep runs on every job's config."""
    pts = points(cfg)
    return pts, variants(cfg, pts)


# The thread count `auto_threads` chose at the sweep's start (harness/callbacks.py), so that
# every job of one sweep runs with the same count whatever the load does meanwhile.
AUTO_THREADS_ENV = "HARNESS_AUTO_THREADS"


@functools.lru_cache(maxsize=1)
def _free_cores_at_start() -> int:
    return environment.auto_threads()  # 0.1 s of load readings: once per process


def sweep_threads() -> int:
    """The sweep's automatic thread count; else torch's where OMP_NUM_THREADS chose it (a user,
    a side-by-side launcher's share); else (a single run, a test) the free cores now."""
    value = os.environ.get(AUTO_THREADS_ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return _free_cores_at_start()


def announce_threads() -> str:
    """Choose the sweep's automatic thread count once, share it with its jobs, and say it."""
    threads = sweep_threads()
    os.environ[AUTO_THREADS_ENV] = str(threads)
    cores = environment.cores()
    why = (
        "set by OMP_NUM_THREADS"
        if os.environ.get("OMP_NUM_THREADS")
        else "the cores not busy with other work"
    )
    return f"timing with num_threads={threads} on {cores} cores ({why}; num_threads=N chooses)"


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    """torch's intra-op threads for the job, restored afterwards. On a busy 2-core machine 2
    threads made each op on a [2, 10] tensor wait ~30 ms at the pool's barrier (README,
    Findings): an accuracy-only scan has no use for them."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(
    pts: list[Any],
    vs: list[Variant],
    timing: Any,
    memory: Any,
    metadata: dict,
    num_threads: int | None = None,
    done: Callable[[Any, list[dict]], None] | None = None,
) -> list[dict]:
    """Every row of every point; `done(point, rows)` after each point (progress). num_threads
    None: the free cores (environment.auto_threads), as the sweep found them at its start."""
    if num_threads is None:
        num_threads = sweep_threads()
    metadata = {**metadata, "num_threads": num_threads}
    if not timing.enabled:  # accuracy only: the references' blocks reused, not faulted in again
        heap.keep_freed_blocks()
    rows: list[dict] = []
    with _threads(num_threads), deadline.installed(call_timeout(timing)):
        for point in pts:
            point_rows = run_point(point, vs, timing, memory, metadata)
            rows.extend(point_rows)
            if done is not None:
                done(point, point_rows)
    return rows
