"""One function per figure of the report. Each takes a `Context` and returns a matplotlib
Figure, or a string saying why there is no data for it (never raises on a thin run).

Conventions shared by every figure: a title phrased as the question the figure answers,
units on every axis, variants in the fixed registry order with fixed colours
(`data.styles`), and variants whose formula is wrong drawn dashed and named "(wrong formula)".

The line figures (speed, throughput, memory, repeated softmax) are seaborn.objects plots drawn
onto a Figure made here: seaborn makes the panels and the one legend, beside the panels. The
others use matplotlib itself (each says why), their legend below the panels where they have
several. Nothing touches pyplot's global state: the report draws many figures in one
process, and the tests more.
"""

from __future__ import annotations

import functools
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import seaborn.objects as so
from cycler import cycler
from matplotlib.figure import Figure

from harness.report import data
from harness.vocabulary import FAILED, JUDGED, MODES, NATIVE, STATUSES

Result = "Figure | str"

MECHANISM_STYLE = {  # predicted edges in figure 1, one per mechanism (harness/cross_entropy/mechanisms.py)
    "sum_overflow": dict(color="#e6550d", linestyle="-", label="predicted: the sum overflows"),
    "prob_underflow": dict(color="#756bb1", linestyle="--", label="predicted: a probability underflows"),
    "target_prob_underflow": dict(
        color="#31a354", linestyle=":", label="predicted: the target's probability underflows"
    ),
}
NONFINITE_COLOR = "#d62728"


@dataclass
class Context:
    """What every figure reads: the rows, the run directory and the fixed variant styles."""

    run_dir: Path
    rows: pd.DataFrame
    order: list[str] = field(default_factory=list)
    style: dict = field(default_factory=dict)
    studies: tuple[Path, ...] = ()  # folders holding study tables (study-NAME.parquet)

    @functools.cached_property
    def theory(self) -> tuple[pd.DataFrame | None, str]:
        """(predictions, reason when None), computed once for figures 1 and 2."""
        return data.theory_points(self.run_dir, self.rows)

    @classmethod
    def of(cls, run_dir: Path, rows: pd.DataFrame, studies: tuple[Path, ...] = ()) -> "Context":
        order = data.variant_order(rows["variant"].dropna().unique()) if len(rows) else []
        return cls(Path(run_dir), rows, order, data.styles(order), tuple(studies))


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], layout: str = "constrained", **kw
):
    """A figure outside pyplot's global state: importing the report chooses no backend, and
    saving renders with Agg whatever the user's display (the same files on CI and laptops)."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def boundary_variants(ctx: "Context") -> list[str]:
    """The variants of the rows that declare a failure mechanism (registry `breaks_by`)."""
    return [v for v in ctx.order if ctx.style[v].unstable]


def _with_data(fig: Figure, data_frame: pd.DataFrame) -> Figure:
    """Attach the numbers a figure draws: the report writes them as a CSV beside the image."""
    fig.harness_data = data_frame
    return fig


# Seaborn's whitegrid look at 0.9 of the notebook sizes: ~10 pt text, 15 px at the report's dpi.
THEME = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.9)}


def theme():
    """THEME for the figures drawn with matplotlib itself (no global state is changed);
    seaborn.objects figures take it through `Plot.theme`."""
    return plt.rc_context(THEME)


def finish(fig) -> None:
    """Drop minor tick labels on log axes that span a decade or more: the major labels
    (10^k) already say where the values are, and measuring every minor label's text is most
    of the time a multi-panel figure takes to draw. Narrower log axes keep them, since they
    may have no major tick at all."""
    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(lim)
            if axis.get_scale() == "log" and lo > 0 and hi / lo >= 10:
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _style_ticklabels(ctx: Context, labels) -> None:
    by_label = {st.label: st for st in ctx.style.values()}
    for label in labels:
        st = by_label.get(label.get_text())
        if st is not None and st.wrong:
            label.set_color("#888888")
            label.set_fontstyle("italic")


def _legend_below(fig, handles, labels, ncol: int = 4) -> None:
    # One legend for the whole figure, under the panels, so no panel's marks are hidden (the
    # figures matplotlib draws; seaborn.objects places its own).
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(labels)), frameon=False)


def _collect_legend(axes) -> tuple[list, list]:
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen.keys())


def _suptitle(fig: Figure, question: str, details: str) -> None:
    """The question on the first line, the details wrapped to the figure's width below it (a
    line wider than the figure is cut off at both edges)."""
    chars = int(fig.get_figwidth() * 12)  # ~6 pt per character at the title's 13 pt
    fig.suptitle("\n".join([question, *textwrap.wrap(details, chars)]))


def _largest_batch(df: pd.DataFrame) -> int:
    return int(df["batch_size"].max())


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
            _style_ticklabels(ctx, ax.get_yticklabels())
        ax0 = axes[0][0]
        ax0.set_ylim(len(order) - 0.5, -0.5)
        for ax in axes[-1]:  # per panel: a figure-wide label would sit on the legend
            ax.set_xlabel("logit scale s (log axis)")
        cbar = fig.colorbar(sc, ax=axes, shrink=0.8, pad=0.02, extend="max")
        cbar.set_label("log10 relative error of the loss\n(median over seeds, batches, targets, modes)")
        fig.suptitle("Where does each formula stop giving a finite loss, and how accurate is it before that?")
        handles, labels = _collect_legend(axes)
        _legend_below(fig, handles, labels, ncol=3)
    return _with_data(fig, cells)


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
    batch = _largest_batch(df)
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
        handles, labels = _collect_legend(axes)
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], color="#444444"), Line2D([], [], color="#444444", linestyle=":")]
        labels += ["predicted, median row", f"predicted, worst of B = {batch} rows"]
        fig.suptitle("At what logit scale do the naive formulas first return inf or NaN, as C grows?")
        _legend_below(fig, handles, labels, ncol=3)
    return _with_data(fig, first)


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
        _style_ticklabels(ctx, axes[0][0].get_yticklabels())
        fig.suptitle(
            "How accurate is each variant in each dtype? (dimensionless relative errors; darker = larger)"
        )
    cols = [c for c, _ in panels]
    return _with_data(fig, df.groupby(["variant", "dtype"])[cols].median().reset_index())


# --- 4. speed -----------------------------------------------------------------------------


def _pooled_quartiles(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Quartiles of every timed sample of the rows sharing `keys` (the speed figure leaves one
    row per key: the band is then that point's own interquartile range)."""

    def q(group: pd.DataFrame) -> pd.Series:
        samples = [s for lst in group["time_samples_s"] if lst is not None for s in lst]
        if not samples:
            samples = list(group["time_median_s"].dropna())
        a = np.asarray(samples, dtype=float)
        return pd.Series({"q25": np.percentile(a, 25), "median": np.median(a), "q75": np.percentile(a, 75)})

    return df.groupby(keys)[["time_samples_s", "time_median_s"]].apply(q).reset_index()


