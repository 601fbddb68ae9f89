"""Inputs no variant can change: a scribbling variant is caught and undone; one that overwrites
its input by design gets a fresh copy before every call, outside the timed interval."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.cross_entropy.point import Point
from harness.cross_entropy.variants import REGISTRY, get
from harness.measure import isolation
from harness.measure.isolation import Feed, Guard, fingerprint, same_bits
from harness.measure.timing import time_cpu
from harness.runner import run_point

OFF = SimpleNamespace(enabled=False)
TIMED = SimpleNamespace(enabled=True, warmup=1, min_reps=3, min_time_s=0.0, max_reps=3)
POINT = Point(16, 100, "fp32", 1.0, "cpu", "soft", seed=0)
LATER = ["torch_cross_entropy", "chunked", "online"]


def _statuses(rows):
    return {
        (r["variant"], r["mode"]): (r["status"], r.get("loss_rel_err"), r.get("grad_rel_err")) for r in rows
    }


@pytest.mark.parametrize("kept_as", ["copy", "fingerprint"])
def test_a_scribbling_variant_leaves_later_verdicts_unchanged(kept_as, monkeypatch):
    if kept_as == "fingerprint":  # as the logits of any point of 1 MiB or more are kept
        monkeypatch.setattr(isolation, "COPY_BELOW_BYTES", 0)
    clean = run_point(POINT, [REGISTRY[n] for n in LATER], OFF, OFF, {})
    scribbler = get("tests.fault_variants:scribbles")
    rows = run_point(POINT, [scribbler] + [REGISTRY[n] for n in LATER], TIMED, OFF, {})
    own = [r for r in rows if r["variant"] == scribbler.name]
    assert [r["status"] for r in own] == ["wrote_input", "wrote_input"]
    assert all(
        "wrote into the inputs" in r["message"] and "overwrites_input=True" in r["message"] for r in own
    )
    assert all(r.get("time_median_s") is None for r in own)  # not timed on inputs it changed
    after = _statuses([r for r in rows if r["variant"] != scribbler.name])
    assert after == _statuses(clean)
    assert all(s == "ok" for s, _, _ in after.values())


def test_without_the_guard_the_scribbler_would_corrupt_the_others():
    """The test above can fail: the scribbler really does change what it is given."""
    z = torch.randn(4, 10)
    kept = z.clone()
    from tests.fault_variants import scribbles

    scribbles(z, torch.softmax(torch.randn(4, 10), 1))
    assert not same_bits(z, kept)


def test_a_declared_overwriter_gets_a_fresh_copy_every_call():
    declared = get("tests.fault_variants:overwrites_by_design")
    assert declared.overwrites_input
    rows = run_point(
        POINT, [declared, REGISTRY["torch_cross_entropy"]], TIMED, SimpleNamespace(enabled=True), {}
    )
    by = {(r["variant"], r["mode"]): r for r in rows}
    for mode in ("fwd", "fwd_bwd"):
        assert by[(declared.name, mode)]["status"] == "ok"
        assert by[("torch_cross_entropy", mode)]["status"] == "ok"
        assert by[(declared.name, mode)]["reps"] == 3
        # the copy is made outside the memory measurement: same peak as the plain op
        assert (
            by[(declared.name, mode)]["peak_mem_bytes"] == by[("torch_cross_entropy", mode)]["peak_mem_bytes"]
        )


def test_the_fresh_copy_is_made_outside_the_timed_call():
    source = torch.ones(1000)
    feed = Feed(logits=source, targets=torch.zeros(1), fresh=True)
    seen = []

    def call():
        seen.append(float(feed.logits.sum()))  # each call must see the original ones ...
        feed.logits.zero_()  # ... even though the previous call zeroed them

    stats = time_cpu(call, warmup=1, min_reps=4, min_time_s=0.0, max_reps=4, prepare=feed.refresh)
    assert seen == [1000.0] * 5 and len(stats.samples) == 4
    assert float(source.sum()) == 1000.0


def test_the_guard_compares_bits_and_restores():
    z = torch.tensor([1.0, float("nan"), -0.0])
    t = torch.tensor([3])
    guard = Guard(z, t, names=("logits", "targets"))
    assert guard.changed() == []  # NaN == NaN bitwise
    z[2] = 0.0  # -0.0 -> +0.0 is a write
    t[0] = 4
    assert guard.changed() == ["logits", "targets"]
    assert same_bits(z, torch.tensor([1.0, float("nan"), -0.0])) and int(t[0]) == 3


def test_system_exit_and_interrupt_from_a_variant_are_error_rows():
    names = [
        "tests.fault_variants:exits_3",
        "tests.fault_variants:exits_0",
        "tests.fault_variants:interrupts_itself",
    ]
    rows = run_point(POINT, [get(n) for n in names] + [REGISTRY["torch_cross_entropy"]], OFF, OFF, {})
    by = {(r["variant"], r["mode"]): r for r in rows}
    assert by[(names[0], "fwd")]["status"] == "error" and "sys.exit(3)" in by[(names[0], "fwd")]["message"]
    assert by[(names[1], "fwd")]["status"] == "error" and "sys.exit(0)" in by[(names[1], "fwd")]["message"]
    assert (
        by[(names[2], "fwd_bwd")]["status"] == "error"
        and "KeyboardInterrupt" in by[(names[2], "fwd_bwd")]["message"]
    )
    assert by[("torch_cross_entropy", "fwd_bwd")]["status"] == "ok"


def _made() -> dict[str, torch.Tensor]:
    """A 2 MiB input, made again bit for bit on each call (as a point's seeded draw is)."""
    z = torch.randn(512, 1024, generator=torch.Generator().manual_seed(0))
    z[5, 5] = -0.0
    z[6, 6] = float("nan")
    return {"logits": z}


WRITES = {
    "one ulp": lambda z: z.view(torch.int32)[3, 7].add_(1),
    "-0 to +0": lambda z: z[5, 5].fill_(0.0),
    "a NaN's payload": lambda z: z.view(torch.int32)[6, 6].add_(1),
    "two rows swapped": lambda z: z.index_copy_(0, torch.tensor([1, 2]), z[[2, 1]].clone()),
    "two entries of a row swapped": lambda z: z[0].index_copy_(0, torch.tensor([3, 9]), z[0, [9, 3]].clone()),
    "every entry doubled": lambda z: z.mul_(2.0),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_fingerprinted_input_catches_any_write_and_is_remade(write):
    live = _made()["logits"]
    guard = Guard(live, names=("logits",), remake=_made)
    assert guard.held_bytes() < live.numel() * live.element_size() / 100  # no copy: 12 KiB of sums
    assert guard.changed() == []
    WRITES[write](live)
    assert not same_bits(live, _made()["logits"])
    assert guard.changed() == ["logits"]
    assert same_bits(live, _made()["logits"])  # restored from the remade draw
    assert guard.changed() == []


def test_the_fingerprint_sums_bits_exactly():
    # int64 sums of the bit patterns: a row of 1.0 (0x3F800000) and -0.0 (0x80000000 as int32)
    z = torch.tensor([[1.0, -0.0], [0.5, 2.0]])
    rows, cols = fingerprint(z)
    bits = z.view(torch.int32).to(torch.int64)
    assert torch.equal(rows, bits.sum(1)) and torch.equal(cols, bits.sum(0))
    assert int(rows[0]) == 0x3F800000 - 2**31


def test_a_variant_writing_into_the_class_weights_is_caught():
    weighted = Point(16, 100, "fp32", 1.0, "cpu", "hard", seed=0, class_weights="seeded")
    later = [REGISTRY["torch_cross_entropy"]]
    clean = run_point(weighted, later, OFF, OFF, {})
    rows = run_point(weighted, [get("tests.fault_variants:scribbles_on_weights")] + later, OFF, OFF, {})
    own = [r for r in rows if r["variant"].endswith("scribbles_on_weights")]
    # fwd_bwd: autograd itself refuses the weights it saved being changed (an error row); the
    # guard still names the write, and restores the weights in both modes
    assert [r["status"] for r in own] == ["wrote_input", "error"]
    assert all("wrote into the inputs it was given (weight;" in r["message"] for r in own)
    assert _statuses([r for r in rows if r not in own]) == _statuses(clean)


def test_the_inputs_are_checked_once_after_each_call_and_no_more(monkeypatch):
    # A check is a pass over the logits (a fingerprint at 1 MiB and up): one after each untimed
    # call, none again where nothing was called since. With no second backward and no
    # metamorphic call (a large point's case), one variant's two rows check twice, and the point
    # once more after its timing; a scribbler is still caught at its first call.
    from harness import runner

    monkeypatch.setattr(runner, "SECOND_BACKWARD_MAX_BYTES", 0)
    checks = []
    real = Guard.changed
    monkeypatch.setattr(Guard, "changed", lambda self: checks.append(1) or real(self))
    rows = run_point(POINT, [REGISTRY["online"]], OFF, OFF, {})
    assert [r["status"] for r in rows] == ["ok", "ok"] and len(checks) == 3
    scribbler = get("tests.fault_variants:scribbles")
    rows = run_point(POINT, [scribbler, REGISTRY["online"]], OFF, OFF, {})
    assert [r["status"] for r in rows] == ["wrote_input", "wrote_input", "ok", "ok"]
