"""Compare two result directories: what got slower, bigger or less accurate, and is sure of it.

The two runs are joined on `KEY_COLUMNS` (variant, targets, batch size, class count, dtype,
logit scale, device, mode, seed). Each joined row gets three verdicts:

  time      judged from the samples (`time_samples_s`), nvbench-compare's way, with an honest
            "don't know" (time_verdict has the rule): slower or faster only when the two runs'
            sample intervals (10th percentile to median; min to max below 5 samples) separate by more
            than `time_factor` and every other evidence bears it out: the separation after
            dividing by each run's calibration (a fixed op timed at each point), without the
            time the calling thread waited for a core (one intra-op thread), and against the
            native op timed interleaved at the same point. Same when the median ratio is within
            the factor and nothing separates; ambiguous otherwise, with the reason (too few
            samples, a spread too wide to tell, contention, a machine that changed speed).
            A gross change is never hidden by few samples: from 3 samples a side, a new minimum
            above factor x the base maximum separates. `time_basis=relative` judges the
            samples over the native op's instead (`time_rel_samples`), which cancels a speed
            difference between two machines. The default factor, 1.3, is for shared machines
            (scripts/compare_noise.py measures it); a quiet, dedicated machine can ask for 1.1.
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

from harness.results import SCHEMA, load, parquet_files
from harness.time_verdict import MIN_SAMPLES, Timed, separation, time_verdict
from harness.vocabulary import COLUMN_DEFAULTS, KEY_COLUMNS

KINDS = ("accuracy", "time", "memory")

# Columns this comparison reads; each must be present in a run with the SCHEMA's type. Other
# columns may be missing or extra, so a baseline written before a column was added still loads.
ENV_COLUMNS = ["device_name", "torch_version", "num_threads", "git_commit", "git_dirty", "python_version"]
# What each row's verdicts are made of; compare joins these, load_run requires them.
MEASURED_COLUMNS = [
    "status",
    "loss_rel_err",
    "grad_rel_err",
    "time_median_s",
    "time_samples_s",
    "peak_mem_bytes",
]
REQUIRED_COLUMNS = [*KEY_COLUMNS, *MEASURED_COLUMNS, *ENV_COLUMNS]

# Worse statuses rank higher; a move up the ranking is an accuracy regression. error, oom and
# unsupported all mean "no usable result", so moving between them is reported but not ranked.
STATUS_RANK = {
    "ok": 0,
    "unjudged": 1,
    "inaccurate": 1,
    "nonfinite": 2,
    "no_reference": 2,
    "wrote_input": 3,
    "error": 3,
    "oom": 3,
    "timeout": 3,
    "unsupported": 3,
}

# Environment fields whose difference makes timings incomparable (same code, other machine).
MACHINE_FIELDS = ("device_name", "num_threads")


class UnusableInput(Exception):
    """A run directory that cannot be compared; the message is one line (exit code 2)."""


# What a time verdict is judged on: each row's own samples, or its samples over the native
# op's taken in the same round at the same point (time_rel_samples), which cancels a
# difference in speed between the two machines that ran base and new.
TIME_BASES = ("absolute", "relative")


@dataclass(frozen=True)
class Thresholds:
    time_factor: float = 1.30  # separation of the samples' intervals beyond which time counts as changed
    memory_factor: float = 1.10  # peak-bytes ratio beyond which memory counts as changed
    error_factor: float = 2.0  # relative-error growth beyond which accuracy regressed
    time_basis: str = "absolute"  # TIME_BASES
    strict: bool = False  # an ambiguous row of a gated kind fails the comparison too


# --------------------------------------------------------------------------- loading


def _check_schema(file: Path) -> None:
    """Refuse a harness rows file whose needed columns are missing or of another type.

    An unreadable file and a foreign one (without the key columns) pass unchecked: they are
    not rows files, so `harness.results.load` names them on stderr and skips them, and the
    rest of the run still compares (load_run refuses only when no rows remain)."""
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException):
        return
    names = set(schema.names) | set(COLUMN_DEFAULTS)
    if not names.issuperset(KEY_COLUMNS):
        return
    # Columns newer than the file (the loss options, hidden_size, bias) load with their defaults
    # (harness.results.load): an older run still compares against a newer one.
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise UnusableInput(f"schema mismatch in {file}: missing column(s) {', '.join(missing)}")
    for col in (c for c in REQUIRED_COLUMNS if c in schema.names):
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

    An unreadable parquet file, or a foreign one without the key columns, is named on stderr
    and skipped (harness.results.load), as the README promises: one bad file does not void a
    run. Raises UnusableInput (one line) for a missing directory, no parquet files, a rows file
    whose schema lacks a needed column or has it with another type, no usable rows, or two rows
    with the same configuration key (two runs in one directory) unless `repeats`: then the
    directory holds repeated runs of one sweep, combined by `best_of_repeats`."""
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
        raise UnusableInput(
            f"{path}: no usable rows ({len(files)} parquet file(s), each unreadable, not a harness "
            "rows file, or empty); give a run or sweep directory written by python -m harness"
        )
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


