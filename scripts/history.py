"""A run history across commits: append a run's rows to one parquet store, draw it.

    python scripts/history.py append RUN_DIR --store results/history/history.parquet
    python scripts/history.py plot --store results/history/history.parquet --out results/history

`append` adds every row of RUN_DIR (harness.results.load) once: a run already in the store (the
same run_id, commit and point timestamps) is skipped, so re-running a CI job does not count
twice. `plot` draws, per variant and commit (in the order the commits were first measured),
the geometric mean over the variant's points of its median time relative to the first commit,
and the share of its rows whose status is ok; it writes history.png, .svg and .csv (the
numbers behind it), which `scripts/report.py RUN --history DIR` shows as the report's last section.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.results import load


def _fail(message: str) -> None:
    print(f"history: {message}", file=sys.stderr)
    sys.exit(2)


def append(run: Path, store: Path) -> int:
    """Rows added (0 when the run is already in the store)."""
    if not run.exists():
        _fail(f"{run}: no such directory")
    rows = load(run)
    if rows.empty:
        _fail(f"{run}: no rows to append")
    old = pd.read_parquet(store) if store.is_file() else None
    if old is not None:
        # a run's identity: its rows' (run_id, commit, timestamp); each point is stamped when written
        def ids(df: pd.DataFrame) -> set:
            return set(zip(df["run_id"], df["git_commit"], pd.to_datetime(df["timestamp"], utc=True)))

        if ids(rows) <= ids(old):
            return 0
        rows = pd.concat([old, rows], ignore_index=True)
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
    rows.to_parquet(tmp, index=False)
    os.replace(tmp, store)  # atomic: a reader never sees half a store
    return len(rows) - (0 if old is None else len(old))


def table(history: pd.DataFrame) -> pd.DataFrame:
    """Per (commit, variant): time relative to the first commit (geometric mean over the
    points both measured) and the share of rows ok."""
    h = history.copy()
    h["commit"] = h["git_commit"].fillna("unknown").str[:10]
    order = h.groupby("commit")["timestamp"].min().sort_values().index.tolist()
    point = ["variant", "targets", "batch_size", "num_classes", "dtype", "logit_scale", "device", "mode"]
    timed = h[h["time_median_s"] > 0].groupby(["commit", *point])["time_median_s"].min().reset_index()
    first = (
        timed[timed["commit"] == order[0]].drop(columns="commit").rename(columns={"time_median_s": "first"})
    )
    rel = timed.merge(first, on=point)
    rel["log_ratio"] = np.log(rel["time_median_s"] / rel["first"])
    time = rel.groupby(["commit", "variant"])["log_ratio"].mean().map(np.exp).rename("time_vs_first")
    ok = h.assign(ok=h["status"] == "ok").groupby(["commit", "variant"])["ok"].mean().rename("share_ok")
    out = pd.concat([time, ok], axis=1).reset_index()
    out["commit_order"] = out["commit"].map({c: i for i, c in enumerate(order)})
    return out.sort_values(["commit_order", "variant"]).reset_index(drop=True)


def plot(store: Path, out: Path) -> Path:
    import seaborn as sns
    from matplotlib.figure import Figure

    if not store.is_file():
        _fail(f"{store}: no history yet (append a run first)")
    t = table(pd.read_parquet(store))
    out.mkdir(parents=True, exist_ok=True)
    t.to_csv(out / "history.csv", index=False)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_t, ax_a = fig.subplots(1, 2)
    order = t.sort_values("commit_order")["commit"].unique().tolist()
    sns.lineplot(data=t, x="commit", y="time_vs_first", hue="variant", marker="o", ax=ax_t, legend=False)
    sns.lineplot(data=t, x="commit", y="share_ok", hue="variant", marker="o", ax=ax_a)
    ax_t.set(
        yscale="log",
        ylabel="time / first commit's (geometric mean over points)",
        title="Did a commit make a variant slower?",
    )
    ax_a.set(ylabel="share of rows ok", ylim=(-0.05, 1.05), title="Did a commit change a verdict?")
    for ax in (ax_t, ax_a):
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
        ax.set_xlabel("commit (first measured first)")
    ax_a.legend(fontsize=7, ncols=2, loc="lower left")
    path = out / "history.png"
    fig.savefig(path, dpi=110)
    fig.savefig(out / "history.svg")  # the report links both (scripts/report.py --history)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("append", help="add a run's rows to the store")
    a.add_argument("run", type=Path)
    a.add_argument("--store", type=Path, required=True)
    p = sub.add_parser("plot", help="draw the store")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "append":
        added = append(args.run, args.store)
        print(
            f"history: {added} rows added to {args.store}"
            if added
            else f"history: {args.run} is already in {args.store}"
        )
    else:
        print(f"history: {plot(args.store, args.out)}")


if __name__ == "__main__":
    main()
