"""The figures of what each formula gets right: where the naive formula breaks (figure 1),
the failure boundary against C (2), the error heatmaps (3), how fast repeated softmax flattens
(6), and what happened to every row (7, the statuses).

Figures 1, 2, 3 and 7 use matplotlib itself (each says why), their legend below the panels
where they have several; the repeated-softmax figure is a seaborn.objects plot.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
import seaborn.objects as so
from cycler import cycler
from matplotlib.figure import Figure

from harness.report import data
from harness.report.plotting import (
    THEME,
    Context,
    Result,
    collect_legend,
    draw_on,
    largest_batch,
    legend_below,
    style_ticklabels,
    subplots,
    suptitle,
    theme,
    with_data,
)
from harness.vocabulary import FAILED, JUDGED, NATIVE, STATUSES

MECHANISM_STYLE = {  # predicted edges in figure 1, one per mechanism (harness/cross_entropy/mechanisms.py)
    "sum_overflow": dict(color="#e6550d", linestyle="-", label="predicted: the sum overflows"),
    "prob_underflow": dict(color="#756bb1", linestyle="--", label="predicted: a probability underflows"),
    "target_prob_underflow": dict(
        color="#31a354", linestyle=":", label="predicted: the target's probability underflows"
    ),
}
NONFINITE_COLOR = "#d62728"


def boundary_variants(ctx: "Context") -> list[str]:
    """The variants of the rows that declare a failure mechanism (registry `breaks_by`)."""
    return [v for v in ctx.order if ctx.style[v].unstable]


# --- 1. where the naive formula breaks ----------------------------------------------------


def breaks(ctx: Context) -> "Result":
    """Per dtype and class count: logit scale x variant, coloured by log10 relative error of
    the loss (median over seeds, batch sizes, targets and modes); non-finite cells marked.

    matplotlib, not seaborn.objects: a colour scale read off a colour bar (seaborn.objects
    has none), k/n notes on cells and the predicted edges as bars within a variant's row."""
    df = ctx.rows
    if df.empty or df["logit_scale"].nunique() == 0:
        return "no rows"
    df = df[~df["status"].isin(FAILED)]
    if df.empty:
        return "every row failed to run (error, oom or unsupported): nothing to colour"
    theory, _ = ctx.theory
    dtypes = data.dtype_order(df["dtype"].unique())
    classes = sorted(df["num_classes"].unique())
    order = [v for v in ctx.order if v in set(df["variant"])]
    ypos = {v: i for i, v in enumerate(order)}

    keys = ["dtype", "num_classes", "variant", "logit_scale"]
    finite = df[df["status"].isin(JUDGED)]
    err = finite.groupby(keys)["loss_rel_err"].median().rename("err")
    nonfin = df.assign(bad=df["status"] == "nonfinite").groupby(keys)["bad"].agg(["sum", "count"])
    cells = nonfin.join(err).reset_index()
    # Exact results (error 0, e.g. fp64 agreeing with its own reference) sit at the floor.
    cells["log_err"] = np.log10(cells["err"].clip(lower=1e-17))
    finite_vals = cells.loc[cells["sum"] == 0, "log_err"].dropna()
    vmin, vmax = (finite_vals.min(), finite_vals.max()) if len(finite_vals) else (-8.0, 0.0)
    # Colours stop at 100 % error: a wrong formula (errors of 10^2 and more) would otherwise
    # spend the whole scale and leave the correct variants one colour.
    vmax = min(vmax, 0.0)
    if vmin >= vmax:
        vmin = vmax - 1

    scales = sorted(df["logit_scale"].unique())
    pos = [s for s in scales if s > 0] or [1.0]
    xlo, xhi = min(pos) / 2.5, max(pos) * 2.5
    with theme():
        fig, axes = subplots(
            len(classes),
            len(dtypes),
            squeeze=False,
            sharex=True,
            sharey=True,
            layout="constrained",
            figsize=(3.4 * len(dtypes) + 2.6, 0.28 * len(order) * len(classes) + 1.6 + 0.5 * len(classes)),
        )
        sc = None
        for r, c in enumerate(classes):
            for k, dt in enumerate(dtypes):
                ax = axes[r][k]
                cell = cells[(cells["dtype"] == dt) & (cells["num_classes"] == c)]
                ok = cell[(cell["sum"] == 0) & cell["log_err"].notna()]
                sc = ax.scatter(
                    ok["logit_scale"].clip(lower=xlo),
                    ok["variant"].map(ypos),
                    c=ok["log_err"],
                    cmap="viridis",
                    vmin=vmin,
                    vmax=vmax,
                    marker="s",
                    s=110,
                    edgecolors="none",
                )
                bad = cell[cell["sum"] > 0]
                ax.scatter(
                    bad["logit_scale"].clip(lower=xlo),
                    bad["variant"].map(ypos),
                    marker="X",
                    s=90,
                    color=NONFINITE_COLOR,
                    label="non-finite loss (inf or NaN) in some rows",
                )
                for _, b in bad[bad["sum"] < bad["count"]].iterrows():
                    ax.annotate(
                        f"{int(b['sum'])}/{int(b['count'])}",
                        (max(b["logit_scale"], xlo), ypos[b["variant"]]),
                        xytext=(7, -3),
                        textcoords="offset points",
                        fontsize=6.5,
                        color=NONFINITE_COLOR,
                    )
                if theory is not None:
                    pred = theory[(theory["dtype"] == dt) & (theory["num_classes"] == c)]
                    for _, p in pred.iterrows():
                        s, mech = float(p["predicted_scale"]), p["mechanism"]
                        if p["variant"] not in ypos or not math.isfinite(s) or mech not in MECHANISM_STYLE:
                            continue
                        y = ypos[p["variant"]]
                        ax.plot([max(s, xlo)] * 2, [y - 0.45, y + 0.45], linewidth=2, **MECHANISM_STYLE[mech])
                ax.set_xscale("log")
                ax.set_xlim(xlo, xhi)
                ax.set_title(f"{dt}, C = {c:,}", fontsize=9)
                ax.grid(axis="y", visible=False)
        for ax in axes[:, 0]:
            ax.set_yticks(range(len(order)), [ctx.style[v].label for v in order])
            style_ticklabels(ctx, ax.get_yticklabels())
        ax0 = axes[0][0]
        ax0.set_ylim(len(order) - 0.5, -0.5)
        for ax in axes[-1]:  # per panel: a figure-wide label would sit on the legend
            ax.set_xlabel("logit scale s (log axis)")
        cbar = fig.colorbar(sc, ax=axes, shrink=0.8, pad=0.02, extend="max")
        cbar.set_label("log10 relative error of the loss\n(median over seeds, batches, targets, modes)")
        fig.suptitle("Where does each formula stop giving a finite loss, and how accurate is it before that?")
        handles, labels = collect_legend(axes)
        legend_below(fig, handles, labels, ncol=3)
    return with_data(fig, cells)


