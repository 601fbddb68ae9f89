"""Shape a run's rows for the report: variant order and styles, theory, study tables, metadata.

Everything here is plain pandas; nothing draws. Modules that other parts of the project
provide (the theory, the flattening study) are imported lazily: when one is missing or
broken, its section gets `None` plus a reason instead of the report failing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.dtypes import DTYPES
from harness.vocabulary import study_file

STUDY_FILE = study_file("flattening")

# Qualitative colours indexed by a variant's position in the fixed order, so a registered
# variant keeps its colour from run to run (tab10 first: the most distinguishable ten).
_PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#1b9e77",
    "#d95f02",
    "#393b79",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
]


@dataclass(frozen=True)
class Style:
    """How one variant is drawn everywhere in the report."""

    color: str
    wrong: bool  # the formula itself is wrong (registry `expected_wrong`): dashed, marked
    unstable: bool  # the formula breaks at large scales (registry `breaks_by`): figure 2
    label: str  # legend text: the name, with a marker when the formula is wrong


def _registry() -> tuple[list[str], dict]:
    """The registered names and variants. A variant module that fails to import raises here:
    a report drawn without the registry would silently change every colour and order."""
    from harness.cross_entropy.variants import REGISTRY

    return REGISTRY.names(), dict(REGISTRY)


def variant_order(present) -> list[str]:
    """Registered names in registration order, then names only the rows hold (user variants
    given as pkg.mod:fn), sorted. Only names in `present` are returned."""
    present = set(present)
    registered, _ = _registry()
    head = [n for n in registered if n in present]
    return head + sorted(present - set(head))


def styles(order: list[str]) -> dict[str, Style]:
    """A fixed colour per variant: registered variants by registry position, others after."""
    registered, registry = _registry()
    slots = registered + [n for n in order if n not in registered]
    out = {}
    for name in order:
        info = registry.get(name)
        wrong = bool(getattr(info, "expected_wrong", ""))
        unstable = info is not None and bool(info.breaks_by)
        out[name] = Style(
            color=_PALETTE[slots.index(name) % len(_PALETTE)],
            wrong=wrong,
            unstable=unstable,
            label=f"{name} (wrong formula)" if wrong else name,
        )
    return out


def dtype_order(present) -> list[str]:
    """Dtypes in precision order (fp16, bf16, fp32, fp64), unknown names after."""
    present = set(present)
    return [d for d in DTYPES if d in present] + sorted(present - set(DTYPES))


def has(df: pd.DataFrame, column: str) -> bool:
    """Whether the column exists and holds at least one non-null value."""
    return column in df.columns and bool(df[column].notna().any())


def family_rows(rows: pd.DataFrame, family: str) -> pd.DataFrame:
    """The rows one family measured (the `family` column; results.load fills it in files
    written before it, from their hidden size)."""
    if rows.empty or "family" not in rows.columns:
        return rows.iloc[0:0] if family != "cross_entropy" else rows
    return rows[rows["family"] == family]


def logit_bytes(dtype: str) -> int:
    """Bytes per logit element of this dtype (2 for fp16/bf16, 4, 8)."""
    import torch  # already imported by harness.dtypes; local to keep the intent visible

    return torch.empty((), dtype=DTYPES[dtype]).element_size() if dtype in DTYPES else 0


def metadata(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, value) pairs describing the run; values joined when rows disagree."""

    def values(column: str) -> str:
        if column not in df.columns:
            return "-"
        vals = [str(v) for v in pd.unique(df[column].dropna())]
        return ", ".join(sorted(vals)) if vals else "-"

    commit = values("git_commit")
    if has(df, "git_dirty") and bool(df["git_dirty"].fillna(False).any()):
        commit += " (with uncommitted changes)"
    when = "-"
    if has(df, "timestamp"):
        ts = df["timestamp"].dropna()
        when = f"{ts.min():%Y-%m-%d %H:%M} to {ts.max():%Y-%m-%d %H:%M} UTC"
    return [
        ("sweep", values("sweep")),
        ("device", values("device")),
        ("device name", values("device_name")),
        ("threads", values("num_threads")),
        ("torch", values("torch_version")),
        ("python", values("python_version")),
        ("harness", values("harness_version")),
        ("commit", commit),
        ("measured", when),
        ("rows", str(len(df))),
        ("timing", "on" if has(df, "time_median_s") else "off (accuracy-only run)"),
    ]


# --- theory -----------------------------------------------------------------------------


def theory_module():
    """harness.cross_entropy.theory, or (None, reason) when it does not import."""
    try:
        return importlib.import_module("harness.cross_entropy.theory"), ""
    except Exception as exc:
        return None, f"harness.cross_entropy.theory does not import ({type(exc).__name__}: {exc})"


