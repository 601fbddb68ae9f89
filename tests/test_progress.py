"""The progress line's ETA: the time so far scaled by the expected work left over the work done."""

from __future__ import annotations

import time

import pytest

from harness import app
from harness.callbacks import SWEEP_START_ENV, SWEEP_WEIGHTS_ENV
from harness.cross_entropy.point import Point
from harness.plan import job_weight


@pytest.fixture
def sweep(monkeypatch):
    monkeypatch.setattr(app, "_resumed_weight", 0.0)

    def start(weights, seconds_ago):
        monkeypatch.setenv(SWEEP_WEIGHTS_ENV, ",".join(map(str, weights)))
        monkeypatch.setenv(SWEEP_START_ENV, str(time.time() - seconds_ago))

    return start


def _eta(text: str) -> float:
    return float(text.split("~")[1].split(" s")[0])


def test_eta_weighs_the_work_left_not_the_points_left(sweep):
    # a small first point took 10 s; the one left is 4x its size: 40 s, not 10
    sweep([1, 4], seconds_ago=10)
    assert _eta(app._progress(1, 2)) == pytest.approx(40, abs=1)
    assert app._progress(2, 2).startswith("[2/2, 0 left, ~0 s")


def test_resumed_jobs_do_not_count_as_work_done(sweep):
    sweep([1, 1, 1, 1], seconds_ago=5)
    assert "to go" not in app._progress(1, 4, resumed=True)
    assert "to go" not in app._progress(2, 4, resumed=True)
    assert _eta(app._progress(3, 4)) == pytest.approx(5, abs=1)  # one measured job: 5 s each


def test_job_weight_grows_with_bytes_and_keeps_a_fixed_cost():
    tiny = Point(2, 10, "fp32", 1.0, "cpu", "hard", 0)
    big = Point(64, 100_000, "fp32", 1.0, "cpu", "hard", 0)
    assert job_weight([tiny]) > 0 and job_weight([tiny, tiny]) == 2 * job_weight([tiny])
    assert job_weight([big]) > 3 * job_weight([tiny])


# `+sweep=gpu` on an H200 (results/reference/h200/sweep_gpu.log): each job's (C, dtype, targets)
# in launch order and the seconds it took.
H200_GPU_SWEEP = [
    (32000, "bf16", "hard", 16.1),
    (32000, "bf16", "soft", 12.9),
    (32000, "fp32", "hard", 10.9),
    (32000, "fp32", "soft", 12.2),
    (128256, "bf16", "hard", 12.5),
    (128256, "bf16", "soft", 14.0),
    (128256, "fp32", "hard", 16.2),
    (128256, "fp32", "soft", 15.0),
    (262144, "bf16", "hard", 21.7),
    (262144, "bf16", "soft", 22.9),
    (262144, "fp32", "hard", 27.1),
    (262144, "fp32", "soft", 25.3),
]


def test_the_eta_replayed_on_a_measured_gpu_sweep_is_within_30_percent(sweep):
    weights = [job_weight([Point(8192, c, d, 1.0, "cuda", t, 0)]) for c, d, t, _ in H200_GPU_SWEEP]
    seconds = [s for *_, s in H200_GPU_SWEEP]
    for done in range(2, len(seconds)):  # "after the first few points": from the second on
        sweep(weights, seconds_ago=sum(seconds[:done]))
        predicted, actual = _eta(app._progress(done, len(seconds))), sum(seconds[done:])
        assert abs(predicted / actual - 1) < 0.3, (done, predicted, actual)