def _draw_on(fig: Figure, plot: so.Plot, *, xlog: bool, rc: dict | None = None) -> None:
    """Draw a seaborn.objects plot onto `fig` in the report's theme, y on a log axis.

    The legend goes at 0.98 of the figure's width, left-aligned there (seaborn's place for it
    beside a figure it did not make): the panels keep to the left of that, and the report
    saves each figure with everything drawn outside it (bbox_inches="tight")."""
    plot.layout(extent=(0, 0, 0.97, 1)).theme(rc or THEME).on(fig).plot()
    # Log axes from matplotlib rather than seaborn's `.scale(y="log")`: matplotlib's label the
    # minor ticks of a panel spanning less than a decade (seaborn's label decades only, which
    # can leave such a panel one label or none), and seaborn 0.13 does not put a Band's
    # ymin/ymax given beside a y through its log transform.
    for ax in fig.axes:
        ax.set_yscale("log")
        if xlog:
            ax.set_xscale("log")


def _variant_scales(ctx: Context, variants) -> dict:
    """`Plot.scale` arguments that give each variant its fixed colour (`data.styles`, keyed by
    registry position, so the same in every figure) and wrong formulas a dashed line; both map
    the `label` column, so seaborn merges them into one legend entry per variant."""
    labels = [ctx.style[v].label for v in variants]
    by_label = {ctx.style[v].label: ctx.style[v] for v in variants}
    return dict(
        color=so.Nominal({lab: st.color for lab, st in by_label.items()}, order=labels),
        linestyle=so.Nominal({lab: "--" if st.wrong else "-" for lab, st in by_label.items()}, order=labels),
    )


@dataclass(frozen=True)
class Reference:
    """A line drawn in every panel next to the variants (the copy bandwidth, one copy of the
    logits): rows of dtype, mode, num_classes and y, named once in the legend."""

    rows: pd.DataFrame
    label: str
    linestyle: str


