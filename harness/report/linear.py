"""The fused linear + cross-entropy section (family=linear_cross_entropy rows): per size, dtype
and loss options, which implementation is fastest, what each holds in memory against the floor
of dH + dW, and how far its gradients are from float64.

Memory floor: a forward+backward must write dH [N, D] and dW [V, D] in the input dtype, so no
implementation can peak below their bytes; the materialised forms add the [N, V] logits (and
their gradient), which is what the fused ones exist to avoid.

Rows with different loss options (or with and without a bias) measure different losses: they
are never ranked against each other. Each (size, dtype, options) is a group of its own, named
in an "options" column when the run has more than the plain loss; the variants that do not
honour a group's options are named in the caption instead of filling it with `unsupported`
rows. The per-option tables (error off -> on, time on / off) are harness/report/options.py's.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report import data

_SIZE = ["batch_size", "hidden_size", "num_classes", "dtype"]


def linear_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the linear family (the `family` column: results.load fills it for files
    written before it)."""
    return data.family_rows(rows, "linear_cross_entropy")


def _sci(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1e}"


def _fwd_bwd(rows: pd.DataFrame) -> pd.DataFrame:
    lin = linear_rows(rows)
    lin = lin[lin["mode"] == "fwd_bwd"]
    return lin.assign(_options=data.option_label(lin)) if len(lin) else lin


def unsupported(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Per options label: the variants that did not run there because they do not honour it."""
    lin = _fwd_bwd(rows)
    if lin.empty:
        return {}
    skipped = lin[lin["status"] == "unsupported"]
    return {label: sorted(set(g["variant"])) for label, g in skipped.groupby("_options")}


def linear_table(rows: pd.DataFrame, order: list[str]) -> "pd.DataFrame | str":
    lin = _fwd_bwd(rows)
    if lin.empty:
        return "no fwd_bwd rows of family=linear_cross_entropy"
    lin = lin[lin["status"] != "unsupported"]
    if lin.empty:
        return "every fwd_bwd row of family=linear_cross_entropy is unsupported"
    labels = set(lin["_options"])
    show_options = labels != {"plain"}
    show_bias = data.has(lin, "grad_bias_rel_err")
    rank = {v: i for i, v in enumerate(order)}
    dorder = {d: i for i, d in enumerate(data.dtype_order(lin["dtype"].unique()))}
    lin = lin.assign(_plain=lin["_options"] != "plain", _d=lin["dtype"].map(dorder))
    out = []
    keys = ["batch_size", "hidden_size", "num_classes", "_d", "_plain", "_options"]
    for key, g in lin.groupby(keys, sort=True):
        n, d, v = key[:3]
        dtype, label = g["dtype"].iloc[0], key[-1]
        floor_bytes = (n * d + v * d) * data.logit_bytes(dtype)  # dH + dW in the input dtype
        timed = g[g["status"].isin(("ok", "inaccurate")) & g["time_median_s"].notna()]
        fastest = timed["time_median_s"].min() if len(timed) else math.nan
        for _, r in g.sort_values("variant", key=lambda s: s.map(rank)).iterrows():
            t, mem = r["time_median_s"], r["peak_mem_bytes"]
            row = {
                # no-break spaces: the size stays on one line of its cell
                "N × D × V": f"{int(n)}\u00a0×\u00a0{int(d)}\u00a0×\u00a0{int(v):,}",
                "dtype": dtype,
                **({"options": label} if show_options else {}),
                "variant": r["variant"],
                "status": r["status"],
                "fwd_bwd time (ms)": "-" if pd.isna(t) else f"{t * 1e3:.3g}",
                "÷ fastest": "-" if pd.isna(t) or not fastest > 0 else f"{t / fastest:.2f}×",
                "peak extra memory (MB)": "-" if pd.isna(mem) else f"{mem / 1e6:.3g}",
                "÷ (dH + dW)": "-" if pd.isna(mem) else f"{mem / floor_bytes:.2f}×",
                "dH error": _sci(r.get("grad_hidden_rel_err")),
                "dW error": _sci(r.get("grad_weight_rel_err")),
                **({"db error": _sci(r.get("grad_bias_rel_err"))} if show_bias else {}),
                "loss error": _sci(r.get("loss_rel_err")),
            }
            out.append(row)
    return pd.DataFrame(out)
