"""Time verdicts: slower, faster, same or ambiguous (with why), from the samples and the evidence
beside them: calibration, run-queue waits, the native op timed interleaved, contention marks.

Rows are built in memory: the rules need controlled samples, not a busy machine's. The rates on
real runs (A/A false alarms, slowdowns caught) are scripts/compare_noise.py's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.compare import Thresholds, compare
from harness.report.compare import console, markdown
from harness.time_verdict import Timed, separation, time_verdict
from tests.compare.test_compare import ENV, draws, frame, row

TH = Thresholds()


def timed(samples, **kw) -> Timed:
    return Timed(np.asarray(samples, dtype=float), **kw)


# ---------------------------------------------------------------- the samples alone


def test_fifty_percent_slower_separates_and_is_slower():
    verdict, ratio, note = time_verdict(
        timed(draws(0, 20, 1e-3, 0.05)), timed(draws(1, 20, 1.5e-3, 0.05)), TH
    )
    assert verdict == "slower" and 1.35 < ratio < 1.65 and note == ""


def test_a_small_shift_is_same_however_many_samples():
    # 200 tight samples a side: a 3% shift is certain, and still within the factor.
    verdict, ratio, _ = time_verdict(
        timed(draws(0, 200, 1e-3, 0.05)), timed(draws(1, 200, 1.03e-3, 0.05)), TH
    )
    assert verdict == "same" and 1.0 < ratio < 1.1


def test_a_twenty_percent_shift_is_below_the_default_factor_and_above_a_tight_one():
    b, n = timed(draws(0, 50, 1e-3, 0.01)), timed(draws(1, 50, 1.2e-3, 0.01))
    assert time_verdict(b, n, TH)[0] == "same"
    assert time_verdict(b, n, Thresholds(time_factor=1.1))[0] == "slower"


def test_medians_apart_with_overlapping_samples_is_ambiguous_not_same():
    # Widely spread samples whose medians differ by more than the factor: too noisy to tell,
    # and saying "same" would hide a slowdown as surely as "slower" would invent one.
    b, n = timed(draws(3, 10, 1e-3, 0.6)), timed(draws(4, 10, 1.5e-3, 0.6))
    verdict, ratio, note = time_verdict(b, n, TH)
    assert ratio > TH.time_factor and verdict == "ambiguous" and note.startswith("spread:")


def test_two_samples_a_side_are_ambiguous_three_with_a_gross_change_are_slower():
    verdict, _, note = time_verdict(timed([1e-3, 1e-3]), timed([50e-3, 50e-3]), TH)
    assert verdict == "ambiguous" and note.startswith("few samples")
    # The 200x: a 20 ms sleep on a 0.1 ms call, 3 samples a side (a long call's count).
    verdict, ratio, _ = time_verdict(timed([1.0e-4, 1.1e-4, 0.9e-4]), timed([20.1e-3, 20.2e-3, 20.3e-3]), TH)
    assert verdict == "slower" and ratio > 150


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_with_three_or_more_samples_a_new_minimum_above_factor_times_the_base_maximum_is_slower(n):
    base = np.linspace(1.0, 1.2, n) * 1e-3
    new = base.max() * TH.time_factor * 1.01 + np.linspace(0, 0.3e-3, n)
    assert time_verdict(timed(base), timed(new), TH)[0] == "slower"


def test_separation_is_between_intervals_not_medians():
    b = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0])  # one outlier does not move the IQR
    assert separation(b, b * 1.5) == pytest.approx(1.5)
    assert separation(b * 1.5, b) == pytest.approx(1 / 1.5)
    assert separation(np.array([1.0, 2.0, 3.0]), np.array([2.5, 3.5, 4.5])) == 1.0  # overlap


# ---------------------------------------------------------------- the other evidence


def test_a_machine_slower_by_the_same_amount_is_ambiguous_by_calibration():
    b = timed(draws(0, 20, 1e-3, 0.02), calib=200e-6)
    n = timed(draws(1, 20, 1.6e-3, 0.02), calib=320e-6)  # the calibration slowed as much
    verdict, _, note = time_verdict(b, n, TH)
    assert verdict == "ambiguous" and note.startswith("calibration:")
    # The same slowdown on a machine whose calibration did not move is a real one.
    assert time_verdict(b, timed(n.samples, calib=201e-6), TH)[0] == "slower"


def test_wall_time_that_was_waiting_for_a_core_is_not_a_slowdown():
    own = draws(1, 20, 1e-3, 0.02)
    waits = draws(2, 20, 0.8e-3, 0.05)  # queued behind other work: wall = own work + wait
    b = timed(draws(0, 20, 1e-3, 0.02), own=draws(0, 20, 1e-3, 0.02))
    n = timed(own + waits, own=own, contention="load: 2.0 other runnable tasks beside 1 thread(s) on 2 cores")
    verdict, _, note = time_verdict(b, n, TH)
    assert verdict == "ambiguous" and note.startswith("contention:")


def test_a_real_tenfold_slowdown_under_contention_is_still_slower():
    # Queued for a core *and* ten times the work: the work alone separates.
    own = draws(1, 7, 10e-3, 0.02)
    n = timed(own + 5e-3, own=own, contention="descheduled: the calling thread waited for a core 33% ...")
    b = timed(draws(0, 7, 1e-3, 0.02), own=draws(0, 7, 1e-3, 0.02))
    assert time_verdict(b, n, TH)[0] == "slower"


def test_a_drifting_calibration_needs_the_factor_times_the_drift():
    # Calibration drift (a co-runner thrashing the caches) slows the work itself, waits or not:
    # a separation within factor x drift is not judged, a larger one is.
    drift = "drift: the calibration took x1.30 as long after the point as before"
    b = timed(draws(0, 20, 1e-3, 0.02), own=draws(0, 20, 1e-3, 0.02))
    n = timed(draws(1, 20, 1.5e-3, 0.02), own=draws(1, 20, 1.5e-3, 0.02), contention=drift, drift=1.3)
    verdict, _, note = time_verdict(b, n, TH)
    assert verdict == "ambiguous" and note.startswith("contention:") and "drifted x1.30" in note
    n = timed(draws(1, 20, 10e-3, 0.02), own=draws(1, 20, 10e-3, 0.02), contention=drift, drift=1.3)
    assert time_verdict(b, n, TH)[0] == "slower"


def test_contention_without_a_measure_of_it_is_not_judged():
    # Throttled clocks, or load without the wait figures (CUDA, several threads): no verdict.
    for reason in ("throttled: GPU clocks throttled (NVML reasons 0x4)", "load: 3.0 other runnable tasks"):
        n = timed(draws(1, 20, 10e-3, 0.02), contention=reason)
        verdict, _, note = time_verdict(timed(draws(0, 20, 1e-3, 0.02)), n, TH)
        assert verdict == "ambiguous" and note == f"contention: {reason}"


def test_a_point_that_moved_as_a_whole_is_ambiguous_by_the_relative_samples():
    rel = draws(5, 20, 3.0, 0.02)  # this variant over the native op, round by round: unchanged
    b = timed(draws(0, 20, 1e-3, 0.02), rel=rel)
    n = timed(draws(1, 20, 1.6e-3, 0.02), rel=draws(6, 20, 3.0, 0.02))
    verdict, _, note = time_verdict(b, n, TH)
    assert verdict == "ambiguous" and note.startswith("relative:")
    n = timed(n.samples, rel=draws(6, 20, 4.8, 0.02))  # 1.6x against the native op too: real
    assert time_verdict(b, n, TH)[0] == "slower"


# ---------------------------------------------------------------- whole comparisons


def _point(variant: str, mode: str, wall: np.ndarray, native_wall: np.ndarray, **env) -> dict:
    """A row with the relative samples the interleaved timer gives (round by round)."""
    r = row(variant, mode, samples=list(wall), **env)
    r["time_rel_samples"] = list(wall / native_wall)
    r["calib_before_s"] = r["calib_after_s"] = 200e-6
    return r


def _run(seed: int, slow: dict[str, float], machine: float = 1.0, **env) -> pd.DataFrame:
    """Three variants timed interleaved at one point (fwd), the native op first; `slow` scales a
    variant's work, `machine` every call (a slower machine)."""
    rng = np.random.default_rng(seed)
    native = machine * slow.get("torch_cross_entropy", 1.0) * 20e-6 * np.exp(rng.normal(0, 0.02, 30))
    rows = [_point("torch_cross_entropy", "fwd", native, native, **env)]
    for name, base in (("chunked", 60e-6), ("online", 45e-6)):
        wall = machine * slow.get(name, 1.0) * base * np.exp(rng.normal(0, 0.02, 30))
        rows.append(_point(name, "fwd", wall, native, **env))
    return frame(*rows)


