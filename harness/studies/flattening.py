"""The repeated-softmax study (README, Numerics §5): softmax applied k times flattens to uniform.

For each (C, dtype, start scale, seed): p_0 = start_scale * N(0, 1) [C], drawn in float64 and
rounded to the dtype; p_k = softmax(p_{k-1}) computed and stored in the dtype. Per iteration:

  dist_from_uniform   max_c |p_k,c - 1/C|, the max-abs (l-infinity) distance, taken in float64
                      on the stored iterate: the largest single-class deviation, which is what
                      "flat to 4 decimals" means, and it does not grow with C as l2 would
  step_ratio          dist_k / dist_{k-1}: tends to 1/C, the Jacobian (1/C)(I - 11^T/C) at the
                      fixed point; NaN when dist_{k-1} is 0
  spread              max_c p_k,c - min_c p_k,c: exactly 0 once every entry is the same number
  uniform             spread == 0: the iterate is exactly uniform in its dtype (fl(1/C) in
                      every entry, which for C not a power of 2 still differs from 1/C)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from harness.config import SettingError
from harness.dtypes import DTYPES
from harness.vocabulary import study_file

STUDY_FILE = study_file("flattening")

COLUMNS = [
    "num_classes",
    "dtype",
    "start_scale",
    "seed",
    "iteration",
    "dist_from_uniform",
    "step_ratio",
    "spread",
    "uniform",
]


def check(settings: Any) -> tuple[list[int], list[str], list[float], list[int], int]:
    """The study's axes, or SettingError naming the bad key."""

    def listed(key: str) -> list:
        value = settings.get(key)
        if value is None or isinstance(value, (str, int, float)) or len(value) == 0:
            raise SettingError(f"study.{key}={value!r} is not allowed: give a non-empty list")
        return list(value)

    classes = listed("num_classes")
    if not all(isinstance(c, int) and c >= 2 for c in classes):
        raise SettingError(f"study.num_classes={classes} is not allowed: use integers >= 2")
    dtypes = listed("dtypes")
    if not all(d in DTYPES for d in dtypes):
        raise SettingError(f"study.dtypes={dtypes} is not allowed: use {', '.join(DTYPES)}")
    scales = listed("start_scales")
    if not all(isinstance(s, (int, float)) and s >= 0 for s in scales):
        raise SettingError(f"study.start_scales={scales} is not allowed: use numbers >= 0")
    seeds = listed("seeds")
    if not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise SettingError(f"study.seeds={seeds} is not allowed: use integers >= 0")
    iterations = settings.get("iterations")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise SettingError(f"study.iterations={iterations!r} is not allowed: use an integer >= 1")
    return classes, dtypes, [float(s) for s in scales], seeds, iterations


def trajectory(num_classes: int, dtype: str, start_scale: float, seed: int, iterations: int) -> list[dict]:
    """Rows for iterations 0..iterations of one starting vector (iteration 0: the start)."""
    g = torch.Generator().manual_seed(seed)
    p = (start_scale * torch.randn(num_classes, dtype=torch.float64, generator=g)).to(DTYPES[dtype])
    rows, prev = [], None
    for k in range(iterations + 1):
        if k > 0:
            p = torch.softmax(p, dim=0)  # computed and stored in the dtype
        p64 = p.to(torch.float64)
        dist = float((p64 - 1.0 / num_classes).abs().max())
        spread = float(p64.max() - p64.min())
        ratio = dist / prev if prev not in (None, 0.0) else float("nan")
        rows.append(
            {
                "num_classes": num_classes,
                "dtype": dtype,
                "start_scale": start_scale,
                "seed": seed,
                "iteration": k,
                "dist_from_uniform": dist,
                "step_ratio": ratio,
                "spread": spread,
                "uniform": spread == 0.0,
            }
        )
        prev = dist
    return rows


def study_table(settings: Any) -> pd.DataFrame:
    """Every trajectory of the study as one DataFrame with COLUMNS."""
    classes, dtypes, scales, seeds, iterations = check(settings)
    rows = [
        row
        for c in classes
        for d in dtypes
        for s in scales
        for seed in seeds
        for row in trajectory(c, d, s, seed, iterations)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def run(settings: Any, out_dir: Path) -> Path:
    """Write study_table(settings) to out_dir/study-flattening.parquet (atomically); its path."""
    df = study_table(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / STUDY_FILE
    tmp = out_dir / f".{STUDY_FILE}.tmp"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    tmp.replace(path)
    return path


def summary(df: pd.DataFrame) -> str:
    """Per (dtype, C): the median step ratio of the last iterations still above rounding
    (dist > 0 and not yet uniform) next to 1/C, and the first iteration that is exactly uniform."""
    lines = []
    for (dtype, c), g in df.groupby(["dtype", "num_classes"], sort=False):
        live = g[(g.iteration >= 2) & g.step_ratio.notna() & ~g.uniform]
        ratio = (
            live.groupby(["start_scale", "seed"]).step_ratio.last().median() if len(live) else float("nan")
        )
        first = g[g.uniform].groupby(["start_scale", "seed"]).iteration.min()
        lines.append(
            f"{dtype:>5} C={c:<6} last step ratio {ratio:.4g} (1/C = {1 / c:.4g}); "
            f"exactly uniform at step {int(first.max()) if len(first) else '-'}"
            + ("" if len(first) == g.groupby(["start_scale", "seed"]).ngroups else " (not every start)")
        )
    return "\n".join(lines)
