"""Console views of rows: the short table printed after a single run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _si_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def short_table(rows: list[dict]) -> str:
    """variant x mode: status, errors, median time, peak memory, GB/s."""
    import pandas as pd  # here, not at import: a sweep's processes never print it (0.2 s each)

    df = pd.DataFrame(rows)
    view = pd.DataFrame(
        {
            "variant": df["variant"],
            "mode": df["mode"],
            "status": df["status"],
            "loss_rel_err": [_fmt(x, ".1e") for x in df.get("loss_rel_err", [None] * len(df))],
            "grad_rel_err": [_fmt(x, ".1e") for x in df.get("grad_rel_err", [None] * len(df))],
            "median_ms": [
                _fmt(None if x is None else x * 1e3, ".3f") for x in df.get("time_median_s", [None] * len(df))
            ],
            "peak_mem": [_si_bytes(x) for x in df.get("peak_mem_bytes", [None] * len(df))],
            "GB/s": [_fmt(x, ".2f") for x in df.get("gbps", [None] * len(df))],
        }
    )
    return view.to_string(index=False) + _why_not(df)


def _why_not(df: pd.DataFrame, limit: int = 12) -> str:
    """One line per variant whose rows did not run or were not judged (unsupported, error, oom,
    no_reference): its message, so a table of `unsupported` says what each variant lacks."""
    if "message" not in df:
        return ""
    quiet = df[
        df["status"].isin(("unsupported", "error", "oom", "no_reference")) & df["message"].astype(bool)
    ]
    pairs = quiet.drop_duplicates("variant")[["variant", "message"]].itertuples(index=False)
    lines = [f"  {m}" if m.startswith(f"{v} ") else f"  {v}: {m}" for v, m in pairs]
    if not lines:
        return ""
    more = [f"  ... {len(lines) - limit} more (the rows' message column)"] if len(lines) > limit else []
    return "\n" + "\n".join(["why rows did not run or were not judged:", *lines[:limit], *more])
