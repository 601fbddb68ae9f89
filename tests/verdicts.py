"""The verdict audit: correct implementations and the bug catalogue on one grid, accuracy only.

Sound both ways means: no correct implementation is `inaccurate` anywhere on the grid, and every
bug is flagged wherever its error stands clear of what correct implementations make there, that
is above max(8 u, 8 x the worst correct error at the point), loss and gradient each.
Used by tests/cross_entropy/test_verdicts.py and by `python scripts/verdict_audit.py`, which
prints the figures the README quotes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace

import pandas as pd

from harness.cross_entropy.point import Point
from harness.cross_entropy.variants import REGISTRY, Variant, get
from harness.dtypes import DTYPES, unit_roundoff
from harness.runner import run_point
from tests.bug_variants import CATALOGUE

# fp32/fp64/bf16 x C in {68, 1000} x scales 1 to 1e4 x both target kinds, B = 64. C = 68 is not a
# power of two and small enough that a bf16 loss of a few nats is resolved to 2^-8; 1e4 puts the
# logits at +-4e4, where a tolerance that grew with the spread used to pass a 94%-wrong loss.
GRID = [
    Point(64, c, d, s, "cpu", k, seed=0)
    for d, c, s, k in itertools.product(
        ("fp32", "fp64", "bf16"), (68, 1000), (1.0, 100.0, 1e4), ("soft", "hard")
    )
]


# The points of `+sweep=smoke` and `+sweep=cpu` (conf/sweep/), read from the files themselves.
def sweep_points(name: str) -> list[Point]:
    from omegaconf import OmegaConf

    from harness.app import CONF_DIR

    conf = OmegaConf.load(f"{CONF_DIR}/sweep/{name}.yaml")
    axes = {k: str(v).split(",") for k, v in conf.hydra.sweeper.params.items()}
    fixed = {"batch_size": conf.get("batch_size", 64)}
    out = []
    for values in itertools.product(*axes.values()):
        s = {**fixed, **dict(zip(axes, values))}
        out.append(
            Point(
                int(s["batch_size"]),
                int(s["num_classes"]),
                s["dtype"],
                float(s["logit_scale"]),
                "cpu",
                s["targets"],
                seed=0,
            )
        )
    return out


CORRECT = ("torch_cross_entropy", "chunked", "online", "log1p_shifted")
BUGS = tuple(f"{fn.__name__}@tests.bug_variants:{fn.__name__}" for fn in CATALOGUE)
_OFF = SimpleNamespace(enabled=False)
_KEY = ["batch_size", "num_classes", "dtype", "logit_scale", "targets", "seed", "mode"]


def measure(points: list[Point], variants: list[Variant]) -> pd.DataFrame:
    """Accuracy-only rows of `variants` at `points`, through the harness's own runner."""
    rows = [row for p in points for row in run_point(p, variants, _OFF, _OFF, {})]
    return pd.DataFrame(rows)


@dataclass
class Audit:
    rows: pd.DataFrame  # every row, with `correct` and, for bugs, `needed` and `flagged`
    false_alarms: pd.DataFrame  # correct variants' rows that are not `ok`
    missed: pd.DataFrame  # bug rows that had to be flagged and were not

    def flag_rate(self) -> pd.DataFrame:
        """Per bug: rows whose error had to be flagged, how many were, and all rows flagged."""
        bugs = self.rows[~self.rows["correct"]]
        return (
            bugs.groupby("variant")[["needed", "flagged"]].sum().assign(rows=bugs.groupby("variant").size())
        )


def audit(points: list[Point], bugs: tuple[str, ...] = BUGS, correct: tuple[str, ...] = CORRECT) -> Audit:
    df = measure(points, [REGISTRY[n] for n in correct] + [get(b) for b in bugs])
    df["correct"] = df["variant"].isin(correct)
    good = df[df["correct"]]
    worst = (
        good.groupby(_KEY)[["loss_rel_err", "grad_rel_err"]]
        .max()
        .rename(columns={"loss_rel_err": "worst_loss", "grad_rel_err": "worst_grad"})
    )
    df = df.join(worst, on=_KEY)
    u = df["dtype"].map(lambda d: unit_roundoff(DTYPES[d]))
    loss_bar = (8 * df["worst_loss"]).clip(lower=8 * u)
    grad_bar = (8 * df["worst_grad"]).clip(lower=8 * u)
    above = (df["loss_rel_err"] > loss_bar) | (df["grad_rel_err"].fillna(0) > grad_bar)
    df["needed"] = ~df["correct"] & (above | df["status"].eq("nonfinite"))
    df["flagged"] = ~df["correct"] & df["status"].isin(["inaccurate", "nonfinite"])
    false_alarms = good[good["status"] != "ok"]
    missed = df[df["needed"] & ~df["flagged"]]
    return Audit(df, false_alarms, missed)
