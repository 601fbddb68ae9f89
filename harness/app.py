"""The `python -m harness` entry point: a thin Hydra app around the job functions.

A config with a `study` node (`+study=NAME`) runs that study (harness/studies/); any other is a
points job (harness/job.py): validate, measure, write the rows, resume what is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import interrupts, job, studies
from harness.callbacks import SWEEP_SIZE_ENV, SWEEP_START_ENV, fail, sweep_weights
from harness.config import HarnessConfig, SettingError
from harness.measure import contention
from harness.metadata import run_metadata
from harness.results import stored_key, write_rows
from harness.summary import short_table

log = logging.getLogger("harness")

ConfigStore.instance().store(name="harness_schema", node=HarnessConfig)

# A point folder is named by its settings (`dtype=bf16,logit_scale=1,...`), but a few user
# variants given by import path make that name pass the file systems' 255-byte limit. Past
# 200 bytes it keeps its first 160 characters and a digest of the whole: still one folder per
# point and stable across runs (so resume finds it), while the variants stay in the rows and
# in the resume digest.
_DIR_BYTES, _DIR_KEEP = 200, 160


def point_dir(name: str) -> str:
    if len(name.encode()) <= _DIR_BYTES:
        return name
    return f"{name[:_DIR_KEEP]}~{hashlib.sha256(name.encode()).hexdigest()[:16]}"


OmegaConf.register_new_resolver("harness_point_dir", point_dir, replace=True)

# Points finished by this process, for the one line a Ctrl-C prints (`python -m harness`).
_finished = 0


def finished_points() -> tuple[int, int]:
    """(points written or resumed so far in this process, points in the sweep)."""
    return _finished, int(os.environ.get(SWEEP_SIZE_ENV, 1))


def point_key(cfg: DictConfig, variant_names: list[str]) -> str:
    """A digest of every task setting and of the variants they resolve to: a stored file with
    this key holds this job's rows. The names count because the default set grows with the
    registry: a point measured before a variant was added is measured again on resume."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    text = json.dumps({"settings": settings, "variants": variant_names}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _label(point: Any, count: int) -> str:
    """The point's own label (harness/family.py, PointLike), with its scan counted."""
    text = point.label()
    return text if count == 1 else text.replace(f"scale={point.logit_scale:g}", f"{count} scales/seeds")


# Weight of the jobs this process found already written: they took no time, so the ETA leaves
# them out of the work done.
_resumed_weight = 0.0


def _progress(index: int, total: int, resumed: bool = False) -> str:
    """`[3/24, 21 left, ~40 s to go]` once job `index` (1-based) is done: the time so far,
    scaled by the expected work left over the work measured (each job's weight,
    plan.job_weight: a 2 GB point weighs more than a tiny one)."""
    global _resumed_weight
    text = f"[{index}/{total}, {total - index} left"
    weights = sweep_weights(total)
    if resumed:
        _resumed_weight += weights[index - 1]
    start = os.environ.get(SWEEP_START_ENV)
    done = sum(weights[:index]) - _resumed_weight
    if start and done > 0 and not resumed:
        text += f", ~{(time.time() - float(start)) * sum(weights[index:]) / done:.0f} s to go"
    return text + "]"


def run_points_job(cfg: DictConfig) -> str:
    """Measure this job's points into its output directory: 'measured', or 'resumed' when the
    directory already holds the rows of exactly these settings and variants."""
    interrupts.check()  # a Ctrl-C noted while Hydra prepared this job stops here, cleanly
    try:
        points, variants = job.check(cfg)
    except SettingError as exc:
        fail(str(exc))
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    out_dir = Path(hc.runtime.output_dir)
    index = hc.job.num + 1 if multirun else 1
    total = int(os.environ.get(SWEEP_SIZE_ENV, 1)) if multirun else 1
    key = point_key(cfg, [v.name for v in variants])
    label = _label(points[0], len(points))
    global _finished
    if stored_key(out_dir) == key:
        log.info("%s %s: already written, skipped", _progress(index, total, resumed=True), label)
        _finished += 1
        return "resumed"
    run_dir = Path(str(hc.sweep.dir if multirun else hc.run.dir))
    metadata = run_metadata(
        run_id=run_dir.name, sweep=hc.runtime.choices.get("sweep") or "", device=points[0].device
    )
    t0 = time.perf_counter()
    rows = job.run(points, variants, cfg.timing, cfg.memory, metadata, num_threads=cfg.num_threads)
    write_rows(rows, out_dir, key)
    _finished += 1
    counts = ", ".join(f"{n} {s}" for s, n in Counter(r["status"] for r in rows).items())
    log.info(
        "%s %s: %d rows (%s) in %.1f s",
        _progress(index, total),
        label,
        len(rows),
        counts,
        time.perf_counter() - t0,
    )
    contended = contention.summary_line(rows)
    if contended:
        log.warning("harness: %s", contended)
    if not multirun:
        print(short_table(rows), flush=True)
        print(f"harness: results in {out_dir}", flush=True)
    return "measured"


def run_study_job(cfg: DictConfig) -> str:
    """A study that is not points (`+study=NAME`): its own table in the job's directory."""
    interrupts.check()
    try:
        path = studies.run(cfg.study, Path(HydraConfig.get().runtime.output_dir))
    except SettingError as exc:
        fail(str(exc))
    print(f"harness: study table in {path}", flush=True)
    return "study"


# An absolute path: Hydra would otherwise look for `conf` as a Python package next to this module.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> str:
    return run_study_job(cfg) if cfg.get("study") is not None else run_points_job(cfg)
