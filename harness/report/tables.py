"""The report's tables as DataFrames of display strings (the page escapes them, not this).

Each function returns a DataFrame, or a string saying why there is no data for it.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report import data
from harness.vocabulary import FAILED, JUDGED, NATIVE, STATUSES


def _sci(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2e}"


def _nan0(x) -> float:
    return 0.0 if x is None or pd.isna(x) else float(x)


def _ratio(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}×"


def accuracy(rows: pd.DataFrame, order: list[str]) -> "pd.DataFrame | str":
    """variant x dtype: median loss and gradient error (finite rows), the same over
    torch_cross_entropy's at the point, and how many rows were finite."""
    if rows.empty:
        return "no rows"
    fin = rows[rows["status"].isin(JUDGED)]
    out = []
    for dt in data.dtype_order(rows["dtype"].unique()):
        for v in order:
            all_ = rows[(rows["variant"] == v) & (rows["dtype"] == dt)]
            if all_.empty:
                continue
            f = fin[(fin["variant"] == v) & (fin["dtype"] == dt)]
            out.append(
                {
                    "dtype": dt,
                    "variant": v,
                    "loss error (median)": _sci(f["loss_rel_err"].median()),
                    "gradient error (median)": _sci(f["grad_rel_err"].median()),
                    f"loss error ÷ {NATIVE}": _ratio(f["err_vs_native"].median())
                    if "err_vs_native" in f
                    else "-",
                    f"gradient error ÷ {NATIVE}": _ratio(f["grad_err_vs_native"].median())
                    if "grad_err_vs_native" in f
                    else "-",
                    "finite rows": f"{len(f)}/{len(all_)}",
                }
            )
    return pd.DataFrame(out) if out else "no rows"


def fastest(rows: pd.DataFrame, order: list[str]) -> "pd.DataFrame | str":
    """Per (dtype, C, B, targets, mode): the variant with the smallest median time among rows
    whose status is ok at *every* point of that group (scales, seeds), its time and the
    spread of its samples (IQR); the next one is a "tie" when the two medians differ by less
    than the larger of their IQRs. Hard and soft targets are separate groups: a variant that
    takes class indices only must not win a cell by running on half the points.

    A variant that fails or is inaccurate anywhere in the group is not a recommendation."""
    if not data.has(rows, "time_median_s"):
        return "timing was off (accuracy-only run)"
    # Loss options and the logits' distribution change the problem: never pool across them.
    rows = rows.assign(_options=data.option_label(rows), _logits=rows.get("logits", "normal"))
    keys = ["dtype", "num_classes", "batch_size", "targets", "_logits", "_options", "mode"]
    good = rows.groupby(keys + ["variant"])["status"].agg(lambda s: bool((s == "ok").all())).rename("all_ok")
    med = rows.groupby(keys + ["variant"])["time_median_s"].median().rename("t")
    iqr = rows.groupby(keys + ["variant"])["time_iqr_s"].median().rename("iqr")
    contended = rows.get("contended", pd.Series(False, index=rows.index)).fillna(False).astype(bool)
    noisy = rows.assign(_c=contended).groupby(keys)["_c"].any().rename("noisy")
    both = pd.concat([good, med, iqr], axis=1).reset_index()
    both = both[both["all_ok"] & both["t"].notna()].merge(noisy.reset_index(), on=keys, how="left")
    if both.empty:
        return "no variant was ok at every point of any group"
    rank = {v: i for i, v in enumerate(order)}
    out = []
    for key, g in both.groupby(keys, sort=False):
        g = g.sort_values(["t", "variant"], key=lambda s: s.map(rank) if s.name == "variant" else s)
        best = g.iloc[0]
        runner = g.iloc[1] if len(g) > 1 else None
        dt, c, b, targets, logits, options, mode = key
        if bool(best["noisy"]):  # a ranking of contended timings ranks the other work
            best = best.copy()
            best["variant"], runner = "not ranked: timed under contention", None
            gap = "-"
        elif runner is None:
            gap = "-"
        elif runner["t"] - best["t"] < max(_nan0(best["iqr"]), _nan0(runner["iqr"])):
            gap = f"tie ({runner['t'] / best['t']:.2f}×, within the IQR)"
        else:
            gap = f"{runner['t'] / best['t']:.2f}×"
        out.append(
            {
                "dtype": dt,
                "C": f"{int(c):,}",
                "B": str(int(b)),
                "targets": targets,
                "logits": logits,
                "options": options,
                "mode": mode,
                "fastest ok variant": best["variant"],
                "median time (ms)": f"{best['t'] * 1e3:.3g}",
                "IQR (ms)": "-" if pd.isna(best["iqr"]) else f"{best['iqr'] * 1e3:.2g}",
                "next": "-" if runner is None else runner["variant"],
                "next is slower by": gap,
            }
        )
    df = pd.DataFrame(out)
    dorder = {d: i for i, d in enumerate(data.dtype_order(df["dtype"].unique()))}
    df["_d"] = df["dtype"].map(dorder)
    df["_c"] = df["C"].str.replace(",", "").astype(int)
    df = df.sort_values(["_d", "_c", "B", "targets", "logits", "options", "mode"]).drop(columns=["_d", "_c"])
    for col in ("logits", "options"):  # a column that never varies says nothing
        if df[col].nunique() == 1:
            df = df.drop(columns=col)
    return df.reset_index(drop=True)


