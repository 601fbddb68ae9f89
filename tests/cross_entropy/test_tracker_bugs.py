"""The bugs of tests/tracker_bugs.py, each at the input that triggers it: flagged there
(`inaccurate` or `nonfinite` on at least one row), while F.cross_entropy at the same point is not;
and the README's table names every one of them with its source."""

from __future__ import annotations

import pandas as pd
import pytest

from ..conftest import REPO, job_config, run_job
from ..tracker_bugs import CATALOGUE

BASE = {"batch_size": 64, "num_classes": 1000, "dtype": "fp32", "targets": "hard", "logit_scale": 2.0}


@pytest.mark.parametrize("name,source,settings,control", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_each_tracker_bug_is_flagged_where_it_is_triggered(name, source, settings, control):
    variants = [f"{name}@tests.tracker_bugs:{name}", control]
    rows = pd.DataFrame(run_job(job_config(**{**BASE, **settings, "variants": variants})))
    flagged = rows["status"].isin(["inaccurate", "nonfinite"])
    shown = rows[["variant", "mode", "status", "loss_rel_err", "grad_rel_err"]]
    assert flagged[rows.variant == name].any(), shown
    assert not flagged[rows.variant == control].any(), shown


def test_the_readme_lists_every_tracker_bug_with_its_source():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Bugs from public trackers")[1]
    table = next(p for p in section.split("\n\n") if p.startswith("| variant"))
    for name, source, _, _ in CATALOGUE:
        line = next((ln for ln in table.splitlines() if f"`{name}`" in ln), "")
        assert source in line, (name, source)


def test_dropping_num_items_is_right_without_micro_batches():
    # one call per batch: num_items_in_batch is None, and the fallback mean is the right loss
    name = "num_items_dropped"
    cfg = job_config(**{**BASE, "ignore_fraction": 0.3, "variants": [f"{name}@tests.tracker_bugs:{name}"]})
    assert set(pd.DataFrame(run_job(cfg)).status) == {"ok"}
