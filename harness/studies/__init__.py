"""Studies: measurements that are not one row per (point, variant, mode).

A study runs as `python -m harness +study=NAME` (conf/study/NAME.yaml, composed under the
`study` key) and writes its own table, `<run dir>/study-NAME.parquet`, which
`harness.results.load` leaves out of the rows by design.

  flattening   repeated softmax: distance from uniform and its step ratio per iteration
  precision    probes of where PyTorch's CPU kernels round (python -m harness.studies.precision)

A fine grid of logit scales is not a study: it is points, produced by the `scan` lists
(harness/cross_entropy/point.py) and measured like any others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from harness.config import SettingError


def _flattening(settings: Any, out_dir: Path) -> Path:
    import pandas as pd  # pandas only when a study runs

    from harness.studies.flattening import run, summary

    path = run(settings, out_dir)
    print(summary(pd.read_parquet(path)), flush=True)
    return path


def _check_flattening(settings: Any) -> None:
    from harness.studies.flattening import check

    check(settings)


# name -> (run into a directory, check the settings without running)
STUDIES: dict[str, tuple[Callable[[Any, Path], Path], Callable[[Any], None]]] = {
    "flattening": (_flattening, _check_flattening),
}


def _name(settings: Any) -> str:
    name = settings.get("name") if hasattr(settings, "get") else None
    if name not in STUDIES:
        raise SettingError(f"study.name={name!r} is not allowed: use one of {', '.join(STUDIES)}")
    return name


def check(settings: Any) -> None:
    """SettingError on a bad study node (an unknown name, a bad axis), before anything runs."""
    STUDIES[_name(settings)][1](settings)


def run(settings: Any, out_dir: Path) -> Path:
    """Run the study named by settings.name into out_dir; the path of its table."""
    return STUDIES[_name(settings)][0](settings, out_dir)