# --- 2. failure boundary vs class count ---------------------------------------------------


def boundary(ctx: Context) -> "Result":
    """First failing logit scale against C for the naive variants, measured (median and
    spread over seeds, targets, batch sizes and modes) and predicted by harness.cross_entropy.theory.

    matplotlib, not seaborn.objects: its legend names kinds of mark (measured, never failed,
    two predictions) across variants, where seaborn.objects would overlay every layer's mark
    in one entry per variant."""
    df = ctx.rows
    variants = boundary_variants(ctx) if len(df) else []
    if not variants:
        return "no variant in the rows declares a failure mechanism (registry breaks_by)"
    first = data.first_failing_scale(df, variants)
    dtypes = data.dtype_order(df["dtype"].unique())
    batch = largest_batch(df)
    theory, why = ctx.theory
    curve = None if theory is None else data.theory_curve(theory, batch)
    if first["first_failing"].isna().all() and curve is None:
        return f"no variant became non-finite at any measured scale, and no prediction: {why}"
    scales = sorted(df["logit_scale"].unique())
    with theme():
        fig, axes = subplots(
            1,
            len(dtypes),
            squeeze=False,
            sharey=True,
            layout="constrained",
            figsize=(4.3 * len(dtypes) + 0.6, 4.6),
        )
        for k, dt in enumerate(dtypes):
            ax = axes[0][k]
            for j, v in enumerate(variants):
                st = ctx.style[v]
                if curve is not None:
                    cv = curve[(curve["dtype"] == dt) & (curve["variant"] == v)].sort_values("num_classes")
                    ok = cv["predicted"].replace(0, np.nan)
                    ax.plot(cv["num_classes"], ok, color=st.color, linewidth=1.3, alpha=0.8)
                    if "predicted_batch" in cv:
                        ax.plot(
                            cv["num_classes"],
                            cv["predicted_batch"].replace(0, np.nan),
                            color=st.color,
                            linewidth=1.0,
                            linestyle=":",
                            alpha=0.9,
                        )
                m = first[(first["dtype"] == dt) & (first["variant"] == v)]
                jitter = 1.0 + 0.06 * (j - (len(variants) - 1) / 2)  # side by side, not on top
                agg = m.groupby("num_classes")["first_failing"].agg(["median", "min", "max", "count"])
                fails = agg[agg["count"] > 0]
                ax.errorbar(
                    fails.index * jitter,
                    fails["median"],
                    yerr=[fails["median"] - fails["min"], fails["max"] - fails["median"]],
                    fmt="o",
                    color=st.color,
                    capsize=3,
                    markersize=6,
                    label=f"{st.label}: measured",
                )
                never = m.groupby("num_classes")["first_failing"].count()
                never = never[never == 0].index
                if len(never):
                    top = m[m["num_classes"].isin(never)].groupby("num_classes")["max_scale"].max()
                    ax.scatter(
                        top.index * jitter,
                        top.values,
                        marker="^",
                        facecolors="none",
                        edgecolors=st.color,
                        s=60,
                        label="finite at every measured scale (edge above)",
                    )
            for s in scales:  # the measured grid: a measured edge can only sit on these
                ax.axhline(s, color="#cccccc", linewidth=0.6, zorder=0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(dt)
            ax.set_xlabel("number of classes C (log axis)")
        axes[0][0].set_ylabel("first non-finite logit scale s (log axis)")
        handles, labels = collect_legend(axes)
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], color="#444444"), Line2D([], [], color="#444444", linestyle=":")]
        labels += ["predicted, median row", f"predicted, worst of B = {batch} rows"]
        fig.suptitle("At what logit scale do the naive formulas first return inf or NaN, as C grows?")
        legend_below(fig, handles, labels, ncol=3)
    return with_data(fig, first)


