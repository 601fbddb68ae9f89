"""The vocabulary-parallel section (family=vocab_parallel_cross_entropy rows): per size, dtype,
loss options and tp, each variant's status, errors over their bounds, whether the ranks agreed,
the collectives it was counted making, their modelled time on the stated link, and its time.

The errors are shown over their bounds (1 is the verdict's line), so a tp = 4 row reads against
a tp = 1 row of the same variant: sharding should not move them. The modelled time is what
the counted collectives cost on the link (`link_gbps`), not the CPU's loopback: the time column
of a CPU run is gloo's latency between processes, and says little about a GPU."""

from __future__ import annotations

import math

import pandas as pd

from harness.report import data

FAMILY = "vocab_parallel_cross_entropy"


def vocab_parallel_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return data.family_rows(rows, FAMILY)


def _ratio(err, tol) -> str:
    if err is None or tol is None or pd.isna(err) or pd.isna(tol) or not tol > 0:
        return "-"
    return f"{err / tol:.2f}"


def _int(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{int(x):,}"


def vocab_parallel_table(rows: pd.DataFrame, order: list[str]) -> "pd.DataFrame | str":
    vp = vocab_parallel_rows(rows)
    vp = vp[(vp["mode"] == "fwd_bwd") & (vp["status"] != "unsupported")] if len(vp) else vp
    if vp.empty:
        return f"no fwd_bwd rows of family={FAMILY} that ran"
    vp = vp.assign(_options=data.option_label(vp))
    rank = {v: i for i, v in enumerate(order)}
    out = []
    keys = ["batch_size", "num_classes", "dtype", "_options", "tp"]
    for (n, v, dtype, label, tp), g in vp.groupby(keys, sort=True):
        for _, r in g.sort_values("variant", key=lambda s: s.map(rank)).iterrows():
            t, model, model8 = r.get("time_median_s"), r.get("comm_model_s"), r.get("comm_model_tp8_s")
            out.append(
                {
                    "N × V": f"{int(n)}\u00a0×\u00a0{int(v):,}",
                    "dtype": dtype,
                    "options": label,
                    "tp": int(tp),
                    "variant": r["variant"],
                    "status": r["status"],
                    "loss err ÷ bound": _ratio(r.get("loss_rel_err"), r.get("loss_tolerance")),
                    "grad err ÷ bound": _ratio(r.get("grad_rel_err"), r.get("grad_tolerance")),
                    "ranks agree": "-" if pd.isna(r.get("rank_loss_spread")) else r["rank_loss_spread"] == 0,
                    "collectives fwd + bwd": (
                        "-"
                        if pd.isna(r.get("collectives_fwd"))
                        else f"{int(r['collectives_fwd'])} + {int(r['collectives_bwd'])}"
                    ),
                    "bytes fwd + bwd": (
                        "-"
                        if pd.isna(r.get("collective_bytes_fwd"))
                        else f"{_int(r['collective_bytes_fwd'])} + {_int(r['collective_bytes_bwd'])}"
                    ),
                    "modelled comm (µs)": "-" if pd.isna(model) else f"{model * 1e6:.3g}",
                    "… at tp = 8 (µs)": "-" if pd.isna(model8) else f"{model8 * 1e6:.3g}",
                    "time (ms)": "-" if pd.isna(t) else f"{t * 1e3:.3g}",
                }
            )
    return pd.DataFrame(out)