def _lines_by_mode_and_dtype(
    ctx: Context,
    df: pd.DataFrame,
    *,
    y: str,
    y_label: str,
    title: tuple[str, str],
    band: tuple[str, str] | None = None,
    references: tuple[Reference, ...] = (),
) -> Figure:
    """One line per variant against C (both axes log): a panel per mode (rows) and dtype
    (columns), drawn, faceted and given its one legend by seaborn.objects.

    `title`: (question, details); `band`: the (low, high) columns of a shaded band around
    each line. `df` needs the columns variant, dtype, mode, num_classes and `y`."""
    modes = [m for m in MODES if m in set(df["mode"])] + sorted(set(df["mode"]) - set(MODES))
    dtypes = data.dtype_order(df["dtype"].unique())
    variants = [v for v in ctx.order if v in set(df["variant"])]
    lines = df.assign(label=df["variant"].map(lambda v: ctx.style[v].label))
    # The legend (~3.5 in) sits right of the panels, and the page shows figures at most
    # 1,232 px (11.2 in at the report's dpi) wide: panels 3.4 in wide and taller than wide
    # keep three dtypes and the legend at ~0.77 of their size on the page (text ~12 px).
    fig = Figure(figsize=(3.4 * len(dtypes) + 0.6, 3.5 * len(modes) + 0.9), layout="constrained")
    plot = so.Plot(lines, x="num_classes", y=y, color="label", linestyle="label").facet(
        col="dtype", row="mode", order={"col": dtypes, "row": modes}
    )
    if band is not None:
        plot = plot.add(so.Band(alpha=0.12), ymin=band[0], ymax=band[1], legend=False)
    plot = plot.add(so.Line(marker="o", pointsize=4))
    for ref in references:
        # A layer with its own data takes from it only the variables it names; any other (the
        # panel, x) would be joined from the variants' rows by index, so every one is named.
        plot = plot.add(
            so.Line(color="black", linestyle=ref.linestyle, linewidth=1),
            data=ref.rows,
            x="num_classes",
            y="y",
            col="dtype",
            row="mode",
            color=None,
            linestyle=None,
            label=ref.label,
        )
    # y not shared: fwd and fwd_bwd, fp16 and fp32 differ by more than a decade.
    plot = plot.scale(**_variant_scales(ctx, variants)).share(y=False)
    plot = plot.label(x="number of classes C (log axis)", y=y_label, color="variant", linestyle="variant")
    _draw_on(fig, plot, xlog=True)
    _suptitle(fig, *title)
    return fig


SPEED_LINES = 6  # lines per speed panel: more and the bands hide each other (every variant: the CSV)


