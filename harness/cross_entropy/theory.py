"""Where the naive formulas must break, predicted from torch.finfo alone (README, Numerics §2-3).

Model of a row: logits z = s * N(0, 1) over C classes. Its largest logit is taken at the
median max of C standard normals, m_C = Phi^-1(2^(-1/C)) (computed, not tabulated), its
smallest at -m_C, and the bulk at the normal quantiles Phi^-1((i - 1/2) / C). Then

  LSE(s)  = logsumexp(s * quantiles)          ~ ln C + s^2/2 (small s), ~ s * m_C (large s)
  gap(s)  = LSE(s) + s * m_C                  = -log of the smallest probability

and the mechanisms of harness/cross_entropy/mechanisms.py, each with the scale at which it
first happens in a median row:

  sum_overflow           sum_c exp(z_c) rounds to inf:  LSE(s) >= ln(overflow edge)
                         (edge = max + ulp(max)/2: the first value round-to-nearest sends to inf;
                         65,520 in fp16, so C >= 65,520 ones already overflow: predicted scale 0)
  prob_underflow         the smallest probability rounds to 0:  gap(s) >= -ln(min_subnormal / 2)
                         (a formula that multiplies every log-probability by its target gives
                         inf or NaN, 0 * -inf, from one underflowed probability)
  target_prob_underflow  only p[y] is read, for a random class y (median logit 0): it needs
                         LSE(s) itself to pass the underflow edge

A variant declares its mechanisms (`breaks_by`); the predictions for a variant are those of its
mechanisms, and nothing here names a variant. A batch of B rows fails with its worst row: the
`_batch` predictions put the extreme logit at m_{B*C} instead of m_C (the largest of all B*C
draws), which the sweep's batches follow.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.cross_entropy.mechanisms import MECHANISMS
from harness.dtypes import DTYPES, edges
from harness.vocabulary import THEORY_FILE


def median_max_normal(num_classes: int) -> float:
    """Median of the max of C iid standard normals: Phi^-1(2^(-1/C)).

    Computed as -Phi^-1(1 - 2^(-1/C)) with the tail probability from expm1, since 2^(-1/C)
    is within 1e-6 of 1 for C = 10^6 and would lose most of its digits as 1 - p.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1")
    tail = -math.expm1(-math.log(2.0) / num_classes)
    return -float(torch.special.ndtri(torch.tensor(tail, dtype=torch.float64)))


@functools.lru_cache(maxsize=64)
def _quantiles(num_classes: int, extreme: float) -> np.ndarray:
    """[C] float64: the bulk at Phi^-1((i - 1/2)/C), the two ends at -extreme and +extreme."""
    p = (torch.arange(num_classes, dtype=torch.float64) + 0.5) / num_classes
    q = torch.special.ndtri(p).numpy()
    if num_classes >= 2:
        q[0], q[-1] = -extreme, extreme
    return q


def log_overflow_edge(dtype: torch.dtype) -> float:
    """ln of the smallest value that rounds to inf (harness/dtypes.py)."""
    return edges(dtype).log_overflow_edge


def _underflow_gap(dtype: torch.dtype) -> float:
    """-ln(min_subnormal / 2): exp(-x) rounds to 0 beyond it."""
    return -edges(dtype).log_min_subnormal


def _first_crossing(q: np.ndarray, slope: float, target: float) -> float:
    """Smallest s >= 0 with f(s) = logsumexp(s * q) + slope * s >= target.

    f is convex and increasing for s > 0 (q is symmetric about 0), so Newton's method started
    to the right of the root, at s0 = target / (max q + slope) where f(s0) >= target already,
    decreases monotonically onto it: a few passes over q instead of a bisection's fifty."""
    if math.log(len(q)) >= target:
        return 0.0
    s = target / (float(q.max()) + slope)
    for _ in range(100):
        a = s * q
        top = a.max()
        w = np.exp(a - top)
        total = w.sum()
        f = top + math.log(total) + slope * s
        df = float(w @ q) / total + slope
        step = (f - target) / df
        s -= step
        if step <= 1e-12 * s:
            break
    return s


