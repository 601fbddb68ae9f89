"""The scale grid: many logit scales and seeds of one (C, dtype, targets) point in one job.

`+sweep=overflow` needs ~40 scales x several seeds for each of 40 (C, dtype, targets)
combinations: ~5,000 points. As Hydra jobs each would be composed twice (validated, then
launched), ~0.05-0.2 s apiece before any measuring; here the sweep's jobs are the 40
combinations and each job walks its scales and seeds in-process with the same `run_point`,
writing ordinary rows (rows.parquet in the job's folder, read by `harness.results.load`).

Settings (the `study` node): name: scale_grid, logit_scales: [...], seeds: [...], and
num_threads (optional): torch's intra-op threads while the grid runs, restored afterwards and
stored in every row's `num_threads`. On a busy 2-core machine, 2 threads made each op on a
[2, 10] tensor wait ~30 ms at the thread pool's barrier (0.28 s per point against 0.04 s with
1 thread, README, Findings): an accuracy-only grid has no use for them.
The job's own logit_scale and seed are replaced by every pair of the two lists.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from typing import Any

import torch

from harness.config import SettingError
from harness.plan import check
from harness.runner import run_point

log = logging.getLogger("harness")


def grid_axes(settings: Any) -> tuple[list[float], list[int]]:
    """(logit_scales, seeds) of the study node, or SettingError naming the bad key."""
    scales, seeds = settings.get("logit_scales"), settings.get("seeds")
    if not scales or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                             and math.isfinite(s) and s >= 0 for s in scales):
        raise SettingError(f"study.logit_scales={scales!r} is not allowed: give a list of finite numbers >= 0")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise SettingError(f"study.seeds={seeds!r} is not allowed: give a list of integers >= 0")
    return [float(s) for s in scales], list(seeds)


def run(cfg: Any, metadata: dict) -> list[dict]:
    """Every row of the job's (C, dtype, targets) at each (logit_scale, seed) of the grid."""
    scales, seeds = grid_axes(cfg.study)
    threads = cfg.study.get("num_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise SettingError(f"study.num_threads={threads!r} is not allowed: use an integer >= 1 (or leave it out)")
    point, variants = check(cfg)
    rows: list[dict] = []
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
        metadata = {**metadata, "num_threads": threads}
    try:
        for seed in seeds:
            for scale in scales:
                p = dataclasses.replace(point, logit_scale=scale, seed=seed)
                rows.extend(run_point(p, variants, cfg.timing, cfg.memory, metadata))
    finally:
        torch.set_num_threads(before)
    counts = ", ".join(f"{n} {s}" for s, n in Counter(r["status"] for r in rows).items())
    log.info("B=%d C=%d %s %s: %d scales x %d seeds, %d rows (%s) in %.1f s", point.batch_size,
             point.num_classes, point.dtype, point.targets, len(scales), len(seeds), len(rows), counts,
             time.perf_counter() - t0)
    return rows
