"""Build a run's report: draw every figure (PNG + SVG), fill the tables, write index.html.

`build_report(run_dir, out_dir)` is what `scripts/report.py` calls; tests call it directly.
A figure that cannot be drawn becomes a 'no data' note naming the reason, so one bad
section never costs the reader the others.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import matplotlib.pyplot as plt
import pandas as pd

from harness.report import data, figures, tables
from harness.report.linear import linear_rows, linear_table, unsupported
from harness.report.options import option_tables
from harness.report.page import Block, Section, render
from harness.report.vocab_parallel import vocab_parallel_rows, vocab_parallel_table
from harness.results import load

INDEX = "index.html"
PNG_DPI = 110  # ~1400 px wide for the widest figure: sharp on screen, ~100-200 kB per PNG


@dataclass(frozen=True)
class FigureSpec:
    stem: str  # file name without extension
    title: str
    draw: Callable[[figures.Context], object]  # -> Figure | reason string
    caption: str


FIGURES = {
    "breaks": FigureSpec(
        "fig1-where-naive-breaks",
        "Where the naive formula breaks",
        figures.breaks,
        "Logits are s·N(0,1) drawn in float64, then rounded to the dtype. "
        "Squares: median relative error of the loss where every row at that cell is finite. "
        "Red ×: at least one row returned inf or NaN (k/n: k of the n rows). Vertical bars: the "
        "scale at which harness.cross_entropy.theory predicts a median row to fail, by mechanism. A batch "
        "fails with its worst row, so measured failures can come before the bars.",
    ),
    "boundary": FigureSpec(
        "fig2-failure-boundary",
        "Failure boundary against class count",
        figures.boundary,
        "Dots: the smallest measured logit scale that gave a non-finite loss (median; bars span "
        "seeds, targets, batch sizes and modes). The true edge lies between it and the next "
        "smaller measured scale (grey lines: the measured grid). Lines: predicted edges; where "
        "naive_exp and softmax_log fail by the same mechanism (a probability underflows) their "
        "lines coincide.",
    ),
    "accuracy": FigureSpec(
        "fig3-accuracy",
        "Accuracy by variant and dtype",
        figures.accuracy,
        "Medians over every finite row (status ok or inaccurate). Errors are against float64 "
        "computed on the same rounded logits, so they measure the algorithm, not the storage.",
    ),
    "speed": FigureSpec(
        "fig4-speed",
        "Time against class count",
        figures.speed,
        "Time of one call; fwd_bwd includes the gradient with respect to the logits.",
    ),
    "throughput": FigureSpec(
        "fig4b-throughput",
        "Throughput against class count",
        figures.throughput,
        "GB/s from the harness's byte model (harness/cross_entropy/traffic.py) at the median time; the "
        "dash-dot line is the copy bandwidth measured on the device, the right axis the share of it.",
    ),
    "memory": FigureSpec(
        "fig5-memory",
        "Peak extra memory against class count",
        figures.memory,
        "Peak bytes allocated during one call above what existed before it. Dotted and dash-dot: "
        "one and two copies of the logits.",
    ),
    "flattening": FigureSpec(
        "fig6-repeated-softmax",
        "Repeated softmax",
        figures.flattening,
        "Each softmax application shrinks the distance from uniform by about 1/C "
        "(the Jacobian at the uniform point is (1/C)(I − 11ᵀ/C)); dashed lines show that slope.",
    ),
    "statuses": FigureSpec(
        "fig7-statuses",
        "Status of every row",
        figures.statuses,
        "ok: within the tolerance (the dtype's rounding carried through the point's conditioning); "
        "inaccurate: finite but beyond it; nonfinite: inf or NaN; no_reference: the rounded inputs "
        "have no finite float64 answer; wrote_input: wrote into its inputs undeclared; "
        "error / oom / unsupported: the call did not complete.",
    ),
}


def _draw(spec: FigureSpec, ctx: figures.Context, out: Path) -> Block:
    try:
        result = spec.draw(ctx)
    except Exception as exc:  # report the section as missing, keep the rest of the page
        print(f"report: figure {spec.stem} could not be drawn: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Block("nodata", spec.title, f"the figure could not be drawn ({type(exc).__name__}: {exc})")
    if isinstance(result, str):
        return Block("nodata", spec.title, result)
    try:
        figures.finish(result)
        # The layout is settled once and frozen: constrained layout measures every tick label
        # again on each draw, and both files are written from this one.
        result.draw_without_rendering()
        result.set_layout_engine("none")
        # Both files span everything drawn, seaborn's legend beside the panels included (it
        # lies past the figure's right edge); measured once, as bbox_inches="tight" would
        # measure it again, with another draw, for each file.
        box = result.get_tightbbox().padded(0.04)
        result.savefig(out / f"{spec.stem}.png", dpi=PNG_DPI, bbox_inches=box)
        numbers = getattr(result, "harness_data", None)
        if numbers is not None:  # the numbers behind the image, for anyone who wants to re-plot
            numbers.to_csv(out / f"{spec.stem}.csv", index=False)
        result.savefig(out / f"{spec.stem}.svg", bbox_inches=box)
    finally:
        plt.close(result)
    return Block("figure", spec.title, spec.stem, spec.caption)


def _table(title: str, result, caption: str = "", collapsed: bool = False) -> Block:
    if isinstance(result, str):
        return Block("nodata", title, result)
    return Block("table", title, result, caption, collapsed)


# Sections of the first family alone: their axes are C, B and the logit scale of given logits.
_CROSS_ENTROPY_ONLY = ("breaks", "boundary", "accuracy", "speed", "throughput", "memory")


def sections(
    run_dir: Path,
    rows: pd.DataFrame,
    out: Path,
    studies: tuple[Path, ...] = (),
    only: frozenset[str] | None = None,
) -> list[Section]:
    # The first family's figures and tables read its rows only: a linear + cross-entropy row's C
    # is a vocabulary behind a matmul of width D, and pooled with them it would be ranked against
    # another problem (its own section, last, groups by N, D, V). The statuses count every row.
    ce = data.family_rows(rows, "cross_entropy")
    ce_ctx = figures.Context.of(run_dir, ce, studies)
    every = figures.Context.of(run_dir, rows, studies)
    # A run of the linear family alone has no section of the first family's (an empty run keeps
    # them, each saying why it has no data).
    first_family = not ce.empty or rows.empty
    fig = {
        k: (
            _draw(spec, every if k == "statuses" else ce_ctx, out)
            if only is None or k in only
            else Block("nodata", spec.title, f"not drawn: the report was asked for {_listed(only)} alone")
        )
        if first_family or k not in _CROSS_ENTROPY_ONLY
        else None  # not drawn: its section is left out
        for k, spec in FIGURES.items()
    }
    theory, why = ce_ctx.theory
    order = every.order
    fastest = _table(
        "Fastest variant that is ok at every point",
        tables.fastest(ce, ce_ctx.order),
        "Per dtype, class count C, batch size B, target kind and mode: the variant with the "
        "smallest median time among those whose status is ok at every scale and seed of that "
        "group, the spread of its samples (IQR), and the next one: a tie when the two medians "
        "differ by less than the larger IQR. A group with a row timed under contention is not "
        "ranked.",
    )
    conditions = _table(
        "Timing conditions",
        tables.timing_conditions(rows),
        tables.timing_sentence(rows)
        + " A row is under contention when other work shared its cores, the machine's speed "
        "changed during its point, or the GPU's clocks were throttled (harness/measure/contention.py).",
    )
    summary = Section(
        "summary",
        "Summary",
        "Which variant should I use for my dtype and size, and what went wrong?",
        [
            conditions,
            *([fastest] if first_family else []),  # the linear family's ranking is its own section's
            fig["statuses"],
            _table("Rows per status", tables.status_counts(rows, order), collapsed=True),
            _table("Rows that did not run", tables.failures(rows, order)),
        ],
    )
    cross_entropy = [
        Section(
            "breaks",
            "Where the naive formula breaks",
            "At which logit scale does each formula stop being finite, per dtype, "
            "and does theory predict it?",
            [
                fig["breaks"],
                _table("Where exp() leaves each dtype's range (from torch.finfo)", tables.dtype_edges(ce)),
                _table("Predicted failing scales", tables.predictions(theory, why), collapsed=True),
            ],
        ),
        Section(
            "boundary",
            "Failure boundary against class count",
            "How does the logit scale at which naive_exp and softmax_log fail move with C?",
            [fig["boundary"]],
        ),
        Section(
            "accuracy",
            "Accuracy",
            "How accurate is each variant, alone and relative to the native op?",
            [
                fig["accuracy"],
                _table("Median errors", tables.accuracy(ce, ce_ctx.order), collapsed=True),
            ],
        ),
        Section(
            "speed",
            "Speed",
            "What does each variant cost in time, and how close is it to the copy floor?",
            [fig["speed"], fig["throughput"]],
        ),
        Section(
            "memory", "Memory", "How much memory does each variant need beyond the logits?", [fig["memory"]]
        ),
    ]
    flattening = Section(
        "flattening",
        "Repeated softmax",
        "How quickly does applying softmax again and again reach uniform?",
        [fig["flattening"]],
    )
    return [
        summary,
        *(cross_entropy if first_family else []),
        *([flattening] if first_family or studies else []),
        *_options_section(ce, ce_ctx.order),
        *_linear_section(rows, order),
        *_vocab_parallel_section(rows, order),
    ]


def _linear_section(rows: pd.DataFrame, order: list[str]) -> list[Section]:
    """Fused linear + cross-entropy (family=linear_cross_entropy), when the run has such rows:
    the per-size table (one group per loss options), then one table per option setting."""
    if linear_rows(rows).empty:
        return []
    skipped = unsupported(rows)
    caption = (
        "fwd_bwd rows: time (÷ the fastest ok row of the same size, dtype and options), peak memory "
        "above the inputs and its ratio to the bytes of dH [N, D] + dW [V, D] in the dtype (the "
        "floor no implementation can go under), and the norm-wise errors of dH, dW (db with a bias) "
        "and the loss against float64 on the same rounded inputs. Rows with different options "
        "measure different losses and are never ranked together."
    )
    if skipped:
        caption += " Not run (they do not honour the options): " + "; ".join(
            f"{label}: {', '.join(names)}" for label, names in sorted(skipped.items())
        )
        caption += "."
    blocks = [_table("Forward+backward per size", linear_table(rows, order), caption)]
    blocks += [
        _table(f"With {title}", table, text)
        for title, table, text in option_tables(rows, order, family="linear_cross_entropy")
    ]
    return [
        Section(
            "linear",
            "Fused linear + cross-entropy",
            "Which implementation is fastest at each size, what does each hold in memory against "
            "the dH + dW it must write, how far are its gradients from float64, and which "
            "implementations honour each loss option?",
            blocks,
        )
    ]


def _vocab_parallel_section(rows: pd.DataFrame, order: list[str]) -> list[Section]:
    """Vocabulary-parallel cross-entropy (family=vocab_parallel_cross_entropy), when the run has
    such rows: one table of the fwd_bwd rows by size, dtype, options and tp."""
    if vocab_parallel_rows(rows).empty:
        return []
    caption = (
        "fwd_bwd rows: the loss's (worst rank's) and the gathered gradient's errors against the "
        "unsharded float64 reference over their bounds (above 1: inaccurate), whether every rank "
        "returned the same loss, the collectives counted in forward and backward with their "
        "payload bytes, a ring's time for them on the stated link (link_gbps) at the row's tp and "
        "at tp = 8 (one NVLink node), and the time of "
        "one call of every rank (on a CPU: gloo on the loopback, latency-bound)."
    )
    return [
        Section(
            "vocab_parallel",
            "Vocabulary-parallel cross-entropy",
            "Does sharding the classes over tp ranks change the answer, which collectives does each "
            "implementation make, and what would they cost on a real link?",
            [_table("Forward+backward per size and tp", vocab_parallel_table(rows, order), caption)],
        )
    ]


def _options_section(rows: pd.DataFrame, order: list[str]) -> list[Section]:
    """The loss options (+sweep=options): one table per option setting, when the run has any."""
    tabs = option_tables(rows, order)
    if not tabs:
        return []
    return [
        Section(
            "options",
            "Loss options",
            "With each option real training calls use, which implementations are right, and what "
            "does the option cost in time?",
            [_table(title, table, caption) for title, table, caption in tabs],
        )
    ]


HISTORY_STEM = "history"  # scripts/history.py plot writes history.png, .svg and .csv


def history_section(history: Path, out: Path) -> Section:
    """The run history across commits (scripts/history.py plot --out HISTORY), copied in."""
    import shutil

    files = [history / f"{HISTORY_STEM}.{ext}" for ext in ("png", "svg", "csv")]
    if not all(f.is_file() for f in files):
        block = Block(
            "nodata", "History", f"{history} holds no history.png/.svg/.csv (scripts/history.py plot)"
        )
    else:
        for f in files:
            shutil.copyfile(f, out / f.name)
        block = Block(
            "figure",
            "Across commits",
            HISTORY_STEM,
            "Per variant and commit: time relative to the first commit measured (geometric mean over "
            "its points) and the share of its rows that are ok (scripts/history.py).",
        )
    return Section("history", "History", "Did a commit make a variant slower or less accurate?", [block])


def _listed(only: frozenset[str]) -> str:
    return ", ".join(sorted(only)) if only else "no figure"


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    studies: tuple[Path, ...] = (),
    history: str | Path | None = None,
    rows: pd.DataFrame | None = None,
    figures_only: Collection[str] | None = None,
) -> Path:
    """Write index.html and one PNG + SVG per figure for the rows under run_dir.

    out_dir defaults to run_dir/report. rows: run_dir's rows when the caller has loaded them
    already (scripts/report.py checks there are some): read once, skipped files named once.
    figures_only: the FIGURES keys to draw (None: all); the others' places say they were not
    drawn, and every table is still made. Drawing is nearly all of a report's time (about 0.8 s a
    figure, PNG and SVG), so one figure redrawn, or a page of tables, is a few seconds.
    Returns the path of index.html."""
    only = None if figures_only is None else frozenset(figures_only)
    if only is not None and not only <= FIGURES.keys():
        raise ValueError(
            f"figures: {', '.join(sorted(only - FIGURES.keys()))} is not a figure; "
            f"allowed: {', '.join(FIGURES)}"
        )
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = load(run_dir) if rows is None else rows
    secs = sections(run_dir, rows, out, tuple(Path(s) for s in studies), only)
    if history is not None:
        secs.append(history_section(Path(history), out))
    if rows.empty:
        secs[0].blocks.insert(0, Block("nodata", "this run", "no rows.parquet file under the run directory"))
    html = render(
        f"Cross-entropy report: {run_dir.name}",
        data.metadata(rows),
        secs,
        footer=f"Written by scripts/report.py from {run_dir}.",
    )
    index = out / INDEX
    tmp = out / f".{INDEX}.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(index)  # a reader (or a browser reloading) never sees half a page
    return index
