"""How often the comparison cries wolf, and whether it still catches a real slowdown.

    python scripts/compare_noise.py [--tries 10] [--repeats 2] [--load] [--keep DIR]

Each try runs the smoke sweep from this checkout as A and as B (the same code) and once with
torch_cross_entropy slowed by 1.5x in its forward (tests/slow_variant.py, under the native
op's name; S), each `--repeats` times, interleaved (A B S A B S), as the CI script does for a
base and a head. It then compares B against A (an A/A comparison: every time regression is a
false alarm) and S against A (the slowdown must be flagged), with `--repeats` (best of k per
row) when k > 1. With --load a second smoke sweep runs in a loop beside every measured run, as
on a busy CI machine. Prints one line per try, a summary (A/A tries with exit 0, slowdown
tries caught, rows marked unstable), and on the same runs how often the earlier rule (median
ratio beyond 1.1 and the U test) and this rule on single runs would have flagged each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
SLOW = "variants=[torch_cross_entropy@tests.slow_variant:slow_cross_entropy]"


# As the CI comparison runs it (scripts/ci_compare.sh): at least 10 samples a row, so that the
# rank test can reach alpha on both sides even when the machine is busy, and one intra-op
# thread: on a shared machine two threads wait for each other at every op's barrier, and a
# 20 us call then takes milliseconds in whole rows at a time (README, Findings).
SAMPLES = ["timing.min_reps=10"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # as an environment variable: any revision honours it


def sweep(out: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "+sweep=smoke", f"hydra.sweep.dir={out}", *SAMPLES, *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=ONE_THREAD,
    )
    if proc.returncode != 0:
        sys.exit(f"compare_noise: the smoke sweep failed: {proc.stderr.strip()[-500:]}")


@contextlib.contextmanager
def load(on: bool, scratch: Path) -> Iterator[None]:
    """A smoke sweep in a loop beside the measured run (each pass into a fresh folder)."""
    if not on:
        yield
        return
    script = (
        f"i=0; while true; do i=$((i+1)); {sys.executable} -m harness +sweep=smoke "
        f"hydra.sweep.dir={scratch}/load$i >/dev/null 2>&1; rm -rf {scratch}/load$i; done"
    )
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, start_new_session=True)
    try:
        time.sleep(1.0)  # let it get going
        yield
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def compare(base: Path, new: Path, repeats: bool) -> tuple[int, dict]:
    from harness.compare import compare_dirs

    c = compare_dirs(base, new, repeats=repeats)
    time_rows = c.rows["time"].value_counts().to_dict()
    slower = c.regressions[c.regressions["kind"] == "time"]
    return c.exit_code, {"verdicts": time_rows, "slower": sorted(set(slower["variant"]))}


def _earlier_rule_flags(base: list, new: list) -> bool:
    """The rule before the busy-machine guards: median ratio beyond 1.1 and the U test."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    from harness.compare import min_p_value

    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if min_p_value(len(b), len(n)) >= 0.002:
        return False
    p = mannwhitneyu(n, b, alternative="two-sided").pvalue
    return bool(p < 0.002 and np.median(n) / np.median(b) > 1.1)


def ablation(root: Path, tries: int) -> None:
    """On the same runs: how many tries each rule flags, A/A (false alarms) and slowdown."""
    from harness.compare import compare_dirs

    counts = {
        "earlier rule, single runs": [0, 0],
        "this rule, single runs": [0, 0],
        "this rule, best of k": [0, 0],
    }
    for i in range(tries):
        for j, side in enumerate(("b", "s")):
            single = compare_dirs(root / f"try{i}" / "a" / "0", root / f"try{i}" / side / "0")
            pairs = zip(single.rows["time_samples_s_base"], single.rows["time_samples_s_new"])
            counts["earlier rule, single runs"][j] += any(
                _earlier_rule_flags(b, n) for b, n in pairs if b is not None and n is not None
            )
            counts["this rule, single runs"][j] += single.exit_code == 1
            best = compare_dirs(root / f"try{i}" / "a", root / f"try{i}" / side, repeats=True)
            counts["this rule, best of k"][j] += best.exit_code == 1
    for name, (aa, slow) in counts.items():
        print(f"{name}: A/A false alarm in {aa}/{tries}; slowdown caught in {slow}/{tries}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, interleaved (best of k)")
    parser.add_argument("--load", action="store_true", help="run a second sweep beside each measured one")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="compare-noise-"))
    aa_clean = caught = 0
    unstable = judged = 0
    for i in range(args.tries):
        a, b, s = root / f"try{i}" / "a", root / f"try{i}" / "b", root / f"try{i}" / "s"
        with load(args.load, root):
            for k in range(args.repeats):
                sweep(a / str(k))
                sweep(b / str(k))
                sweep(s / str(k), SLOW)
        code_aa, aa = compare(a, b, args.repeats > 1)
        code_s, slow = compare(a, s, args.repeats > 1)
        aa_clean += code_aa == 0
        caught += code_s == 1 and slow["slower"] == ["torch_cross_entropy"]
        unstable += aa["verdicts"].get("unstable", 0)
        judged += sum(aa["verdicts"].values())
        print(
            f"try {i}: A/A exit {code_aa} {aa['verdicts']} false alarms {aa['slower']}; "
            f"slowdown exit {code_s} {slow['verdicts']} flagged {slow['slower']}",
            flush=True,
        )
    print(
        f"\nA/A: {aa_clean}/{args.tries} tries with exit 0; "
        f"slowdown of 1.5x caught in {caught}/{args.tries}; "
        f"{unstable}/{judged} A/A time rows marked unstable; best of {args.repeats}"
        + (" (under load)" if args.load else "")
    )
    ablation(root, args.tries)


if __name__ == "__main__":
    main()