def timing_conditions(rows: pd.DataFrame) -> "pd.DataFrame | str":
    """How far the run's timings can be trusted, in figures: rows timed under contention (and
    why, by reason), the samples' spread (IQR over median), the calibration's drift within a
    point, the thread count and the load beside it."""
    if not data.has(rows, "time_median_s"):
        return "timing was off (accuracy-only run)"
    timed = rows[rows["time_median_s"].notna()]
    if "contended" not in timed or timed["contended"].isna().all():
        return "these rows predate the timing-conditions columns"
    marked = timed[timed["contended"].fillna(False).astype(bool)]
    reasons = (
        marked["contention"].str.split("; ").explode().str.split(":").str[0].value_counts()
        if len(marked)
        else pd.Series(dtype=int)
    )
    spread = (timed["time_iqr_s"] / timed["time_median_s"]).median()
    drift = (timed["calib_after_s"] / timed["calib_before_s"]).dropna()
    drift_text = "-" if drift.empty else f"x{drift.min():.2f} to x{drift.max():.2f}"
    return pd.DataFrame(
        [
            {
                "timed rows": len(timed),
                "under contention": f"{len(marked)} ({len(marked) / len(timed):.0%})",
                "why": ", ".join(f"{n} {r}" for r, n in reasons.items()) or "-",
                "median spread (IQR / median)": f"{spread:.1%}",
                "calibration drift in a point": drift_text,
                "threads": ", ".join(str(int(t)) for t in sorted(timed["num_threads"].dropna().unique()))
                or "-",
                "other runnable tasks (median)": _fmt_load(timed.get("runnable_others")),
            }
        ]
    )


def _fmt_load(col: "pd.Series | None") -> str:
    if col is None or col.isna().all():
        return "-"
    return f"{col.median():.2g}"


def timing_sentence(rows: pd.DataFrame) -> str:
    """The report's one line on its timings: trustworthy, or how noisy and what to do."""
    if not data.has(rows, "time_median_s") or "contended" not in rows:
        return ""
    timed = rows[rows["time_median_s"].notna()]
    marked = int(timed["contended"].fillna(False).astype(bool).sum())
    spread = (timed["time_iqr_s"] / timed["time_median_s"]).median()
    if not marked:
        return f"Timings: no row was timed under contention; the samples' median spread is {spread:.1%}."
    return (
        f"Timings are noisy: {marked} of {len(timed)} timed rows ({marked / len(timed):.0%}) were "
        f"timed under contention (median spread {spread:.1%}); they are not ranked. Stop the "
        "other work (or run where nothing else does), or lower num_threads, and run again."
    )


def status_counts(rows: pd.DataFrame, order: list[str]) -> "pd.DataFrame | str":
    """variant x status: number of rows."""
    if rows.empty:
        return "no rows"
    kinds = [s for s in STATUSES if s in set(rows["status"])] + sorted(set(rows["status"]) - set(STATUSES))
    counts = rows.groupby(["variant", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=[v for v in order if v in counts.index], columns=kinds, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index().astype(str)


def failures(rows: pd.DataFrame, order: list[str], limit: int = 50) -> "pd.DataFrame | str":
    """Rows that did not run (error, oom, unsupported): the point and the message, one line
    per distinct (variant, status, message), at most `limit` lines."""
    bad = rows[rows["status"].isin(FAILED)] if len(rows) else rows
    if bad.empty:
        return "no row failed to run"
    g = (
        bad.groupby(["variant", "status", "message"], dropna=False)
        .agg(
            rows=("status", "size"),
            dtypes=("dtype", lambda s: ", ".join(data.dtype_order(s.unique()))),
            classes=("num_classes", lambda s: ", ".join(str(int(c)) for c in sorted(s.unique()))),
        )
        .reset_index()
    )
    rank = {v: i for i, v in enumerate(order)}
    g = g.sort_values("variant", key=lambda s: s.map(rank)).head(limit)
    g["message"] = g["message"].fillna("")
    return g[["variant", "status", "rows", "dtypes", "classes", "message"]].astype(str)


def dtype_edges(rows: pd.DataFrame) -> "pd.DataFrame | str":
    """Per dtype present: where exp() overflows and underflows, and u (harness.cross_entropy.theory)."""
    mod, why = data.theory_module()
    if mod is None:
        return why
    dtypes = [d for d in data.dtype_order(rows["dtype"].unique()) if d in data.DTYPES] if len(rows) else []
    if not dtypes:
        return "no rows"
    try:
        t = mod.dtype_edges_table(dtypes)
    except Exception as exc:
        return f"the theory failed ({type(exc).__name__}: {exc})"
    fmt = {c: (lambda x: f"{x:.4g}") for c in t.columns if c != "dtype"}
    return pd.DataFrame({c: t[c].map(fmt[c]) if c in fmt else t[c] for c in t.columns})


def predictions(theory: pd.DataFrame | None, why: str) -> "pd.DataFrame | str":
    """The predicted failing scales (median row), one row per dtype, C and variant."""
    if theory is None:
        return why
    cols = ["dtype", "num_classes", "variant", "mechanism", "predicted_scale"]
    if not set(cols) <= set(theory.columns):
        return "the stored theory lacks the expected columns"
    t = theory[cols].drop_duplicates()
    t = t.assign(predicted_scale=t["predicted_scale"].map(lambda x: f"{x:.3g}"))
    dorder = {d: i for i, d in enumerate(data.dtype_order(t["dtype"].unique()))}
    t = t.sort_values(
        ["dtype", "num_classes", "variant", "mechanism"],
        key=lambda s: s.map(dorder) if s.name == "dtype" else s,
    )
    return t.astype(str).reset_index(drop=True)