def _fastest_per_panel(q: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per (dtype, mode): the n variants with the smallest geometric-mean median over C, the
    native op always among them (the reference every other is read against)."""
    keep = []
    for _, panel in q.groupby(["dtype", "mode"]):
        score = panel.groupby("variant")["median"].apply(lambda s: float(np.exp(np.log(s).mean())))
        chosen = list(score.sort_values().index[:n])
        if NATIVE in score.index and NATIVE not in chosen:
            chosen = chosen[: n - 1] + [NATIVE]
        keep.append(panel[panel["variant"].isin(chosen)])
    return pd.concat(keep) if keep else q


def _one_point_per_vertex(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the smallest logit scale and the first seed (of the plain loss on normal
    logits, when the run has them): one point for each (variant, dtype, mode, C)."""
    if data.has(df, "reduction"):
        plain = df[data.option_label(df) == "plain"]
        df = plain if len(plain) else df
    if data.has(df, "logits") and "normal" in set(df["logits"]):
        df = df[df["logits"] == "normal"]
    df = df[df["logit_scale"] == df["logit_scale"].min()]
    return df[df["seed"] == df["seed"].min()]


def speed(ctx: Context) -> "Result":
    df = ctx.rows
    if not data.has(df, "time_median_s"):
        return "timing was off (accuracy-only run)"
    df = df[df["time_median_s"].notna()]
    batch = _largest_batch(df)
    df = df[df["batch_size"] == batch]
    # Soft targets cost 2-5x hard ones (a second [B, C] tensor): pooled, their samples would
    # stretch every band over both. Hard targets, what language models train with, when present.
    kind = "hard" if "hard" in set(df["targets"]) else str(df["targets"].iloc[0])
    df = df[df["targets"] == kind]
    # One point per line vertex, so the band is that point's own samples, not a pool across
    # logit scales (s = 100 runs other code paths: NaN handling, saturated exps), seeds, logits
    # distributions or loss options: the smallest scale, the first seed, the plain loss.
    df = _one_point_per_vertex(df)
    scale = float(df["logit_scale"].min())
    q = _pooled_quartiles(df, ["variant", "dtype", "mode", "num_classes"])
    for col in ("q25", "median", "q75"):
        q[col] = q[col] * 1e3
    fig = _lines_by_mode_and_dtype(
        ctx,
        _fastest_per_panel(q, SPEED_LINES),
        y="median",
        y_label="time per call (ms, log axis)",
        title=(
            "How long does one call take as C grows?",
            f"(B = {batch}, {kind} targets, logit scale {scale:g}; the {SPEED_LINES} fastest per panel; "
            "band: the IQR of each point's samples)",
        ),
        band=("q25", "q75"),
    )
    return _with_data(fig, q)


def throughput(ctx: Context) -> "Result":
    df = ctx.rows
    if not data.has(df, "gbps"):
        return "timing was off (accuracy-only run): no GB/s"
    df = df[df["gbps"].notna()]
    batch = _largest_batch(df)
    df = df[df["batch_size"] == batch]
    g = df.groupby(["variant", "dtype", "mode", "num_classes"], as_index=False)["gbps"].median()
    copy = float(df["device_copy_gbps"].median()) if data.has(df, "device_copy_gbps") else float("nan")
    has_copy = math.isfinite(copy) and copy > 0
    references = ()
    if has_copy:
        ends = g.groupby(["dtype", "mode"])["num_classes"].agg(["min", "max"]).stack()
        at_copy = ends.rename("num_classes").reset_index()[["dtype", "mode", "num_classes"]].assign(y=copy)
        references = (Reference(at_copy, f"device copy: {copy:.1f} GB/s", "-."),)
    fig = _lines_by_mode_and_dtype(
        ctx,
        g,
        y="gbps",
        y_label="throughput (GB/s, log axis)",
        title=(
            "How close does each variant get to the device's copy bandwidth?",
            f"(B = {batch}, median over points; GB/s of the byte model at the median time: fwd_bwd "
            "moves 2L with hard targets, 3L with soft ones, L = the logits' bytes)",
        ),
        references=references,
    )
    if has_copy:
        # Right-hand axis in % of the copy bandwidth (the share of the floor reached), on the
        # last column only: each secondary axis costs as much to draw as a panel.
        for ax in fig.axes:
            if ax.get_subplotspec().is_last_col():
                sec = ax.secondary_yaxis(
                    "right", functions=(lambda y: 100 * y / copy, lambda p: p * copy / 100)
                )
                sec.set_ylabel("% of device copy bandwidth")
    return _with_data(fig, g)


# --- 5. memory ----------------------------------------------------------------------------


MEMORY_DODGE = 1.03  # per variant, along the log C axis: 15 variants span 1.5x, under one C step


def memory(ctx: Context) -> "Result":
    df = ctx.rows
    if not data.has(df, "peak_mem_bytes"):
        return "memory measurement was off"
    df = df[df["peak_mem_bytes"].notna() & (df["peak_mem_bytes"] > 0)]
    if df.empty:
        return "no positive peak-memory values"
    batch = _largest_batch(df)
    df = df[df["batch_size"] == batch]
    m = df.groupby(["variant", "dtype", "mode", "num_classes"], as_index=False)["peak_mem_bytes"].median()
    m["mib"] = m["peak_mem_bytes"] / 2**20

    # Variants that allocate the same bytes would draw one line over another: each is shifted
    # along the (log) C axis by a few percent, so every variant stays visible.
    present = [v for v in ctx.order if v in set(m["variant"])]
    shift = {v: MEMORY_DODGE ** (i - (len(present) - 1) / 2) for i, v in enumerate(present)}
    drawn = m.assign(num_classes=m["num_classes"] * m["variant"].map(shift))

    # B*C*bytes: one copy of the logits, at the measured C of each panel.
    panels = m[["dtype", "mode", "num_classes"]].drop_duplicates()
    logits = panels.assign(y=batch * panels["num_classes"] * panels["dtype"].map(data.logit_bytes) / 2**20)
    logits = logits[logits["y"] > 0]  # a dtype the harness does not know has no byte size
    fig = _lines_by_mode_and_dtype(
        ctx,
        drawn,
        y="mib",
        y_label="peak extra memory (MiB, log axis)",
        title=(
            "How much memory does each variant add beyond its inputs?",
            f"(B = {batch}, median over points; lines shifted along C so that equal ones stay visible)",
        ),
        references=(
            Reference(logits, "1× logits (B·C·bytes)", ":"),
            Reference(logits.assign(y=2 * logits["y"]), "2× logits", "-."),
        ),
    )
    return _with_data(fig, m)


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
    _draw_on(fig, plot, xlog=False, rc={**THEME, "axes.prop_cycle": cycler(color=["#444444"])})
    _suptitle(
        fig, "How fast does repeated softmax flatten to uniform?", "(median over seeds and start scales)"
    )
    return _with_data(fig, med)


# --- 7. summary: statuses -----------------------------------------------------------------

STATUS_COLORS = {
    "ok": "#4daf4a",
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
        _style_ticklabels(ctx, ax.get_yticklabels())
        ax.invert_yaxis()
        ax.set_xlabel("rows (points × modes)")
        ax.set_title("What happened to each variant across the run? (status of every row)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="status")
    return _with_data(fig, counts)