def test_the_slowed_variant_is_blamed_and_the_unchanged_native_is_not():
    c = compare(_run(0, {}), _run(1, {"chunked": 20.0}))
    verdicts = dict(zip(c.rows["variant"], c.rows["time"]))
    assert verdicts == {"torch_cross_entropy": "same", "chunked": "slower", "online": "same"}
    assert c.exit_code == 1 and list(c.regressions["variant"]) == ["chunked"]


def test_a_slowed_native_op_is_blamed_and_the_others_are_not_slower():
    c = compare(_run(0, {}), _run(1, {"torch_cross_entropy": 1.5}))
    verdicts = dict(zip(c.rows["variant"], c.rows["time"]))
    assert verdicts["torch_cross_entropy"] == "slower"
    assert "slower" not in (verdicts["chunked"], verdicts["online"])


def test_the_relative_basis_gates_across_two_machines_of_different_speed():
    base = _run(0, {}, device_name="runner A")
    new = _run(1, {"online": 1.5}, machine=2.0, device_name="runner B")  # a runner twice as slow
    absolute = compare(base, new)
    assert "time" in absolute.demoted and absolute.exit_code == 0  # two machines: information
    relative = compare(base, new, Thresholds(time_basis="relative"))
    assert "time" not in relative.demoted
    verdicts = dict(zip(relative.rows["variant"], relative.rows["time"]))
    assert verdicts == {"torch_cross_entropy": "same", "chunked": "same", "online": "slower"}
    assert relative.exit_code == 1


