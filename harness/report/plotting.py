"""What every figure of the report shares: the `Context` it reads, the theme, a Figure made
outside pyplot, legends, titles, the numbers attached for the CSV, and the drawing of a
seaborn.objects plot onto a Figure.

Nothing here touches pyplot's global state: the report draws many figures in one process,
and the tests more.
"""

from __future__ import annotations

import functools
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import seaborn.objects as so
from matplotlib.figure import Figure

from harness.report import data

Result = "Figure | str"


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


def with_data(fig: Figure, data_frame: pd.DataFrame) -> Figure:
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


def style_ticklabels(ctx: Context, labels) -> None:
    by_label = {st.label: st for st in ctx.style.values()}
    for label in labels:
        st = by_label.get(label.get_text())
        if st is not None and st.wrong:
            label.set_color("#888888")
            label.set_fontstyle("italic")


def legend_below(fig, handles, labels, ncol: int = 4) -> None:
    # One legend for the whole figure, under the panels, so no panel's marks are hidden (the
    # figures matplotlib draws; seaborn.objects places its own).
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(labels)), frameon=False)


def collect_legend(axes) -> tuple[list, list]:
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen.keys())


def suptitle(fig: Figure, question: str, details: str) -> None:
    """The question on the first line, the details wrapped to the figure's width below it (a
    line wider than the figure is cut off at both edges)."""
    chars = int(fig.get_figwidth() * 12)  # ~6 pt per character at the title's 13 pt
    fig.suptitle("\n".join([question, *textwrap.wrap(details, chars)]))


def largest_batch(df: pd.DataFrame) -> int:
    return int(df["batch_size"].max())


def draw_on(fig: Figure, plot: so.Plot, *, xlog: bool, rc: dict | None = None) -> None:
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
