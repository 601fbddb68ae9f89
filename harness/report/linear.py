"""The fused linear + cross-entropy section (family=linear_cross_entropy rows): per size and
dtype, which implementation is fastest, what each holds in memory against the floor of dH + dW,
and how far its gradients are from float64.

Memory floor: a forward+backward must write dH [N, D] and dW [V, D] in the input dtype, so no
implementation can peak below their bytes; the materialised forms add the [N, V] logits (and
their gradient), which is what the fused ones exist to avoid.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report import data

_SIZE = ["batch_size", "hidden_size", "num_classes", "dtype"]


def linear_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the linear family (cross-entropy rows hold hidden_size 0)."""
    if rows.empty or not data.has(rows, "hidden_size"):
        return rows.iloc[0:0]
    return rows[rows["hidden_size"].fillna(0) > 0]


def _sci(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1e}"


def linear_table(rows: pd.DataFrame, order: list[str]) -> "pd.DataFrame | str":
    lin = linear_rows(rows)
    lin = lin[lin["mode"] == "fwd_bwd"]
    if lin.empty:
        return "no fwd_bwd rows of family=linear_cross_entropy"
    rank = {v: i for i, v in enumerate(order)}
    out = []
    for (n, d, v, dtype), g in lin.groupby(_SIZE, sort=True):
        floor_bytes = (n * d + v * d) * data.logit_bytes(dtype)  # dH + dW in the input dtype
        timed = g[g["status"].isin(("ok", "inaccurate")) & g["time_median_s"].notna()]
        fastest = timed["time_median_s"].min() if len(timed) else math.nan
        for _, r in g.sort_values("variant", key=lambda s: s.map(rank)).iterrows():
            t, mem = r["time_median_s"], r["peak_mem_bytes"]
            out.append(
                {
                    "N × D × V": f"{int(n)} × {int(d)} × {int(v):,}",
                    "dtype": dtype,
                    "variant": r["variant"],
                    "status": r["status"],
                    "fwd_bwd time (ms)": "-" if pd.isna(t) else f"{t * 1e3:.3g}",
                    "÷ fastest": "-" if pd.isna(t) or not fastest > 0 else f"{t / fastest:.2f}×",
                    "peak extra memory (MB)": "-" if pd.isna(mem) else f"{mem / 1e6:.3g}",
                    "÷ (dH + dW)": "-" if pd.isna(mem) else f"{mem / floor_bytes:.2f}×",
                    "dH error": _sci(r.get("grad_hidden_rel_err")),
                    "dW error": _sci(r.get("grad_weight_rel_err")),
                    "loss error": _sci(r.get("loss_rel_err")),
                }
            )
    return pd.DataFrame(out)
