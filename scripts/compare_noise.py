"""How often the time verdicts cry wolf, and whether they still catch real slowdowns: the rates
docs/timing.md states (Measured noise), measured on this machine, with other work beside the runs.

    python scripts/compare_noise.py aa     [--tries 20] [--load loop|sweep|none]
    python scripts/compare_noise.py slow   [--tries 10] [--load loop|sweep|none]
    python scripts/compare_noise.py long   [--tries 10] [--lengths-ms 20,100,500] [--load ...]
    python scripts/compare_noise.py marks  [--tries 3] [--loops 1|2]
    python scripts/compare_noise.py ci     [--tries 5]

aa     two plain `+sweep=smoke` runs of this checkout, compared: every row flagged slower is a
       false alarm, and the try must exit 0.
slow   a plain smoke run against one where `log1p_shifted` does 1.5x its work
       (tests/slow_variant.py, under its own name; with the native op and two other variants
       beside it): it must be flagged slower, and no other variant in any try.
long   one point per call length (a variant that spins for that long), against the same spin
       made 10x longer: flagged slower in every try at every length.
marks  the contention marks: the share of rows marked on a run with nothing beside it, and,
       against that run, whether every row of a run beside a busy loop whose time is off by
       more than 1.5x is marked, in either run, as compare reads them (each try: a quiet run,
       then one under load).
ci     scripts/ci_compare.sh between two commits of a scratch clone of this checkout that change
       no smoke variant (exit 0), and between the first and a commit that makes `online` do 1.5x
       its work (exit 1 naming online, and no other variant), `--tries` each.

--load: `loop` runs a busy shell loop beside every measured run (one core of the two busy;
`--loops 2` two: every core); `sweep` a second smoke sweep in a loop; `none` nothing. Each try
prints a line; the last line is the rate. Exit code 0 when the rate meets its target, 1 when it does not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the harness of this checkout, also when run from elsewhere

SLOWED = "log1p_shifted"
FOUR = f"torch_cross_entropy,{SLOWED},chunked,online"
SLOW_FOUR = f"torch_cross_entropy,{SLOWED}@tests.slow_variant:slow_log1p_shifted,chunked,online"


def harness(out: Path, *args: str, cwd: Path = REPO) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *args, f"hydra.sweep.dir={out}", f"hydra.run.dir={out}"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"compare_noise: a run failed: {proc.stderr.strip()[-500:]}")


LOOPS = 1  # busy loops for --load loop (--loops)


@contextlib.contextmanager
def beside(kind: str, scratch: Path, loops: int | None = None) -> Iterator[None]:
    """Other work on the machine while the block runs: busy loops, or smoke sweeps in a loop."""
    if kind == "none":
        yield
        return
    if kind == "loop":
        scripts = ["while :; do :; done"] * (LOOPS if loops is None else loops)
    else:
        scripts = [
            f"i=0; while true; do i=$((i+1)); {sys.executable} -m harness +sweep=smoke "
            f"hydra.sweep.dir={scratch}/load$i >/dev/null 2>&1; rm -rf {scratch}/load$i; done"
        ]
    procs = [subprocess.Popen(["bash", "-c", s], cwd=REPO, start_new_session=True) for s in scripts]
    try:
        time.sleep(1.0)  # let it get going
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()


def compared(base: Path, new: Path):
    from harness.compare import compare_dirs

    return compare_dirs(base, new)


def slower_variants(c) -> list[str]:
    reg = c.regressions
    return sorted(set(reg.loc[reg["kind"] == "time", "variant"]))


def flagged_rows(c) -> list[str]:
    """Each row flagged slower, with its point and ratio: a false alarm to be read, not only
    counted (the runs' folders stay under --keep)."""
    reg = c.regressions
    reg = reg[reg["kind"] == "time"]
    keys = [
        k
        for k in ("variant", "mode", "dtype", "batch_size", "num_classes", "targets", "logit_scale")
        if k in reg
    ]
    return [" ".join(f"{k}={r[k]}" for k in keys) + f" {r['change']}" for _, r in reg.iterrows()]


def counts(c) -> str:
    """The time verdicts, with the ambiguous rows' reasons (the word before the colon)."""
    text = " ".join(f"{n} {v}" for v, n in c.rows["time"].value_counts().items())
    amb = c.rows.loc[c.rows["time"] == "ambiguous", "time_note"].str.split(":").str[0].value_counts()
    return text + (f" ({', '.join(f'{n} {r}' for r, n in amb.items())})" if len(amb) else "")


def aa(args, root: Path) -> bool:
    clean = 0
    for i in range(args.tries):
        a, b = root / f"aa{i}" / "a", root / f"aa{i}" / "b"
        with beside(args.load, root):
            harness(a, "+sweep=smoke")
            harness(b, "+sweep=smoke")
        c = compared(a, b)
        clean += c.exit_code == 0 and not slower_variants(c)
        print(
            f"try {i}: exit {c.exit_code}; {counts(c)}; flagged slower: {slower_variants(c) or 'none'}",
            flush=True,
        )
        for line in flagged_rows(c):
            print(f"  {line}", flush=True)
    print(f"\nA/A ({args.load} beside): exit 0 with no row slower in {clean}/{args.tries} tries")
    return clean == args.tries


def slow(args, root: Path) -> bool:
    caught = innocent = 0
    for i in range(args.tries):
        a, s = root / f"slow{i}" / "a", root / f"slow{i}" / "s"
        with beside(args.load, root):
            harness(a, "+sweep=smoke", f"variants=[{FOUR}]")
            harness(s, "+sweep=smoke", f"variants=[{SLOW_FOUR}]")
        c = compared(a, s)
        flagged = slower_variants(c)
        caught += c.exit_code == 1 and SLOWED in flagged
        innocent += any(v != SLOWED for v in flagged)
        rows = c.rows[c.rows["variant"] == SLOWED]
        print(
            f"try {i}: exit {c.exit_code}; flagged slower: {flagged or 'none'}; {SLOWED}: "
            f"{' '.join(f'{n} {v}' for v, n in rows['time'].value_counts().items())}",
            flush=True,
        )
    print(
        f"\n1.5x slowdown ({args.load} beside): caught in {caught}/{args.tries} tries; "
        f"another variant flagged slower in {innocent}/{args.tries}"
    )
    return caught >= 0.9 * args.tries and innocent == 0


def long(args, root: Path) -> bool:
    lengths = [int(x) for x in args.lengths_ms.split(",")]
    caught = {ms: 0 for ms in lengths}
    point = ["batch_size=4", "num_classes=10", "targets=hard", "timing.warmup=1"]
    for i in range(args.tries):
        for ms in lengths:
            a, s = root / f"long{i}" / f"{ms}a", root / f"long{i}" / f"{ms}s"
            with beside(args.load, root):
                harness(a, *point, f"variants=[spin@tests.slow_variant:spin_{ms}ms]")
                harness(s, *point, f"variants=[spin@tests.slow_variant:spin_{10 * ms}ms]")
            c = compared(a, s)
            caught[ms] += c.exit_code == 1 and slower_variants(c) == ["spin"]
            print(f"try {i}, {ms} ms -> {10 * ms} ms: exit {c.exit_code}; {counts(c)}", flush=True)
    print(
        f"\n10x slowdown ({args.load} beside): caught in "
        + ", ".join(f"{caught[ms]}/{args.tries} at {ms} ms" for ms in lengths)
    )
    return all(n == args.tries for n in caught.values())


def marks(args, root: Path) -> bool:
    from harness.results import load
    from harness.vocabulary import KEY_COLUMNS

    quiet_share, missed, off_total = [], 0, 0
    for i in range(args.tries):
        q, busy = root / f"marks{i}" / "quiet", root / f"marks{i}" / "busy"
        harness(q, "+sweep=smoke")
        with beside("loop", root):
            harness(busy, "+sweep=smoke")  # LOOPS busy loops beside
        rq, rb = (load(d).dropna(subset=["time_median_s"]) for d in (q, busy))
        quiet_share.append(rq["contended"].mean())
        j = rq.merge(rb, on=list(KEY_COLUMNS), suffixes=("_q", "_b"))
        ratio = j["time_median_s_b"] / j["time_median_s_q"]
        off = j[(ratio > 1.5) | (ratio < 1 / 1.5)]
        off_total += len(off)
        # A pair off by more than 1.5x is explained when either run's row is marked: compare reads
        # both sides' marks (harness/time_verdict.py), and on a shared host the "quiet" run is
        # sometimes the slow one (then the busy run's row is faster, and unmarked).
        marked = off["contended_b"].astype(bool) | off["contended_q"].astype(bool)
        missed += int((~marked).sum())
        slower = int((ratio.loc[off.index] > 1.5).sum())
        print(
            f"try {i}: quiet run {rq['contended'].sum()}/{len(rq)} rows marked; beside a busy loop "
            f"{rb['contended'].sum()}/{len(rb)} marked, {len(off)} rows off by > 1.5x ({slower} slower "
            f"beside the loop, {len(off) - slower} faster) of which {int(marked.sum())} marked on "
            "either side",
            flush=True,
        )
    worst = max(quiet_share)
    print(
        f"\ncontention marks: at most {worst:.1%} of a quiet run's rows marked; of {off_total} rows "
        f"off by more than 1.5x beside {LOOPS} busy loop(s), {off_total - missed} marked on either side"
    )
    return worst <= 0.05 and missed == 0


SLOWDOWN_PATCH = '''

def _one_and_a_half(fn):
    """This commit's test slowdown: half as much work again after each call."""
    import functools
    import time

    @functools.wraps(fn)
    def slowed(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        until = time.perf_counter() + 0.5 * (time.perf_counter() - t0)
        while time.perf_counter() < until:
            pass
        return out

    return slowed


def _slow_online() -> None:
    import dataclasses

    from harness.cross_entropy.variants import REGISTRY

    slowed = dataclasses.replace(REGISTRY.get("online"), fn=_one_and_a_half(online))
    REGISTRY.remove("online")
    REGISTRY.add(slowed)


_slow_online()
'''


def ci(args, root: Path) -> bool:
    """Two commits on top of a scratch clone's HEAD: one changing no variant (a line added to README.md), one
    slowing `online`; ci_compare.sh of HEAD against each."""
    clone = root / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    git = ["git", "-C", str(clone), "-c", "user.name=noise", "-c", "user.email=noise@localhost"]

    def commit(message: str) -> str:
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "--quiet", "--allow-empty", "-m", message], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    # this checkout's uncommitted work as it stands, so that what is measured is what is here
    changed = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True
    )
    for line in changed.stdout.splitlines():
        rel = line[3:]
        if (REPO / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, clone / rel)
    base = commit("base")
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\n")
    same = commit("no variant changed")
    online = clone / "harness" / "cross_entropy" / "variants" / "online.py"
    online.write_text(online.read_text() + SLOWDOWN_PATCH)
    slowed = commit("online 1.5x")
    results = {"same": 0, "slowed": 0}
    python = os.environ.get("PYTHON", sys.executable)
    for i in range(args.tries):
        for name, head in (("same", same), ("slowed", slowed)):
            out = root / f"ci{i}" / name
            proc = subprocess.run(
                ["bash", "scripts/ci_compare.sh", base, head, str(out)],
                cwd=clone,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHON": python},
            )
            from harness.compare import compare_dirs

            c = compare_dirs(out / "base", out / "head", repeats=True)
            flagged = slower_variants(c)
            ok = proc.returncode == 0 if name == "same" else proc.returncode == 1 and flagged == ["online"]
            results[name] += ok
            print(f"try {i}, {name}: exit {proc.returncode}; flagged slower: {flagged or 'none'}", flush=True)
    print(
        f"\nci_compare.sh: no variant changed: exit 0 in {results['same']}/{args.tries}; "
        f"online 1.5x: exit 1 naming online alone in {results['slowed']}/{args.tries}"
    )
    return results["same"] == args.tries and results["slowed"] == args.tries


EXPERIMENTS = {"aa": aa, "slow": slow, "long": long, "marks": marks, "ci": ci}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=EXPERIMENTS)
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--load", choices=("loop", "sweep", "none"), default="loop")
    parser.add_argument("--loops", type=int, default=1, help="busy loops for --load loop (and marks)")
    parser.add_argument("--lengths-ms", default="20,100,500")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    args = parser.parse_args()
    global LOOPS
    LOOPS = args.loops
    root = args.keep or Path(tempfile.mkdtemp(prefix="compare-noise-"))
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    met = EXPERIMENTS[args.experiment](args, root)
    print(f"({args.tries} tries in {time.perf_counter() - start:.0f} s; runs in {root})")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