def test_ambiguous_rows_are_counted_with_their_reasons_and_strict_fails_on_them():
    base = frame(row("a", samples=draws(3, 10, 1e-3, 0.6)), row("b", samples=draws(5, 10, 1e-3, 0.02)))
    new = frame(row("a", samples=draws(4, 10, 1.5e-3, 0.6)), row("b", samples=draws(6, 10, 1e-3, 0.02)))
    c = compare(base, new)
    assert list(c.rows["time"]) == ["ambiguous", "same"] and c.exit_code == 0
    text = console(c)
    assert "1 time rows ambiguous (1 spread)" in text and "Ambiguous time rows: 1" in text
    assert "Ambiguous time rows: 1" in markdown(c)
    strict = compare(base, new, Thresholds(strict=True))
    assert strict.exit_code == 1 and "[strict: ambiguity fails]" in console(strict)
    assert compare(base, new, Thresholds(strict=True), gates=("accuracy",)).exit_code == 0


def test_rows_from_before_the_timing_evidence_are_judged_on_their_samples():
    # A baseline written before calibration, waits and relative samples existed.
    base = frame(row("a", samples=draws(0, 20, 1e-3, 0.05)))
    new = _run(1, {})
    new = new[new["variant"] == "torch_cross_entropy"].assign(variant="a")
    new["time_samples_s"] = [list(draws(1, 20, 1.6e-3, 0.05))]
    assert compare(base, new).rows["time"].iloc[0] == "slower"
    assert ENV["num_threads"] == 2  # the premise: no wait evidence on these rows


def _points(shifts: list[float], seed: int = 0, variants: tuple[str, ...] = ("a",)) -> pd.DataFrame:
    """Each variant at len(shifts) points (logit scales), each row's samples scaled by its
    point's shift."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in variants:
        for k, shift in enumerate(shifts):
            r = row(name, samples=list(shift * 1e-3 * np.exp(rng.normal(0, 0.02, 15))))
            r["logit_scale"] = float(k + 1)
            rows.append(r)
    return frame(*rows)


def test_a_lone_row_needs_the_factor_cubed_and_corroborated_rows_the_factor():
    # Seen in A/A tries: one whole row of one point ran 1.45x, and once 1.84x, slower in the
    # second process (same code, no contention, calibrations equal), while the variant's 23
    # other rows did not move.
    for shift in (1.45, 1.84, 2.1):
        c = compare(_points([1.0] * 8), _points([shift] + [1.0] * 7, seed=1))
        assert c.rows["time"].iloc[0] == "ambiguous" and c.rows["time_note"].iloc[0].startswith("lone:")
        assert c.exit_code == 0
    # Far beyond the factor, alone: a real slowdown at one point.
    assert compare(_points([1.0] * 8), _points([3.0] + [1.0] * 7, seed=1)).rows["time"].iloc[0] == "slower"
    # The same 1.45x at every point corroborates itself.
    everywhere = compare(_points([1.0] * 8), _points([1.45] * 8, seed=1))
    assert set(everywhere.rows["time"]) == {"slower"}
    # A run of one or two points has nothing to corroborate with: the factor alone decides.
    assert compare(_points([1.0] * 2), _points([1.45, 1.0], seed=1)).rows["time"].iloc[0] == "slower"


def test_a_point_where_every_variant_moved_is_the_host_not_a_variant():
    # Seen in an A/A try: the fwd rows of three variants at one point ran x2.0 slower in the
    # second process, the point's calibration unmoved, every other row the same.
    four = ("a", "b", "c", "d")
    c = compare(_points([1.0] * 8, variants=four), _points([2.5] + [1.0] * 7, seed=1, variants=four))
    moved = c.rows[c.rows["logit_scale"] == 1.0]
    assert set(moved["time"]) == {"ambiguous"} and c.exit_code == 0
    assert all(note.startswith("point: ") for note in moved["time_note"])
    # One variant slowed at that point alone is still judged on its own (x3 > the lone factor).
    one = _points([1.0] * 8, seed=1, variants=four)
    first = one.index[(one["variant"] == "a") & (one["logit_scale"] == 1.0)][0]
    one.at[first, "time_samples_s"] = list(3 * np.asarray(one.at[first, "time_samples_s"]))
    c = compare(_points([1.0] * 8, variants=four), one)
    slowed = c.rows[(c.rows["variant"] == "a") & (c.rows["logit_scale"] == 1.0)]
    assert list(slowed["time"]) == ["slower"] and c.exit_code == 1
    # A slowdown at every point of every variant (a change common to all) is corroborated by
    # each variant's own rows, not excused as the host's.
    everywhere = compare(_points([1.0] * 8, variants=four), _points([1.6] * 8, seed=1, variants=four))
    assert set(everywhere.rows["time"]) == {"slower"}
