"""Studies: measurements that are not one row per (point, variant, mode).

A study runs as `python -m harness +study=NAME` (conf/study/NAME.yaml, composed under the
`study` key) and writes its own table, `<run dir>/study-NAME.parquet`, which
`harness.results.load` leaves out of the rows by design.

  flattening   repeated softmax: distance from uniform and its step ratio per iteration
  scale_grid   a fine grid of logit scales and seeds per job, written as ordinary rows
               (rows.parquet): how `+sweep=overflow` runs ~5,000 points as 40 jobs
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


STUDIES: dict[str, Callable[[Any, Path], Path]] = {"flattening": _flattening}
ROW_STUDIES = ("scale_grid",)   # studies whose output is ordinary rows (results.SCHEMA)


def writes_rows(settings: Any) -> bool:
    """Whether this study node produces rows (run by run_row_study) rather than its own table."""
    return settings.get("name") in ROW_STUDIES


def run_row_study(cfg: Any, metadata: dict) -> list[dict]:
    """The rows of a row study for the composed config cfg (its `study` node names it)."""
    from harness.studies import grid

    return grid.run(cfg, metadata)


def run_study(settings: Any, out_dir: Path) -> Path:
    """Run the study named by settings.name into out_dir; the path of its table.
    An unknown name raises SettingError listing the known ones."""
    name = settings.get("name") if hasattr(settings, "get") else None
    if name not in STUDIES:
        raise SettingError(f"study.name={name!r} is not allowed: use one of {', '.join([*STUDIES, *ROW_STUDIES])}")
    return STUDIES[name](settings, out_dir)