def demoted_kinds(env: pd.DataFrame, time_basis: str = "absolute") -> dict[str, str]:
    """Kinds whose verdicts become information, each with the reason (one line). Relative time
    (each row over the native op timed beside it) compares across machines; across torch
    versions the native op itself may have changed, so it does not."""
    differs = set(env.loc[~env["same"], "field"])
    out: dict[str, str] = {}
    machine = [f for f in MACHINE_FIELDS if f in differs] if time_basis == "absolute" else []
    reasons = machine + (["torch_version"] if "torch_version" in differs else [])
    if reasons:
        out["time"] = f"{' and '.join(reasons)} differ: timings compare two machines"
    if "torch_version" in differs:
        out["memory"] = "torch_version differs: peak bytes depend on torch's kernels"
    return out


# --------------------------------------------------------------------------- verdicts


def _has_samples(x: object) -> bool:
    # a null list arrives from parquet as None (or NaN after a join)
    return isinstance(x, (list, tuple, np.ndarray)) and len(x) > 0


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
    def ambiguous(self) -> pd.DataFrame:
        """Rows whose time could not be judged, with the reason (time_note)."""
        return self.rows[self.rows["time"] == "ambiguous"] if len(self.rows) else self.rows

    @property
    def exit_code(self) -> int:
        """0: nothing regressed; 1: at least one gated regression, or (strict) an ambiguous time
        row while time is gated and comparable."""
        strict_fail = (
            self.thresholds.strict
            and "time" in self.gates
            and "time" not in self.demoted
            and len(self.ambiguous)
        )
        return 1 if len(self.regressions) or strict_fail else 0


_MEASURED = [
    *MEASURED_COLUMNS,
    # read when present: rows written before them judge time on their samples alone
    "time_wait_samples_s",
    "time_rel_samples",
    "calib_before_s",
    "calib_after_s",
    "contended",
    "contention",
    "num_threads",
]


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
                change = f"x{r['time_ratio']:.3g} ({r['time_basis']})"
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


def _samples(x: object) -> np.ndarray | None:
    return np.asarray(x, dtype=float) if _has_samples(x) else None


def _calib(before: object, after: object) -> float | None:
    """The point's calibration: the geometric mean of its readings before and after."""
    vals = [float(v) for v in (before, after) if v is not None and not pd.isna(v) and float(v) > 0]
    return math.prod(vals) ** (1 / len(vals)) if vals else None