def theory_points(run_dir: Path, df: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """Predicted failing scales for the run's dtypes and class counts.

    Columns: dtype, num_classes, variant, mechanism, predicted_scale (a median row), and,
    when present, batch_size and predicted_scale_batch (the worst of B rows). The run's
    stored theory is preferred; else it is computed for the rows' dtypes, class counts and
    largest batch size (about a second per batch size: each prediction is a Newton iteration over
    a [C] logsumexp, which is why only the run's own class counts are computed)."""
    mod, reason = theory_module()
    if mod is None:
        return None, reason
    try:
        stored = mod.load_theory(run_dir)
        if stored is not None and len(stored):
            return stored, ""
        if df.empty:
            return None, "no rows to predict for"
        dtypes = [d for d in dtype_order(df["dtype"].unique()) if d in DTYPES]
        classes = sorted(int(c) for c in df["num_classes"].unique())
        return mod.theory_table(dtypes, classes, [int(df["batch_size"].max())]), ""
    except Exception as exc:
        return None, f"the theory failed ({type(exc).__name__}: {exc})"


def theory_curve(theory: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """Per (dtype, num_classes, variant): the scale where the variant fails at all (the
    first of its mechanisms): `predicted` for a median row and, where the theory has it,
    `predicted_batch` for the worst of `batch_size` rows."""
    keys = ["dtype", "num_classes", "variant"]
    t = theory
    if "batch_size" in t.columns:
        batch = t[t["batch_size"] == batch_size]
        t = batch if len(batch) else t
    out = (
        t.groupby(keys, as_index=False)["predicted_scale"]
        .min()
        .rename(columns={"predicted_scale": "predicted"})
    )
    if (
        "predicted_scale_batch" in t.columns
        and "batch_size" in t.columns
        and (t["batch_size"] == batch_size).any()
    ):
        b = t.groupby(keys, as_index=False)["predicted_scale_batch"].min()
        out = out.merge(b.rename(columns={"predicted_scale_batch": "predicted_batch"}), on=keys)
    return out


# --- measured failure boundary ---------------------------------------------------------


def first_failing_scale(df: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Per (variant, dtype, num_classes, targets, batch_size, mode, seed): the smallest
    logit_scale whose status is nonfinite, or NaN if every measured scale stayed finite.
    Where the same (variant, dtype, num_classes) was measured on grids of different fineness
    (make run: the cpu sweep's 2 scales and the overflow grid's 41), only the finest grid
    counts: a first failure at 100 on a grid of {1, 100} says nothing the fine grid does not.

    Columns: those keys, first_failing (float), max_scale (largest scale measured), scales
    (how many were measured)."""
    keys = ["variant", "dtype", "num_classes", "targets", "batch_size", "mode", "seed"]
    sub = df[df["variant"].isin(variants)]
    if sub.empty:
        return pd.DataFrame(columns=keys + ["first_failing", "max_scale", "scales"])
    failing = sub[sub["status"] == "nonfinite"].groupby(keys)["logit_scale"].min().rename("first_failing")
    top = sub.groupby(keys)["logit_scale"].max().rename("max_scale")
    scales = sub.groupby(keys)["logit_scale"].nunique().rename("scales")
    out = pd.concat([top, scales, failing], axis=1).reset_index()
    finest = out.groupby(["variant", "dtype", "num_classes"])["scales"].transform("max")
    return out[out["scales"] == finest].reset_index(drop=True)


# --- study tables ----------------------------------------------------------------------


def flattening(run_dir: Path, studies: tuple[Path, ...] = ()) -> tuple[pd.DataFrame | None, str]:
    """Every study-flattening.parquet under run_dir and the `studies` folders (where `make run`
    writes it: outside the sweep, so that a glob over the rows never meets it), concatenated;
    None plus a reason if none."""
    files = sorted(
        p
        for root in (Path(run_dir), *map(Path, studies))
        for p in root.rglob(STUDY_FILE)
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        return None, f"no {STUDY_FILE} under the run directory (the repeated-softmax study did not run)"
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception as exc:
            return None, f"{f.name} is unreadable ({type(exc).__name__}: {exc})"
    out = pd.concat(frames, ignore_index=True)
    need = {"num_classes", "dtype", "iteration", "dist_from_uniform"}
    if not need <= set(out.columns):
        return None, f"{STUDY_FILE} lacks columns {sorted(need - set(out.columns))}"
    return out, ""


def option_label(rows: pd.DataFrame) -> pd.Series:
    """Per row: "plain", or the loss options that are on, e.g. "label_smoothing=0.1 z_loss=0.0001",
    and "bias" when the linear family's layer has one (the logits' distribution is a column of
    its own, not an option). Rows written before the options existed load with the defaults
    (harness/results.py), so they read "plain"."""
    from harness.vocabulary import OPTION_DEFAULTS

    names = [n for n in OPTION_DEFAULTS if n not in ("logits", "ignore_index") and n in rows.columns]
    has_bias = "bias" in rows.columns

    def label(r) -> str:
        parts = []
        for n in names:
            v = r[n]
            if pd.isna(v) or v == OPTION_DEFAULTS[n]:
                continue
            parts.append(f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}")
        if has_bias and not pd.isna(r["bias"]) and bool(r["bias"]):
            parts.append("bias")
        return " ".join(parts) or "plain"

    if rows.empty:
        return pd.Series([], dtype=str, index=rows.index)
    return rows.apply(label, axis=1)
