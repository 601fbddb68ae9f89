"""Compare two result directories: what got slower, bigger or less accurate, and is sure of it.

The two runs are joined on `KEY_COLUMNS` (variant, targets, batch size, class count, dtype,
logit scale, device, mode, seed). Each joined row gets three verdicts:

  time      ratio of medians (new / base). asv's rule: flagged only when the ratio is beyond
            `time_factor` *and* a two-sided Mann-Whitney U test on the raw samples
            (`time_samples_s`) rejects "same distribution" at `alpha`. A rank test needs no
            normality and one slow outlier cannot carry it. With n samples per side the
            smallest p-value the exact test can reach is 2 / C(2n, n): at alpha = 0.002 that
            needs n >= 7 (n = 6 gives 0.0022) on each side, so rows with fewer samples in either
            run are reported as "few samples", never flagged. Two guards against a busy
            machine, where other work only ever adds time: the ratio of the fastest samples
            (the least disturbed of each run) must be beyond the factor as well, and a row
            whose median is more than `unstable_spread` times its own fastest sample in either
            run was measured while something else ran: it is "unstable", reported and not
            judged. The default factor, 1.3, is for shared machines (scripts/compare_noise.py
            measures it); a quiet, dedicated machine can ask for 1.1.
  memory    ratio of peak bytes, flagged past `memory_factor`. The CPU figure counts the
            tensors a variant materialises, so it is exact and any change is real.
  accuracy  a status change to a worse status (STATUS_RANK: ok < inaccurate < nonfinite,
            no_reference < wrote_input, error, oom, unsupported) or relative error (loss or
            gradient) grown beyond `error_factor`.
            For a fixed seed and torch version accuracy is deterministic, so no test is needed
            and the verdict holds across machines. Errors are floored at the dtype's unit
            roundoff u before the ratio: two results within one rounding are equally exact,
            and 1e-9 -> 3e-9 in fp32 is a different summation order, not a regression.

Timing verdicts across machines (device name or thread count differ) or torch versions are
information, not failures; so are memory verdicts across torch versions (the allocator and the
kernels' temporaries belong to torch). Rows present in only one run are information too: the
registry grows, and a baseline predates the newest variants.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import mannwhitneyu

from harness.results import SCHEMA, load, parquet_files
from harness.vocabulary import COLUMN_DEFAULTS, KEY_COLUMNS

KINDS = ("accuracy", "time", "memory")

# Columns this comparison reads; each must be present in a run with the SCHEMA's type. Other
# columns may be missing or extra, so a baseline written before a column was added still loads.
ENV_COLUMNS = ["device_name", "torch_version", "num_threads", "git_commit", "git_dirty", "python_version"]
REQUIRED_COLUMNS = [
    *KEY_COLUMNS,
    "status",
    "loss_rel_err",
    "grad_rel_err",
    "time_median_s",
    "time_samples_s",
    "peak_mem_bytes",
] + ENV_COLUMNS

# Worse statuses rank higher; a move up the ranking is an accuracy regression. error, oom and
# unsupported all mean "no usable result", so moving between them is reported but not ranked.
STATUS_RANK = {
    "ok": 0,
    "inaccurate": 1,
    "nonfinite": 2,
    "no_reference": 2,
    "wrote_input": 3,
    "error": 3,
    "oom": 3,
    "unsupported": 3,
}

# Environment fields whose difference makes timings incomparable (same code, other machine).
MACHINE_FIELDS = ("device_name", "num_threads")


class UnusableInput(Exception):
    """A run directory that cannot be compared; the message is one line (exit code 2)."""


@dataclass(frozen=True)
class Thresholds:
    time_factor: float = 1.30  # median (and fastest-sample) ratio beyond which a significant change counts
    alpha: float = 0.002  # Mann-Whitney U significance level (asv's default)
    unstable_spread: float = 1.5  # median / fastest sample beyond which a row's timings are disturbed
    memory_factor: float = 1.10  # peak-bytes ratio beyond which memory counts as changed
    error_factor: float = 2.0  # relative-error growth beyond which accuracy regressed


# --------------------------------------------------------------------------- loading


def _check_schema(file: Path) -> None:
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException) as exc:
        raise UnusableInput(f"unreadable parquet {file}: {str(exc).splitlines()[0]}") from None
    names = set(schema.names)
    # Columns newer than the file (the loss options, hidden_size, bias) load with their defaults
    # (harness.results.load): an older run still compares against a newer one.
    missing = [c for c in REQUIRED_COLUMNS if c not in names and c not in COLUMN_DEFAULTS]
    if missing:
        raise UnusableInput(f"schema mismatch in {file}: missing column(s) {', '.join(missing)}")
    for col in (c for c in REQUIRED_COLUMNS if c in names):
        want, got = SCHEMA.field(col).type, schema.field(col).type
        if not got.equals(want):
            raise UnusableInput(f"schema mismatch in {file}: column {col} is {got}, expected {want}")


def best_of_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration key from several runs of the same sweep: the row with the
    fastest median (best of k: a disturbance that slowed one run's row rarely hits every
    repeat, while a real slowdown is in all of them), with the worst status and largest
    errors any repeat had (accuracy is deterministic: a repeat that differs must not hide)."""
    keys = list(KEY_COLUMNS)
    df = with_option_defaults(df)
    rank = df["status"].map(STATUS_RANK).fillna(3)
    fastest = df.assign(_t=df["time_median_s"].fillna(math.inf)).sort_values("_t").drop_duplicates(keys)
    worst = df.assign(_r=rank).sort_values("_r", ascending=False).drop_duplicates(keys)
    errors = df.groupby(keys, dropna=False)[["loss_rel_err", "grad_rel_err"]].max().reset_index()
    out = (
        fastest.drop(columns=["_t", "status", "loss_rel_err", "grad_rel_err"])
        .merge(worst[[*keys, "status"]], on=keys)
        .merge(errors, on=keys)
    )
    return out.reset_index(drop=True)