@functools.lru_cache(maxsize=1024)
def predicted_scale(mechanism: str, dtype: str, num_classes: int, batch_size: int = 1) -> float:
    """The logit scale at which `mechanism` first happens in `dtype`.

    batch_size=1: a median row; batch_size=B: the worst of B rows (extreme logit m_{B*C})."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"no prediction for mechanism {mechanism!r}: known {', '.join(MECHANISMS)}")
    q = _quantiles(num_classes, median_max_normal(num_classes * batch_size))
    if mechanism == "sum_overflow":
        return _first_crossing(q, 0.0, log_overflow_edge(DTYPES[dtype]))
    underflow = _underflow_gap(DTYPES[dtype])
    if mechanism == "target_prob_underflow":  # only p[y] is read; a random y sits at logit ~0
        return _first_crossing(q, 0.0, underflow)
    return _first_crossing(q, float(q[-1]), underflow)  # the smallest logit sits at -max


def breaking_variants(names: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    """{variant: its failure mechanisms} for the registered variants that declare some (of
    `names` only, when given), in registry order."""
    from harness.cross_entropy.variants import REGISTRY

    wanted = None if names is None else set(names)
    return {
        v.name: v.breaks_by for v in REGISTRY.values() if v.breaks_by and (wanted is None or v.name in wanted)
    }


def theory_table(
    dtypes: list[str],
    class_counts: list[int],
    batch_sizes: list[int] | None = None,
    variants: dict[str, tuple[str, ...]] | None = None,
) -> pd.DataFrame:
    """One row per (dtype, num_classes, variant, mechanism) prediction, for `variants`
    ({name: mechanisms}; default: every registered variant that declares mechanisms).

    Columns: dtype, num_classes, variant, mechanism, predicted_scale (median row), first
    (True for the mechanism that fails first for that variant), and with batch_sizes also
    batch_size and predicted_scale_batch (worst of B rows), one row per batch size."""
    variants = breaking_variants() if variants is None else variants
    rows = []
    for dtype in dtypes:
        for c in class_counts:
            for variant, mechanisms in variants.items():
                scales = {m: predicted_scale(m, dtype, c) for m in mechanisms}
                first = min(scales, key=scales.get)
                for m, s in scales.items():
                    base = {
                        "dtype": dtype,
                        "num_classes": int(c),
                        "variant": variant,
                        "mechanism": m,
                        "predicted_scale": s,
                        "first": m == first,
                    }
                    if batch_sizes:
                        for b in batch_sizes:
                            rows.append(
                                {
                                    **base,
                                    "batch_size": int(b),
                                    "predicted_scale_batch": predicted_scale(m, dtype, c, b),
                                }
                            )
                    else:
                        rows.append(base)
    return pd.DataFrame(rows)


def dtype_edges_table(dtypes: list[str]) -> pd.DataFrame:
    """Per dtype: max, tiny, min_subnormal, u, log_max, log_overflow_edge, log_min_subnormal
    (exp(x) rounds to 0 below it) and underflow_gap = -log_min_subnormal (the largest
    LSE - z a probability survives), all from torch.finfo."""
    rows = []
    for name in dtypes:
        dt = DTYPES[name]
        fi = torch.finfo(dt)
        gap = _underflow_gap(dt)
        rows.append(
            {
                "dtype": name,
                "max": fi.max,
                "tiny": fi.tiny,
                "min_subnormal": edges(dt).min_subnormal,
                "u": fi.eps / 2,
                "log_max": math.log(fi.max),
                "log_overflow_edge": log_overflow_edge(dt),
                "log_min_subnormal": -gap,
                "underflow_gap": gap,
            }
        )
    return pd.DataFrame(rows)


def write_theory(run_dir: str | Path, rows_df: pd.DataFrame) -> Path | None:
    """Store the predictions for the dtypes, class counts, batch sizes and breaking variants
    present in rows_df as run_dir/_theory.json ({"edges": [...], "predictions": [...]});
    None if rows_df is empty."""
    if rows_df is None or len(rows_df) == 0:
        return None
    dtypes = [d for d in DTYPES if d in set(rows_df["dtype"])]  # fixed dtype order
    classes = sorted(int(c) for c in rows_df["num_classes"].unique())
    batches = sorted(int(b) for b in rows_df["batch_size"].unique())
    payload = {
        "edges": dtype_edges_table(dtypes).to_dict(orient="records"),
        "predictions": theory_table(
            dtypes,
            classes,
            batches,
            breaking_variants(list(rows_df["variant"].unique()) if "variant" in rows_df else None),
        ).to_dict(orient="records"),
    }
    path = Path(run_dir) / THEORY_FILE
    tmp = path.with_name(f".{THEORY_FILE}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def load_theory(run_dir: str | Path) -> pd.DataFrame | None:
    """The stored predictions of a run (theory_table's columns), or None if none were stored."""
    path = Path(run_dir) / THEORY_FILE
    if not path.is_file():
        path = Path(run_dir) / "theory.json"  # the name runs before the rows-only layout used
    if not path.is_file():
        return None
    return pd.DataFrame(json.loads(path.read_text())["predictions"])