def _timed(r: pd.Series, side: str, basis: str) -> Timed | None:
    """One side of a joined row as time_verdict reads it."""
    if basis == "relative":
        rel = _samples(r.get(f"time_rel_samples_{side}"))
        return None if rel is None else Timed(rel, contention=_text(r.get(f"contention_{side}")))
    wall = _samples(r.get(f"time_samples_s_{side}"))
    if wall is None:
        return None
    waits = _samples(r.get(f"time_wait_samples_s_{side}"))
    rel = _samples(r.get(f"time_rel_samples_{side}"))
    one_thread = r.get(f"num_threads_{side}") == 1 and not str(r["device"]).startswith("cuda")
    return Timed(
        wall,
        own=wall - waits if one_thread and waits is not None and len(waits) == len(wall) else None,
        calib=_calib(r.get(f"calib_before_s_{side}"), r.get(f"calib_after_s_{side}")),
        contention=_text(r.get(f"contention_{side}")),
        rel=None if rel is None or np.all(rel == 1.0) else rel,
        drift=_drift(r.get(f"calib_before_s_{side}"), r.get(f"calib_after_s_{side}")),
    )


def _drift(before: object, after: object) -> float:
    if before is None or after is None or pd.isna(before) or pd.isna(after) or not before > 0 < after:
        return 1.0
    return max(float(after) / float(before), float(before) / float(after))


def _text(x: object) -> str:
    return x if isinstance(x, str) else ""


def _is_native(r: pd.Series) -> bool:
    """The row of the op every other row's relative time divides by (its family's native op):
    each of its relative samples is its own sample over itself, exactly 1."""
    rel = _samples(r.get("time_rel_samples_base"))
    return rel is not None and bool(np.all(rel == 1.0))


def _rel_change(r: pd.Series) -> float:
    """new over base of the row's median time relative to the native op (NaN where unknown)."""
    b, n = _samples(r.get("time_rel_samples_base")), _samples(r.get("time_rel_samples_new"))
    if b is None or n is None:
        return math.nan
    mb = float(np.median(b))
    return float(np.median(n)) / mb if mb > 0 else math.nan


def time_verdicts(rows: pd.DataFrame, th: Thresholds) -> list[tuple[str, float, str]]:
    """time_verdict for every joined row. On the absolute basis a variant's relative samples
    (Timed.rel) are evidence of their own; the native op's row gets `point_change` instead: the
    inverse of the median change of the other variants' relative times at its point and mode
    (if it alone got slower, they all got faster against it)."""
    if rows.empty:
        return []
    change = rows.apply(_rel_change, axis=1)
    sep = rows.apply(_separation, axis=1, basis=th.time_basis)
    lone = _lone(rows, sep, th)
    point = [c for c in KEY_COLUMNS if c != "variant"]
    mates = _point_mates(rows, sep, point, th)
    natives = rows.apply(_is_native, axis=1).astype(bool)
    others = change[~natives].groupby([rows.loc[~natives, c] for c in point], dropna=False).median()
    out = []
    for i, r in rows.iterrows():
        pc = math.nan
        if natives[i] and th.time_basis == "absolute":  # relative samples: relative already
            key = tuple(r[c] for c in point)
            med = others.get(key, math.nan) if len(others) else math.nan
            pc = 1 / med if med and not pd.isna(med) else math.nan
        out.append(
            time_verdict(
                _timed(r, "base", th.time_basis),
                _timed(r, "new", th.time_basis),
                th,
                None if pd.isna(pc) else float(pc),
                lone=bool(lone[i]),
                point_mates=mates[i],
            )
        )
    return out


# A slowdown is corroborated when at least this many of the variant's other rows in the same
# mode separate beyond the factor the same way (and at least CORROBORATING_SHARE of them).
CORROBORATING_ROWS = 2
CORROBORATING_SHARE = 0.25


def _separation(r: pd.Series, basis: str) -> float:
    """The row's separation on the basis samples (1.0 where either side has none)."""
    col = "time_rel_samples" if basis == "relative" else "time_samples_s"
    b, n = _samples(r.get(f"{col}_base")), _samples(r.get(f"{col}_new"))
    if b is None or n is None or min(len(b), len(n)) < MIN_SAMPLES:
        return 1.0
    return separation(b, n)