def load_run(path: str | os.PathLike, repeats: bool = False) -> pd.DataFrame:
    """Every row under a run directory, checked for what a comparison needs.

    Raises UnusableInput (one line) for a missing directory, no parquet files, a file whose
    schema lacks a needed column or has it with another type, no rows, or two rows with the
    same configuration key (two runs in one directory) unless `repeats`: then the directory
    holds repeated runs of one sweep, combined by `best_of_repeats`."""
    path = Path(path)
    if not path.exists():
        raise UnusableInput(f"{path}: no such directory")
    files = parquet_files(path)
    if not files:
        raise UnusableInput(f"{path}: no parquet files (expected rows.parquet from a harness run)")
    for file in files:
        _check_schema(file)
    df = load(path)
    if df.empty:
        raise UnusableInput(f"{path}: the parquet files hold no rows")
    dup = df.duplicated(list(KEY_COLUMNS))
    if repeats:
        return best_of_repeats(df)
    if dup.any():
        first = df.loc[dup, list(KEY_COLUMNS)].iloc[0].to_dict()
        raise UnusableInput(
            f"{path}: {int(dup.sum())} row(s) repeat a configuration key, e.g. {first} "
            "(two runs in one directory? for repeated runs of one sweep use --repeats)"
        )
    return df


# --------------------------------------------------------------------------- environment


def _values(df: pd.DataFrame, col: str) -> str:
    vals = sorted({str(v) for v in df[col].dropna().unique()}) if col in df else []
    return ", ".join(vals) if vals else "-"