# --- 3. accuracy --------------------------------------------------------------------------


def accuracy(ctx: Context) -> "Result":
    """variant x dtype heatmaps: median loss and gradient error, and the loss error over
    torch_cross_entropy's at the same point (finite rows only).

    seaborn's heatmap on matplotlib axes: seaborn.objects has no heatmap mark."""
    df = ctx.rows[ctx.rows["status"].isin(JUDGED)] if len(ctx.rows) else ctx.rows
    if df.empty:
        return "no finite results"
    panels = [
        (c, t)
        for c, t in (
            ("loss_rel_err", "median relative error\nof the loss"),
            ("grad_rel_err", "median relative error\nof the gradient (fwd_bwd)"),
            ("err_vs_native", f"loss error ÷ {NATIVE}'s\n(1 = as good as the native op)"),
        )
        if data.has(df, c)
    ]
    if not panels:
        return "no error columns hold values"
    order = [v for v in ctx.order if v in set(df["variant"])]
    dtypes = data.dtype_order(df["dtype"].unique())
    with theme():
        fig, axes = subplots(
            1,
            len(panels),
            squeeze=False,
            sharey=True,
            layout="constrained",
            figsize=(1.7 * len(dtypes) * len(panels) + 4.5, 0.5 * len(order) + 2.2),
        )
        for ax, (col, title) in zip(axes[0], panels):
            table = df.pivot_table(index="variant", columns="dtype", values=col, aggfunc="median")
            table = table.reindex(index=order, columns=dtypes)
            logt = np.log10(table.clip(lower=1e-17).astype(float))
            annot = table.map(lambda x: "-" if pd.isna(x) else f"{x:.1e}")
            sns.heatmap(
                logt,
                ax=ax,
                annot=annot,
                fmt="",
                cmap="mako_r",
                cbar=False,
                annot_kws={"fontsize": 10},  # 10 pt at 110 dpi: about 11 px digits
                linewidths=0.5,
                linecolor="white",
            )
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("dtype")
            ax.set_ylabel("")
        axes[0][0].set_yticks(np.arange(len(order)) + 0.5, [ctx.style[v].label for v in order], rotation=0)
        style_ticklabels(ctx, axes[0][0].get_yticklabels())
        fig.suptitle(
            "How accurate is each variant in each dtype? (dimensionless relative errors; darker = larger)"
        )
    cols = [c for c, _ in panels]
    return with_data(fig, df.groupby(["variant", "dtype"])[cols].median().reset_index())


# --- 6. repeated softmax ------------------------------------------------------------------


FLATTENING_SLOPE = "slope 1/C per step (theory)"