def _lone(rows: pd.DataFrame, sep: pd.Series, th: Thresholds) -> pd.Series:
    """True for a row whose variant has other rows in its mode (2 or more) and too few of them
    separate beyond the factor in the row's own direction to corroborate it. Separate, not
    merely have medians beyond the factor: on a drifting host many rows' medians move by 1.3x
    while their samples overlap, and counting those corroborated a false alarm."""
    up, down = sep > th.time_factor, sep < 1 / th.time_factor
    out = pd.Series(False, index=rows.index)
    for _, g in rows.groupby(["variant", "mode"], sort=False):
        others = len(g) - 1
        if others < CORROBORATING_ROWS:
            continue  # a run of one or two points: nothing to corroborate with
        need = max(CORROBORATING_ROWS, math.ceil(CORROBORATING_SHARE * others))
        n_up, n_down = int(up[g.index].sum()), int(down[g.index].sum())
        for i in g.index:
            same_way = (n_up - up[i]) if sep[i] >= 1 else (n_down - down[i])
            out[i] = same_way < need
    return out


def _point_mates(rows: pd.DataFrame, sep: pd.Series, point: list[str], th: Thresholds) -> dict:
    """Per row, (how many of the other variants' rows at its point and mode separate beyond the
    factor in the row's direction, how many other rows there are). A host that slows for the
    length of one point slows every variant interleaved in it; a variant's own slowdown does not
    move its neighbours."""
    up, down = sep > th.time_factor, sep < 1 / th.time_factor
    out: dict = {}
    for _, g in rows.groupby(point, sort=False, dropna=False):
        n_up, n_down = int(up[g.index].sum()), int(down[g.index].sum())
        for i in g.index:
            moved = (n_up - up[i]) if sep[i] >= 1 else (n_down - down[i])
            out[i] = (int(moved), len(g) - 1)
    return out


def with_option_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """Rows made before the loss options existed (or built by hand) hold the plain loss: give
    them the option columns (and hidden_size, bias) at their defaults, so they join rows that have them,
    and the family their hidden size implies (results.load does the same for files)."""
    missing = {k: v for k, v in COLUMN_DEFAULTS.items() if k not in df.columns}
    if "family" in missing and "hidden_size" in df.columns:  # rows from before the column
        linear = df["hidden_size"].fillna(0) > 0
        missing["family"] = linear.map({True: "linear_cross_entropy", False: COLUMN_DEFAULTS["family"]})
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
    demoted = demoted_kinds(env, thresholds.time_basis)
    # reindex: the evidence columns a run written before them lacks read as null
    b = with_option_defaults(base).reindex(columns=[*KEY_COLUMNS, *_MEASURED])
    n = with_option_defaults(new).reindex(columns=[*KEY_COLUMNS, *_MEASURED])
    joined = b.merge(n, on=list(KEY_COLUMNS), how="outer", suffixes=("_base", "_new"), indicator=True)
    only_base = joined.loc[joined["_merge"] == "left_only", list(KEY_COLUMNS)].reset_index(drop=True)
    only_new = joined.loc[joined["_merge"] == "right_only", list(KEY_COLUMNS)].reset_index(drop=True)
    rows = joined[joined["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)

    acc = [accuracy_verdict(r, thresholds) for _, r in rows.iterrows()]
    tim = time_verdicts(rows, thresholds)
    mem = [
        memory_verdict(mb, mn, thresholds)
        for mb, mn in zip(rows["peak_mem_bytes_base"], rows["peak_mem_bytes_new"])
    ]
    rows["accuracy"] = [a[0] for a in acc]
    rows["accuracy_note"] = [a[1] for a in acc]
    rows["accuracy_factor"] = [a[2] for a in acc]
    rows["time"] = [t[0] for t in tim]
    rows["time_ratio"] = [t[1] for t in tim]
    rows["time_note"] = [t[2] for t in tim]
    rows["time_basis"] = thresholds.time_basis
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