def environment(base: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One row per ENV_COLUMNS field: its value(s) in each run and whether they match."""
    rows = []
    for col in ENV_COLUMNS:
        b, n = _values(base, col), _values(new, col)
        rows.append({"field": col, "base": b, "new": n, "same": b == n})
    return pd.DataFrame(rows)


def demoted_kinds(env: pd.DataFrame) -> dict[str, str]:
    """Kinds whose verdicts become information, each with the reason (one line)."""
    differs = set(env.loc[~env["same"], "field"])
    out: dict[str, str] = {}
    machine = [f for f in MACHINE_FIELDS if f in differs]
    reasons = machine + (["torch_version"] if "torch_version" in differs else [])
    if reasons:
        out["time"] = f"{' and '.join(reasons)} differ: timings compare two machines"
    if "torch_version" in differs:
        out["memory"] = "torch_version differs: peak bytes depend on torch's kernels"
    return out


# --------------------------------------------------------------------------- verdicts


def min_p_value(n_base: int, n_new: int) -> float:
    """The smallest two-sided p-value the U test can give for these sample counts (perfectly
    separated samples): below alpha or the test cannot flag anything."""
    if n_base == 0 or n_new == 0:
        return 1.0
    a = np.arange(n_base, dtype=float)
    b = np.arange(n_base, n_base + n_new, dtype=float)
    return float(mannwhitneyu(b, a, alternative="two-sided").pvalue)


def _has_samples(x: object) -> bool:
    # a null list arrives from parquet as None (or NaN after a join)
    return isinstance(x, (list, tuple, np.ndarray)) and len(x) > 0


def time_verdict(
    base: list[float] | np.ndarray | None, new: list[float] | np.ndarray | None, th: Thresholds
) -> tuple[str, float, float]:
    """(verdict, median ratio new/base, p-value) for two sets of timing samples [s].

    verdict: slower | faster (beyond the factor in medians and in fastest samples, and
    significant), same (within the factor or not significant), unstable (disturbed samples in
    either run), few samples (the test cannot reach alpha), n/a (no samples)."""
    if not _has_samples(base) or not _has_samples(new):
        return "n/a", math.nan, math.nan
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    mb, mn = float(np.median(b)), float(np.median(n))
    ratio = mn / mb if mb > 0 else math.inf
    p = float(mannwhitneyu(n, b, alternative="two-sided").pvalue)
    # Both sides need the samples: a run whose row stalled takes few, and a lopsided pair (3
    # against 100) reaches a small p-value on the three stalled samples alone.
    fewest = min(len(b), len(n))
    if min_p_value(fewest, fewest) >= th.alpha:
        return "few samples", ratio, p
    if b.min() <= 0 or n.min() <= 0:
        return "n/a", ratio, p
    if max(mb / b.min(), mn / n.min()) > th.unstable_spread:
        return "unstable", ratio, p
    fastest = float(n.min() / b.min())
    if p < th.alpha and ratio > th.time_factor and fastest > th.time_factor:
        return "slower", ratio, p
    if p < th.alpha and ratio < 1 / th.time_factor and fastest < 1 / th.time_factor:
        return "faster", ratio, p
    return "same", ratio, p


def memory_verdict(base: float | None, new: float | None, th: Thresholds) -> tuple[str, float]:
    """(bigger | smaller | same | n/a, ratio new/base) for two peak byte counts."""
    if base is None or new is None or pd.isna(base) or pd.isna(new):
        return "n/a", math.nan
    if base == 0:
        ratio = 1.0 if new == 0 else math.inf
    else:
        ratio = float(new) / float(base)
    if ratio > th.memory_factor:
        return "bigger", ratio
    if ratio < 1 / th.memory_factor:
        return "smaller", ratio
    return "same", ratio


@functools.lru_cache(maxsize=None)
def _u(dtype_name: str) -> float:
    """Unit roundoff of a results dtype name (0 for an unknown one: no floor)."""
    from harness.dtypes import DTYPES, unit_roundoff  # torch, only once there are rows to judge

    return unit_roundoff(DTYPES[dtype_name]) if dtype_name in DTYPES else 0.0


def _err_ratio(base: float, new: float, u: float) -> float:
    if pd.isna(base) or pd.isna(new) or not math.isfinite(base) or not math.isfinite(new):
        return math.nan
    return max(new, u) / max(base, u)


def accuracy_verdict(row: pd.Series, th: Thresholds) -> tuple[str, str, float]:
    """(worse | better | changed | same, note, size) from the _base/_new status and error
    columns; size orders findings: inf for a status change, else the error ratio."""
    sb, sn = row["status_base"], row["status_new"]
    rb, rn = STATUS_RANK.get(sb, 3), STATUS_RANK.get(sn, 3)
    if rn > rb:
        return "worse", f"{sb} -> {sn}", math.inf
    if rn < rb:
        return "better", f"{sb} -> {sn}", math.inf
    u = _u(row["dtype"])
    notes, verdict, size = [], "changed" if sb != sn else "same", 1.0
    if sb != sn:
        notes.append(f"{sb} -> {sn}")
    for col, label in (("loss_rel_err", "loss err"), ("grad_rel_err", "grad err")):
        r = _err_ratio(row[f"{col}_base"], row[f"{col}_new"], u)
        if r > th.error_factor:
            return "worse", f"{label} x{r:.3g} ({row[f'{col}_base']:.3g} -> {row[f'{col}_new']:.3g})", r
        if r < 1 / th.error_factor:
            verdict, size = "better", 1 / r
            notes.append(f"{label} x{r:.3g}")
    return verdict, "; ".join(notes), size


# --------------------------------------------------------------------------- the comparison

_REGRESSED = {"accuracy": "worse", "time": "slower", "memory": "bigger"}
_IMPROVED = {"accuracy": "better", "time": "faster", "memory": "smaller"}


@dataclass
class Comparison:
    """Everything a report needs. `rows`: one per joined key with KEY_COLUMNS, the _base/_new
    measurements, and per kind a verdict column (accuracy, time, memory) plus time_ratio,
    time_p, memory_ratio, accuracy_note. `findings`: one row per (key, kind) whose verdict is a
    regression or an improvement, with `role` = regression | improvement | information."""

    base_dir: str
    new_dir: str
    env: pd.DataFrame
    demoted: dict[str, str]
    gates: tuple[str, ...]
    thresholds: Thresholds
    rows: pd.DataFrame
    only_base: pd.DataFrame
    only_new: pd.DataFrame
    findings: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def regressions(self) -> pd.DataFrame:
        return self.findings[self.findings["role"] == "regression"]

    @property
    def exit_code(self) -> int:
        """0: nothing regressed; 1: at least one gated regression."""
        return 1 if len(self.regressions) else 0


_MEASURED = ["status", "loss_rel_err", "grad_rel_err", "time_median_s", "time_samples_s", "peak_mem_bytes"]


def _findings(rows: pd.DataFrame, gates: tuple[str, ...], demoted: dict[str, str]) -> pd.DataFrame:
    out = []
    for _, r in rows.iterrows():
        for kind in KINDS:
            v = r[kind]
            if v == _REGRESSED[kind]:
                role = "regression" if kind in gates and kind not in demoted else "information"
            elif v == _IMPROVED[kind]:
                role = "improvement"
            else:
                continue
            if kind == "time":
                change = f"x{r['time_ratio']:.3g} (p={r['time_p']:.2g})"
                before, after = r["time_median_s_base"], r["time_median_s_new"]
                size = r["time_ratio"]
            elif kind == "memory":
                change = f"x{r['memory_ratio']:.3g}"
                before, after = r["peak_mem_bytes_base"], r["peak_mem_bytes_new"]
                size = r["memory_ratio"]
            else:
                change = r["accuracy_note"]
                before, after = r["status_base"], r["status_new"]
                size = r["accuracy_factor"]
            out.append(
                {
                    **{k: r[k] for k in KEY_COLUMNS},
                    "kind": kind,
                    "verdict": v,
                    "role": role,
                    "base": before,
                    "new": after,
                    "change": change,
                    "size": size,
                }
            )
    cols = [*KEY_COLUMNS, "kind", "verdict", "role", "base", "new", "change", "size"]
    return pd.DataFrame(out, columns=cols)


def with_option_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Rows made before the loss options existed (or built by hand) hold the plain loss: give
    them the option columns (and hidden_size, bias) at their defaults, so they join rows that have them."""
    missing = {k: v for k, v in COLUMN_DEFAULTS.items() if k not in df.columns}
    df = df.assign(**missing) if missing else df
    return df.fillna(COLUMN_DEFAULTS)  # a null option is the plain loss too (results.load)


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    thresholds: Thresholds = Thresholds(),
    gates: tuple[str, ...] = KINDS,
    base_dir: str = "base",
    new_dir: str = "new",
) -> Comparison:
    """Join two runs' rows (harness.results SCHEMA columns) and give every joined row its
    verdicts. `gates`: the kinds whose regressions fail the comparison; the others are shown
    as information."""
    env = environment(base, new)
    demoted = demoted_kinds(env)
    b = with_option_defaults(base)[[*KEY_COLUMNS, *_MEASURED]]
    n = with_option_defaults(new)[[*KEY_COLUMNS, *_MEASURED]]
    joined = b.merge(n, on=list(KEY_COLUMNS), how="outer", suffixes=("_base", "_new"), indicator=True)
    only_base = joined.loc[joined["_merge"] == "left_only", list(KEY_COLUMNS)].reset_index(drop=True)
    only_new = joined.loc[joined["_merge"] == "right_only", list(KEY_COLUMNS)].reset_index(drop=True)
    rows = joined[joined["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)

    acc = [accuracy_verdict(r, thresholds) for _, r in rows.iterrows()]
    tim = [
        time_verdict(sb, sn, thresholds)
        for sb, sn in zip(rows["time_samples_s_base"], rows["time_samples_s_new"])
    ]
    mem = [
        memory_verdict(mb, mn, thresholds)
        for mb, mn in zip(rows["peak_mem_bytes_base"], rows["peak_mem_bytes_new"])
    ]
    rows["accuracy"] = [a[0] for a in acc]
    rows["accuracy_note"] = [a[1] for a in acc]
    rows["accuracy_factor"] = [a[2] for a in acc]
    rows["time"] = [t[0] for t in tim]
    rows["time_ratio"] = [t[1] for t in tim]
    rows["time_p"] = [t[2] for t in tim]
    rows["memory"] = [m[0] for m in mem]
    rows["memory_ratio"] = [m[1] for m in mem]
    return Comparison(
        base_dir=base_dir,
        new_dir=new_dir,
        env=env,
        demoted=demoted,
        gates=tuple(gates),
        thresholds=thresholds,
        rows=rows,
        only_base=only_base,
        only_new=only_new,
        findings=_findings(rows, tuple(gates), demoted),
    )


def compare_dirs(
    base_dir: str | os.PathLike,
    new_dir: str | os.PathLike,
    thresholds: Thresholds = Thresholds(),
    gates: tuple[str, ...] = KINDS,
    repeats: bool = False,
) -> Comparison:
    """`compare` on two run directories; raises UnusableInput (one line) if either is unusable.
    repeats: each directory holds repeated runs of one sweep (load_run)."""
    return compare(
        load_run(base_dir, repeats),
        load_run(new_dir, repeats),
        thresholds,
        gates,
        str(base_dir),
        str(new_dir),
    )
