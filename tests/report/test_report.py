"""The report: figures from a real smoke run, a page that parses and links only to files that
exist, 'no data' sections for thin runs, and escaping of text that comes from results."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.patches import Polygon

from harness.report import build_report, data, figures
from harness.report.build import FIGURES
from harness.results import SCHEMA, load, write_rows
from harness.vocabulary import NATIVE

from ..conftest import REPO, smoke_run_dir

TIME_COLUMNS = [
    "time_median_s",
    "time_iqr_s",
    "time_min_s",
    "reps",
    "time_samples_s",
    "gbps",
    "floor_time_s",
    "pct_of_floor",
    "device_copy_gbps",
]


def smoke_report_index(tmp_path_factory) -> Path:
    """The report of the smoke run, built once per session (shared like the run)."""
    out = tmp_path_factory.getbasetemp() / "report-smoke-report"
    if not (out / ".complete").exists():
        build_report(smoke_run_dir(tmp_path_factory), out)
        (out / ".complete").touch()
    return out / "index.html"


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    return smoke_run_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def smoke_report(tmp_path_factory) -> Path:
    return smoke_report_index(tmp_path_factory)


def fp32_rows(run: Path) -> pd.DataFrame:
    """The smoke run's fp32 rows: every variant, both class counts and scales (naive ones
    fail at the larger), in a third of the panels, which keeps the thin-run tests quick."""
    rows = load(run)
    return rows[rows["dtype"] == "fp32"].reset_index(drop=True)


class Links(HTMLParser):
    """Collects ids, links and image sources; counts unclosed structural tags."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []
        self.scripts = 0
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if key in a:
                self.refs.append(a[key])
        if tag == "script":
            self.scripts += 1
        if tag in ("section", "table", "figure", "details", "nav", "header"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in ("section", "table", "figure", "details", "nav", "header"):
            assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
            self.open.pop()


def parse(index: Path) -> Links:
    p = Links()
    p.feed(index.read_text(encoding="utf-8"))
    p.close()
    return p


def write_frame(df: pd.DataFrame, directory: Path) -> Path:
    """Rows from a DataFrame back into a run directory through the project's writer."""
    rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
    write_rows(rows, directory / "point", "test")
    return directory


def figure_blocks(index: Path) -> tuple[set[str], str]:
    text = index.read_text(encoding="utf-8")
    drawn = {spec.stem for spec in FIGURES.values() if f'src="{spec.stem}.png"' in text}
    return drawn, text


# --- a real smoke run ---------------------------------------------------------------------


def test_smoke_report_has_every_figure_as_real_png_and_svg(smoke_report):
    out = smoke_report.parent
    drawn, text = figure_blocks(smoke_report)
    # The smoke run has timing, memory, naive variants and theory: every figure but the
    # repeated-softmax study (which writes its own table) must be drawn.
    expected = {s.stem for k, s in FIGURES.items() if k != "flattening"}
    assert expected <= drawn, f"missing: {expected - drawn}"
    for stem in expected:
        img = mpimg.imread(out / f"{stem}.png")
        h, w = img.shape[:2]
        assert w >= 600 and h >= 250, f"{stem}.png is {w}x{h}"
        assert float(np.asarray(img[..., :3]).std()) > 0.02, f"{stem}.png is nearly blank"
        root = ET.parse(out / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg")
        numbers = pd.read_csv(out / f"{stem}.csv")  # the numbers behind it, beside it
        assert len(numbers) and len(numbers.columns) >= 2, stem
    assert "could not be drawn" not in text


def test_smoke_page_parses_and_links_only_to_existing_files(smoke_report):
    links = parse(smoke_report)
    assert not links.open, f"unclosed: {links.open}"
    assert links.scripts == 0
    assert links.refs, "the page links to nothing"
    for ref in links.refs:
        assert "://" not in ref and not ref.startswith("//"), f"external reference {ref}"
        if ref.startswith("#"):
            assert ref[1:] in links.ids, f"anchor {ref} has no target"
        else:
            assert (smoke_report.parent / ref).is_file(), f"{ref} does not exist"


def test_smoke_page_header_carries_run_metadata(smoke_run, smoke_report):
    rows = load(smoke_run)
    text = smoke_report.read_text(encoding="utf-8")
    for column in ("git_commit", "torch_version", "device_name", "sweep"):
        assert str(rows[column].iloc[0]) in text
    assert f"<td>{len(rows)}</td>" in text


def test_a_group_timed_under_contention_is_not_ranked_and_the_report_says_how_noisy(smoke_run):
    from harness.report.tables import fastest, timing_conditions, timing_sentence

    rows = load(smoke_run)
    quiet = rows.assign(contended=False, contention="")
    noisy = quiet.copy()
    hit = (noisy["num_classes"] == 10) & noisy["time_median_s"].notna()
    noisy.loc[hit, "contended"] = True
    noisy.loc[hit, "contention"] = "load: 2.0 other runnable tasks beside 1 thread(s) on 2 cores"
    order = data.variant_order(rows["variant"].unique())
    table = fastest(noisy, order)
    unranked = table["fastest ok variant"] == "not ranked: timed under contention"
    assert (unranked == (table["C"] == "10")).all() and unranked.any()
    assert (table.loc[unranked, "next"] == "-").all()
    assert not (fastest(quiet, order)["fastest ok variant"] == "not ranked: timed under contention").any()
    conditions = timing_conditions(noisy)
    n_timed, n_hit = int(rows["time_median_s"].notna().sum()), int(hit.sum())
    assert conditions["timed rows"].iloc[0] == n_timed
    assert conditions["under contention"].iloc[0] == f"{n_hit} ({n_hit / n_timed:.0%})"
    assert conditions["why"].iloc[0] == f"{n_hit} load"
    assert timing_sentence(noisy).startswith(f"Timings are noisy: {n_hit} of {n_timed} timed rows")
    assert timing_sentence(quiet).startswith("Timings: no row was timed under contention")


def test_fastest_table_only_names_variants_ok_everywhere_in_their_group(smoke_run):
    from harness.report.tables import fastest

    # The ranking itself; a group timed under contention is not ranked (the test below).
    rows = load(smoke_run).assign(contended=False)
    table = fastest(rows, data.variant_order(rows["variant"].unique()))
    assert isinstance(table, pd.DataFrame) and len(table)
    for _, r in table.iterrows():
        group = rows[
            (rows["dtype"] == r["dtype"])
            & (rows["num_classes"] == int(r["C"].replace(",", "")))
            & (rows["batch_size"] == int(r["B"]))
            & (rows["targets"] == r["targets"])
            & (rows["mode"] == r["mode"])
        ]
        mine = group[group["variant"] == r["fastest ok variant"]]
        assert (mine["status"] == "ok").all()
        ok_variants = group.groupby("variant")["status"].agg(lambda s: (s == "ok").all())
        medians = group.groupby("variant")["time_median_s"].median()[ok_variants[ok_variants].index]
        assert medians.idxmin() == r["fastest ok variant"]
        if r["next"] != "-":  # a tie is within the spread of the samples, anything else beyond it
            gap = medians[r["next"]] - medians.min()
            spread = (
                group.groupby("variant")["time_iqr_s"].median()[[r["fastest ok variant"], r["next"]]].max()
            )
            assert r["next is slower by"].startswith("tie") == (gap < spread)


# --- the line figures (seaborn.objects) ---------------------------------------------------

# The numbers each line figure hands the report for its CSV.
LINE_FIGURES = {
    "speed": ["variant", "dtype", "mode", "num_classes", "q25", "median", "q75"],
    "throughput": ["variant", "dtype", "mode", "num_classes", "gbps"],
    "memory": ["variant", "dtype", "mode", "num_classes", "peak_mem_bytes", "mib"],
}
DRAWN = {"speed": "median", "throughput": "gbps", "memory": "mib"}  # the column on the y axis


@pytest.fixture(scope="module")
def smoke_context(smoke_run) -> figures.Context:
    return figures.Context.of(smoke_run, load(smoke_run))


def legend_texts(fig) -> list[str]:
    """Every text of the figure's legends: seaborn adds the entries of the reference lines to
    its variant legend's box, so they are found by walking it, not in `Legend.texts`."""
    return [t.get_text() for lg in fig.legends for t in lg.findobj(matplotlib.text.Text) if t.get_text()]


def by_colour(ctx: figures.Context, artists, colour) -> dict:
    """The variant each artist draws, told by its colour (fixed per variant); an artist of any
    other colour (a reference line) is left out."""
    variant = {to_hex(st.color): v for v, st in ctx.style.items()}
    out = {}
    for artist in artists:
        v = variant.get(to_hex(colour(artist), keep_alpha=False))
        if v is not None:
            assert v not in out, f"{v} is drawn twice in one panel"
            out[v] = artist
    return out


def panel_rows(numbers: pd.DataFrame, ax, variant: str) -> pd.DataFrame:
    dtype, mode = ax.get_title().split(" | ")
    rows = numbers[(numbers["variant"] == variant) & (numbers["dtype"] == dtype) & (numbers["mode"] == mode)]
    return rows.sort_values("num_classes")


@pytest.mark.parametrize("name", LINE_FIGURES)
def test_line_figures_have_a_panel_per_mode_and_dtype_and_one_legend_naming_every_line(smoke_context, name):
    ctx = smoke_context
    fig = getattr(figures, name)(ctx)
    numbers = fig.harness_data
    assert list(numbers.columns) == LINE_FIGURES[name]
    expected = {f"{dt} | {m}" for dt in numbers["dtype"].unique() for m in numbers["mode"].unique()}
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(expected)  # 3 dtypes x 2 modes
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    legend = legend_texts(fig)
    drawn = set()
    for ax in fig.axes:
        assert ax.get_xscale() == ax.get_yscale() == "log"
        lines = by_colour(ctx, ax.get_lines(), lambda line: line.get_color())
        for v, line in lines.items():  # the same numbers as the CSV's
            np.testing.assert_allclose(line.get_ydata(), panel_rows(numbers, ax, v)[DRAWN[name]])
        drawn |= set(lines)
    # The legend names every variant drawn, in its fixed colour (else it would not be told
    # apart above), and no other.
    assert drawn and {v for v in ctx.order if ctx.style[v].label in legend} == drawn
    assert all(ctx.style[v].wrong == ("wrong formula" in ctx.style[v].label) for v in drawn)
    # Readable on the page: nothing under 9 pt (~14 px at the report's dpi, ~11 px after
    # the page fits three dtypes and the legend into its width).
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    assert min(sizes) >= 9


def test_speed_panels_hold_six_lines_at_most_each_with_its_own_iqr(smoke_context):
    ctx = smoke_context
    fig = figures.speed(ctx)
    q = fig.harness_data
    for ax in fig.axes:
        lines = by_colour(ctx, ax.get_lines(), lambda line: line.get_color())
        assert 0 < len(lines) <= figures.SPEED_LINES and NATIVE in lines, ax.get_title()
        bands = by_colour(ctx, [p for p in ax.patches if isinstance(p, Polygon)], lambda p: p.get_facecolor())
        assert set(bands) == set(lines)
        for v, band in bands.items():
            rows = panel_rows(q, ax, v)
            n = len(rows)
            xy = band.get_xy()[: 2 * n]  # along the low edge, back along the high one
            np.testing.assert_allclose(xy[:n, 0], rows["num_classes"])
            np.testing.assert_allclose(xy[:n, 1], rows["q25"])
            np.testing.assert_allclose(xy[n:, 1][::-1], rows["q75"])


def test_throughput_draws_the_copy_bandwidth_in_every_panel(smoke_context):
    ctx = smoke_context
    copy = float(ctx.rows["device_copy_gbps"].median())
    fig = figures.throughput(ctx)
    assert f"device copy: {copy:.1f} GB/s" in legend_texts(fig)
    for ax in fig.axes:
        black = [line for line in ax.get_lines() if to_hex(line.get_color()) == "#000000"]
        assert len(black) == 1 and np.allclose(black[0].get_ydata(), copy), ax.get_title()
        # the share of the copy bandwidth on the right of the last column only
        assert bool(ax.child_axes) == ax.get_subplotspec().is_last_col()


def test_memory_keeps_every_variant_visible_next_to_one_and_two_logits(smoke_context):
    ctx = smoke_context
    fig = figures.memory(ctx)
    m = fig.harness_data
    batch = int(ctx.rows["batch_size"].max())
    legend = legend_texts(fig)
    assert "1× logits (B·C·bytes)" in legend and "2× logits" in legend
    for ax in fig.axes:
        dtype, mode = ax.get_title().split(" | ")
        lines = by_colour(ctx, ax.get_lines(), lambda line: line.get_color())
        assert set(lines) == set(m[(m["dtype"] == dtype) & (m["mode"] == mode)]["variant"])  # no cut
        # Variants with equal bytes stay visible: each is drawn at its own x near the measured C.
        xs = np.array([line.get_xdata() for line in lines.values()])
        cs = np.array([panel_rows(m, ax, v)["num_classes"] for v in lines])
        assert all(len(set(col)) == len(lines) for col in xs.T)
        assert np.all(np.abs(np.log(xs / cs)) <= np.log(figures.MEMORY_DODGE) * len(lines) / 2)
        logits = sorted(
            (line for line in ax.get_lines() if to_hex(line.get_color()) == "#000000"),
            key=lambda line: line.get_ydata()[0],
        )
        assert len(logits) == 2
        c = logits[0].get_xdata()
        one = batch * c * data.logit_bytes(dtype) / 2**20
        np.testing.assert_allclose(logits[0].get_ydata(), one)
        np.testing.assert_allclose(logits[1].get_ydata(), 2 * one)


# --- thin runs ----------------------------------------------------------------------------


def test_accuracy_only_run_reports_speed_as_no_data(smoke_run, tmp_path):
    rows = fp32_rows(smoke_run)
    rows[TIME_COLUMNS] = None
    drawn_here = ("breaks", "accuracy", "speed", "throughput")  # what this test reads
    index = build_report(write_frame(rows, tmp_path / "run"), tmp_path / "out", figures_only=drawn_here)
    drawn, text = figure_blocks(index)
    assert FIGURES["speed"].stem not in drawn and FIGURES["throughput"].stem not in drawn
    assert "No data for Time against class count: timing was off" in text
    assert FIGURES["breaks"].stem in drawn and FIGURES["accuracy"].stem in drawn
    assert "off (accuracy-only run)" in text


def _error_row(base: pd.Series, variant: str, message: str) -> dict:
    row = {c: None for c in SCHEMA.names}
    keep = [
        "targets",
        "batch_size",
        "num_classes",
        "dtype",
        "logit_scale",
        "device",
        "mode",
        "seed",
        "run_id",
        "sweep",
        "timestamp",
        "git_commit",
        "git_dirty",
        "torch_version",
        "python_version",
        "device_name",
        "num_threads",
        "harness_version",
    ]
    row.update({k: base[k] for k in keep})
    row.update(variant=variant, status="error", message=message)
    return row


def test_run_with_error_rows_lists_them_escaped(smoke_run, tmp_path):
    rows = fp32_rows(smoke_run)
    evil = "<script>alert(1)</script>"
    extra = pd.DataFrame(
        [
            _error_row(rows.iloc[0], evil, "RuntimeError: <b>bad</b> & worse"),
            _error_row(
                rows.iloc[1], "tests.fault_variants:raises", "RuntimeError: this variant always fails"
            ),
        ]
    )
    index = build_report(  # the tables alone: no figure reads the messages
        write_frame(pd.concat([rows, extra], ignore_index=True), tmp_path / "run"),
        tmp_path / "out",
        figures_only=(),
    )
    text = index.read_text(encoding="utf-8")
    assert evil not in text and "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "RuntimeError: &lt;b&gt;bad&lt;/b&gt; &amp; worse" in text
    assert "tests.fault_variants:raises" in text
    assert parse(index).scripts == 0


def test_single_point_run_reports(smoke_run, tmp_path):
    rows = load(smoke_run)
    one = rows[
        (rows["num_classes"] == rows["num_classes"].min())
        & (rows["dtype"] == "fp32")
        & (rows["logit_scale"] == rows["logit_scale"].min())
        & (rows["targets"] == "hard")
    ]
    assert one[["num_classes", "dtype", "logit_scale", "targets"]].drop_duplicates().shape[0] == 1
    index = build_report(write_frame(one, tmp_path / "run"), tmp_path / "out")
    drawn, text = figure_blocks(index)
    assert FIGURES["accuracy"].stem in drawn and FIGURES["speed"].stem in drawn
    assert "could not be drawn" not in text


def test_empty_run_says_no_data_everywhere(tmp_path):
    (tmp_path / "run").mkdir()
    index = build_report(tmp_path / "run", tmp_path / "out")
    drawn, text = figure_blocks(index)
    assert drawn == set()
    assert text.count('class="nodata"') >= len(FIGURES)
    assert "could not be drawn" not in text


def test_missing_theory_is_said_not_fatal(smoke_run, tmp_path, monkeypatch):
    monkeypatch.setattr(
        data, "theory_module", lambda: (None, "harness.cross_entropy.theory does not import (test)")
    )
    run = write_frame(fp32_rows(smoke_run), tmp_path / "run")
    index = build_report(run, tmp_path / "out", figures_only=("breaks", "boundary"))
    drawn, text = figure_blocks(index)
    assert FIGURES["breaks"].stem in drawn  # measured cells do not need the theory
    assert "harness.cross_entropy.theory does not import (test)" in text


# --- the repeated-softmax study -----------------------------------------------------------


def _flattening_table(classes=(4, 16), dtypes=("fp16", "fp32"), steps=6) -> pd.DataFrame:
    """What the study records, computed here: softmax applied repeatedly from s*N(0,1)."""
    out = []
    for c in classes:
        for dt in dtypes:
            x = (3.0 * torch.randn(c, generator=torch.Generator().manual_seed(c), dtype=torch.float64)).to(
                data.DTYPES[dt]
            )
            prev = None
            for it in range(1, steps + 1):
                x = torch.softmax(x.float(), 0).to(x.dtype)
                d = float((x.double() - 1.0 / c).norm())
                out.append(
                    {
                        "num_classes": c,
                        "dtype": dt,
                        "start_scale": 3.0,
                        "seed": 0,
                        "iteration": it,
                        "dist_from_uniform": d,
                        "step_ratio": d / prev if prev else float("nan"),
                    }
                )
                prev = d
    return pd.DataFrame(out)


def test_flattening_study_is_drawn_when_present(smoke_run, tmp_path):
    rows = fp32_rows(smoke_run)
    run = write_frame(rows, tmp_path / "run")
    (run / "study").mkdir()
    _flattening_table().to_parquet(run / "study" / data.STUDY_FILE)
    assert len(load(run)) == len(rows)  # the study table is not rows
    index = build_report(run, tmp_path / "out", figures_only=("flattening",))
    drawn, _ = figure_blocks(index)
    assert FIGURES["flattening"].stem in drawn
    img = mpimg.imread(index.parent / f"{FIGURES['flattening'].stem}.png")
    assert float(np.asarray(img[..., :3]).std()) > 0.02


def test_flattening_has_a_panel_per_dtype_a_line_per_class_count_and_its_slope(tmp_path):
    (tmp_path / "study").mkdir(parents=True)
    table = _flattening_table(classes=(4, 16), dtypes=("fp16", "bf16", "fp32"))
    table.to_parquet(tmp_path / "study" / data.STUDY_FILE)
    fig = figures.flattening(figures.Context.of(tmp_path, pd.DataFrame()))
    # Three dtypes wrap into two columns: a row of four would be ~1,900 px wide.
    assert sorted(ax.get_title() for ax in fig.axes) == ["bf16", "fp16", "fp32"]
    assert len({ax.get_subplotspec().colspan.start for ax in fig.axes}) == 2
    assert len(fig.legends) == 1
    assert {"C = 4", "C = 16", "measured", figures.FLATTENING_SLOPE} <= set(legend_texts(fig))
    for ax in fig.axes:
        marked = [line for line in ax.get_lines() if line.get_marker() == "o"]
        assert len(marked) == 2 and len(ax.get_lines()) == 4  # measured and slope, per C
    assert list(fig.harness_data.columns) == ["dtype", "num_classes", "iteration", "dist_from_uniform"]


def test_a_study_folder_outside_the_sweep_is_drawn(smoke_run, tmp_path):
    # make run writes the study beside the sweep, not in it: --studies points the report there
    run = write_frame(fp32_rows(smoke_run), tmp_path / "run")
    studies = tmp_path / "studies" / "flattening"
    studies.mkdir(parents=True)
    _flattening_table().to_parquet(studies / data.STUDY_FILE)
    only = ("flattening",)
    assert (
        FIGURES["flattening"].stem
        not in figure_blocks(build_report(run, tmp_path / "without", figures_only=only))[0]
    )
    drawn, _ = figure_blocks(build_report(run, tmp_path / "with", studies=(studies,), figures_only=only))
    assert FIGURES["flattening"].stem in drawn


# --- shaping ------------------------------------------------------------------------------


def test_variant_order_is_registry_then_sorted_unknowns():
    from harness.cross_entropy.variants import names

    reg = names()
    present = [reg[2], "zz.mod:fn", reg[0], "aa.mod:fn"]
    assert data.variant_order(present) == [reg[0], reg[2], "aa.mod:fn", "zz.mod:fn"]


def test_colours_are_fixed_per_variant_and_wrong_formulas_marked():
    from harness.cross_entropy.variants import REGISTRY, names

    reg = names()
    full = data.styles(reg)
    part = data.styles([reg[-1], "user.mod:fn"])
    assert part[reg[-1]].color == full[reg[-1]].color  # independent of which others ran
    assert len({s.color for s in full.values()}) == len(reg)
    for name, st in full.items():
        assert st.wrong == bool(REGISTRY[name].expected_wrong)
        assert ("wrong formula" in st.label) == st.wrong


def test_first_failing_scale_is_smallest_nonfinite_scale_per_seed():
    rows = []
    for seed, first_bad in ((0, 10.0), (1, 100.0), (2, None)):
        for s in (1.0, 10.0, 100.0):
            bad = first_bad is not None and s >= first_bad
            rows.append(
                {
                    "variant": "naive_exp",
                    "dtype": "fp16",
                    "num_classes": 10,
                    "targets": "hard",
                    "batch_size": 4,
                    "mode": "fwd",
                    "seed": seed,
                    "logit_scale": s,
                    "status": "nonfinite" if bad else "ok",
                }
            )
    got = data.first_failing_scale(pd.DataFrame(rows), ["naive_exp"]).set_index("seed")
    assert got.loc[0, "first_failing"] == 10.0 and got.loc[1, "first_failing"] == 100.0
    assert np.isnan(got.loc[2, "first_failing"]) and got.loc[2, "max_scale"] == 100.0


# --- the command line ---------------------------------------------------------------------


def test_cli_bad_run_dir_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/report.py", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "RUN_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr


def _no_rows_run(tmp_path: Path, kind: str) -> Path:
    """A RUN_DIR without a readable rows file: empty, corrupt files, a foreign file, studies only."""
    run = tmp_path / "run"
    (run / "point").mkdir(parents=True)
    if kind == "corrupt":
        (run / "point" / "rows.parquet").write_bytes(b"not parquet")
    if kind == "foreign":
        pd.DataFrame({"x": [1]}).to_parquet(run / "point" / "rows.parquet")
    if kind == "studies":
        pd.DataFrame({"x": [1]}).to_parquet(run / "study-flattening.parquet")
    return run


@pytest.mark.parametrize("kind,files", [("empty", 0), ("corrupt", 1), ("foreign", 1), ("studies", 0)])
def test_cli_run_dir_without_rows_is_one_line_and_writes_nothing(tmp_path, kind, files):
    # A "no data" page for such a folder read like an accuracy-only run; it must be refused.
    run = _no_rows_run(tmp_path, kind)
    before = sorted(run.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "scripts/report.py", str(run)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    *skipped, last = proc.stderr.strip().splitlines()
    assert last.startswith(f"report: RUN_DIR {run} holds no readable rows ({files} parquet file(s)")
    # each skipped file named once, by harness.results.load, and nothing else said
    assert len(skipped) == files and all(str(run / "point" / "rows.parquet") in s for s in skipped)
    assert sorted(run.rglob("*")) == before


def test_cli_prints_index_path_and_time_and_draws_the_figures_asked_for(smoke_run, tmp_path):
    one = fp32_rows(smoke_run)
    run = write_frame(one[one["num_classes"] == one["num_classes"].min()], tmp_path / "run")
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/report.py",
            str(run),
            "--out",
            str(tmp_path / "r"),
            "--figures",
            "accuracy",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    index = tmp_path / "r" / "index.html"
    assert index.is_file()
    assert str(index) in proc.stdout and proc.stdout.strip().endswith("s)")
    drawn, text = figure_blocks(index)
    assert drawn == {FIGURES["accuracy"].stem}
    # every other figure's place says why it is empty (the flattening study's too)
    assert text.count("not drawn: the report was asked for accuracy alone") == len(FIGURES) - 1
    assert "Median errors" in text  # every table is made


def test_cli_names_the_figures_it_can_draw():
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_script", REPO / "scripts" / "report.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.FIGURE_KEYS == tuple(FIGURES)
    proc = subprocess.run(
        [sys.executable, "scripts/report.py", str(REPO), "--figures", "accuracy,speeed"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"report: --figures speeed is not a figure; allowed: {', '.join(FIGURES)}"
    with pytest.raises(ValueError, match="^figures: speeed is not a figure; allowed: breaks, "):
        build_report(REPO, REPO / "never-written", figures_only=("speeed",))


def test_the_boundary_uses_the_finest_grid_measured():
    # make run holds the cpu sweep (scales 1 and 100, B = 64) and an overflow grid (B = 2):
    # the first failing scale comes from the fine grid only.
    coarse = [
        {
            "variant": "v",
            "dtype": "fp16",
            "num_classes": 10,
            "targets": "hard",
            "batch_size": 64,
            "mode": "fwd",
            "seed": 0,
            "logit_scale": s,
            "status": "ok" if s < 50 else "nonfinite",
        }
        for s in (1.0, 100.0)
    ]
    fine = [
        {**coarse[0], "batch_size": 2, "logit_scale": s, "status": "ok" if s < 3 else "nonfinite"}
        for s in (1.0, 2.0, 3.0, 4.0, 5.0)
    ]
    first = data.first_failing_scale(pd.DataFrame(coarse + fine), ["v"])
    assert list(first["batch_size"]) == [2] and list(first["first_failing"]) == [3.0]