def flattening(ctx: Context) -> "Result":
    table, why = data.flattening(ctx.run_dir, ctx.studies)
    if table is None:
        return why
    table = table[table["dist_from_uniform"] > 0]  # exactly uniform: nothing to put on a log axis
    if table.empty:
        return "every recorded distance is 0"
    dtypes = data.dtype_order(table["dtype"].unique())
    classes = sorted(table["num_classes"].unique())
    names = {c: f"C = {c:,}" for c in classes}
    med = table.groupby(["dtype", "num_classes", "iteration"], as_index=False)["dist_from_uniform"].median()
    slopes = []
    for (dt, c), part in med.groupby(["dtype", "num_classes"]):
        # The Jacobian at uniform is (1/C)(I - 11^T/C): each step shrinks the distance by 1/C.
        part = part.sort_values("iteration")
        its = part["iteration"].to_numpy(dtype=float)
        ref = part["dist_from_uniform"].iloc[0] * float(c) ** -(its - its[0])
        keep = ref >= part["dist_from_uniform"].min() / 100
        slopes.append(
            pd.DataFrame(
                {"dtype": dt, "num_classes": c, "iteration": its[keep], "dist_from_uniform": ref[keep]}
            )
        )
    # A fresh index: seaborn aligns the columns it takes on it, so it must be unique.
    measured = med.assign(kind="measured")
    lines = pd.concat([measured, *(p.assign(kind=FLATTENING_SLOPE) for p in slopes)], ignore_index=True)
    lines["classes"] = lines["num_classes"].map(names)

    kinds = ["measured", FLATTENING_SLOPE]
    # Two columns at most (wrapped below): four dtypes in one row would be ~1,900 px wide.
    ncol = min(len(dtypes), 2)
    nrow = -(-len(dtypes) // ncol)
    fig = Figure(figsize=(3.8 * ncol + 0.6, 3.3 * nrow + 0.9), layout="constrained")
    plot = (
        so.Plot(
            lines,
            x="iteration",
            y="dist_from_uniform",
            color="classes",
            linestyle="kind",
            marker="kind",
            linewidth="kind",
        )
        .facet(col="dtype", order=dtypes, wrap=ncol if len(dtypes) > ncol else None)
        .add(so.Line(pointsize=3))
        .scale(
            color=so.Nominal(
                dict(zip(names.values(), sns.color_palette("flare", len(classes)))),
                order=list(names.values()),
            ),
            linestyle=so.Nominal(dict(zip(kinds, ["-", "--"])), order=kinds),
            marker=so.Nominal(dict(zip(kinds, ["o", ""])), order=kinds),
            linewidth=so.Nominal(dict(zip(kinds, [1.5, 1.0])), order=kinds),
        )
        .label(
            x="softmax applications (iteration)",
            y="distance from uniform 1/C (log axis)",
            color="classes",
            linestyle="",
            marker="",
            linewidth="",
        )
    )
    # The legend draws the entries of `kind` (measured, the slope) in the first colour of the
    # cycle: dark grey here, the colour of neither class count.
    draw_on(fig, plot, xlog=False, rc={**THEME, "axes.prop_cycle": cycler(color=["#444444"])})
    suptitle(
        fig, "How fast does repeated softmax flatten to uniform?", "(median over seeds and start scales)"
    )
    return with_data(fig, med)


# --- 7. summary: statuses -----------------------------------------------------------------

STATUS_COLORS = {
    "ok": "#4daf4a",
    "unjudged": "#b3de69",
    "inaccurate": "#ff7f00",
    "nonfinite": NONFINITE_COLOR,
    "no_reference": "#c7c7c7",
    "wrote_input": "#f781bf",
    "error": "#6a3d9a",
    "oom": "#a65628",
    "unsupported": "#999999",
}


def statuses(ctx: Context) -> "Result":
    """Rows per status, stacked per variant: one panel, nothing to facet, matplotlib's bars."""
    df = ctx.rows
    if df.empty:
        return "no rows"
    order = [v for v in ctx.order if v in set(df["variant"])]
    kinds = [s for s in STATUSES if s in set(df["status"])] + sorted(set(df["status"]) - set(STATUSES))
    counts = (
        df.groupby(["variant", "status"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=order, columns=kinds, fill_value=0)
    )
    with theme():
        fig, ax = subplots(layout="constrained", figsize=(9, 0.35 * len(order) + 1.8))
        left = np.zeros(len(order))
        for k in kinds:
            ax.barh(range(len(order)), counts[k], left=left, color=STATUS_COLORS.get(k, "#333333"), label=k)
            left += counts[k].to_numpy()
        ax.set_yticks(range(len(order)), [ctx.style[v].label for v in order])
        style_ticklabels(ctx, ax.get_yticklabels())
        ax.invert_yaxis()
        ax.set_xlabel("rows (points × modes)")
        ax.set_title("What happened to each variant across the run? (status of every row)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="status")
    return with_data(fig, counts)
