"""The figures of what each variant costs, against the number of classes C: time per call
(figure 4, speed), GB/s against the device's copy bandwidth (throughput) and peak extra memory
(5). Each is a seaborn.objects line figure, one line per variant and a panel per mode and
dtype, drawn by `_lines_by_mode_and_dtype`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn.objects as so
from matplotlib.figure import Figure

from harness.report import data
from harness.report.plotting import Context, Result, draw_on, largest_batch, suptitle, with_data
from harness.vocabulary import MODES, NATIVE

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
    draw_on(fig, plot, xlog=True)
    suptitle(fig, *title)
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
    batch = largest_batch(df)
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
    return with_data(fig, q)


def throughput(ctx: Context) -> "Result":
    df = ctx.rows
    if not data.has(df, "gbps"):
        return "timing was off (accuracy-only run): no GB/s"
    df = df[df["gbps"].notna()]
    batch = largest_batch(df)
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
    return with_data(fig, g)


# --- 5. memory ----------------------------------------------------------------------------


MEMORY_DODGE = 1.03  # per variant, along the log C axis: 15 variants span 1.5x, under one C step


def memory(ctx: Context) -> "Result":
    df = ctx.rows
    if not data.has(df, "peak_mem_bytes"):
        return "memory measurement was off"
    df = df[df["peak_mem_bytes"].notna() & (df["peak_mem_bytes"] > 0)]
    if df.empty:
        return "no positive peak-memory values"
    batch = largest_batch(df)
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
    return with_data(fig, m)
