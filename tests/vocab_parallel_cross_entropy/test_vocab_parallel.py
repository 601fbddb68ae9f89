"""The vocabulary-parallel family through the harness, with its ranks as processes (gloo on the
loopback): correct variants `ok` at tp = 1..4 with the options and uneven shards; the
collectives counted, matching each variant's declared ones, and the modelled time from them;
the bug catalogue (tests/vocab_parallel_bugs.py) flagged; faults (tests/vocab_parallel_faults.py)
made `error` rows within the time limit, with the sweep going on and no process left; bad
settings refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.distributed as dist

from harness import job
from harness.config import SettingError
from harness.vocab_parallel_cross_entropy import collectives
from harness.vocab_parallel_cross_entropy.point import point as vp_point
from harness.vocab_parallel_cross_entropy.ranks import RANKS, RankFailure, Ranks, rank_device
from harness.vocab_parallel_cross_entropy.variants import dtensor, gathered, megatron

from ..conftest import REPO, job_config, run_job

FAMILY = "vocab_parallel_cross_entropy"
ALL_OPTIONS = dict(
    ignore_fraction=0.25, label_smoothing=0.1, z_loss=1e-4, softcap=30.0, class_weights="seeded"
)
DECLARED = {
    "megatron": megatron.COLLECTIVES,
    "all_gather": gathered.COLLECTIVES,
    "loss_parallel": dtensor.COLLECTIVES,
}


def _rows(timed: bool = True, **settings) -> pd.DataFrame:
    base = dict(family=FAMILY, batch_size=16, num_classes=37, targets="hard", logit_scale=2.0)
    cfg = job_config(**{**base, **settings})
    cfg.timing.enabled = timed
    return pd.DataFrame(run_job(cfg))


@pytest.fixture(scope="module", autouse=True)
def _stop_ranks():
    yield
    RANKS.stop()


@pytest.mark.parametrize("tp", [1, 2, 3, 4])
def test_correct_variants_are_ok_with_the_options_and_uneven_shards(tp):
    """V = 37: shards of 37, 19/18, 13/13/11, 10/10/10/7; fp32 with every option, bf16 plain
    under reduction none. Every row is `ok`, or `unsupported` for an option the variant does
    not take (loss_parallel: label smoothing, z-loss, softcap)."""
    optioned = _rows(tp=tp, dtype="fp32", **ALL_OPTIONS)
    plain = _rows(tp=tp, dtype="bf16", reduction="none", seed=1)
    for rows in (optioned, plain):
        judged = rows[rows["status"] != "unsupported"]
        assert (judged["status"] == "ok").all(), judged[["variant", "mode", "status", "message"]]
        assert (judged["rank_loss_spread"] == 0).all()  # every rank returned the same loss
        assert (judged["tp"] == tp).all()
    assert set(optioned.loc[optioned["status"] == "unsupported", "variant"]) == {"loss_parallel"}
    assert set(plain["variant"]) == {"megatron", "all_gather", "loss_parallel"}
    _check_collectives(pd.concat([optioned, plain]))


def _check_collectives(rows: pd.DataFrame) -> None:
    """Counted collectives are each variant's declared ones, their bytes too; the modelled time
    is the ring's on those bytes."""
    for _, row in rows[rows["status"] == "ok"].iterrows():
        p = vp_point(
            job_config(
                **{k: row[k] for k in ("batch_size", "num_classes", "dtype", "tp", "logit_scale", "seed")},
                **_options(row),
            )
        )
        declared = DECLARED[row["variant"]](p)
        fwd = declared["fwd"]
        bwd = declared["bwd"] if row["mode"] == "fwd_bwd" else []
        assert row["collectives_fwd"] == len(fwd) and row["collectives_bwd"] == len(bwd), row["variant"]
        assert row["collective_bytes_fwd"] == sum(b for _, b in fwd), row["variant"]
        assert row["collective_bytes_bwd"] == sum(b for _, b in bwd)
        calls = [collectives.Collective(k, b) for k, b in fwd + bwd]
        assert row["comm_model_s"] == pytest.approx(collectives.modelled_s(calls, p.tp, row["link_gbps"]))
        assert row["comm_model_tp8_s"] == pytest.approx(collectives.modelled_s(calls, 8, row["link_gbps"]))
        if row["variant"] in ("megatron", "loss_parallel"):  # PyTorch's own test of loss_parallel
            assert (row["collectives_fwd"], row["collectives_bwd"]) == (3, 0)


def _options(row) -> dict:
    keys = ("ignore_fraction", "label_smoothing", "z_loss", "class_weights", "reduction")
    out = {k: row[k] for k in keys}
    out["softcap"] = row["softcap"] or None
    return {**out, "family": FAMILY, "targets": "hard", "device": "cpu"}


def test_the_ring_model_at_tp_8_on_nvlink():
    """Megatron at N = 8192 rows: 3 all-reduces of 32 KiB; a ring of 8 sends 2 * 7/8 of each
    over the link in 14 steps of 2 us: 3 * (57344 B / 450 GB/s + 28 us) = 84.4 us."""
    p = vp_point(job_config(family=FAMILY, batch_size=8192, num_classes=128256, tp=8, targets="hard"))
    calls = [collectives.Collective(k, b) for k, b in megatron.COLLECTIVES(p)["fwd"]]
    assert [c.payload for c in calls] == [32768] * 3
    assert collectives.modelled_s(calls, 8, 450.0) == pytest.approx(3 * (57344 / 450e9 + 14 * 2e-6))
    assert collectives.modelled_s(calls, 1, 450.0) == 0.0


BUGS = ("local_label_smoothing", "max_not_all_reduced", "grad_scaled_by_tp", "ignore_on_one_shard")


@pytest.mark.parametrize("tp", [2, 4])
def test_the_bugs_are_flagged_and_the_same_code_without_them_is_not(tp):
    variants = [f"{b}@tests.vocab_parallel_bugs:{b}" for b in ("correct", *BUGS)]
    rows = _rows(tp=tp, dtype="fp32", ignore_fraction=0.25, label_smoothing=0.1, variants=variants)
    both = rows[rows["mode"] == "fwd_bwd"].set_index("variant")
    assert (rows.loc[rows["variant"] == "correct", "status"] == "ok").all()
    for bug in BUGS:
        assert both.loc[bug, "status"] == "inaccurate", (bug, both.loc[bug, ["loss_rel_err", "grad_rel_err"]])
    # the gradient scaled by tp has the right loss: its forward is right, its backward tp times off
    fwd = rows[rows["mode"] == "fwd"].set_index("variant")
    assert fwd.loc["grad_scaled_by_tp", "status"] == "ok"
    assert both.loc["grad_scaled_by_tp", "grad_rel_err"] == pytest.approx(tp - 1, rel=1e-4)
    # a rank that ignores nothing returns another loss than rank 0's
    assert fwd.loc["ignore_on_one_shard", "rank_loss_spread"] > 1e-3


def test_loss_parallel_backward_reads_the_weight_of_an_ignored_row():
    """PyTorch's loss_parallel backward gathers the class weight at the raw target, ignored rows'
    -100 included (torch/distributed/tensor/parallel/loss.py, _nll_loss_and_log_softmax_backward:
    torch.gather(w, channel_dim, target), where the forward uses safe_target): an `error` row,
    its forward `ok`; with no ignored row, or no weights, it is `ok`."""
    rows = _rows(tp=2, dtype="fp32", ignore_fraction=0.25, class_weights="seeded", variants=["loss_parallel"])
    by_mode = rows.set_index("mode")
    assert by_mode.loc["fwd", "status"] == "ok"
    assert by_mode.loc["fwd_bwd", "status"] == "error"
    assert "index -100 is out of bounds" in by_mode.loc["fwd_bwd", "message"]
    for settings in ({"class_weights": "seeded"}, {"ignore_fraction": 0.25}):
        other = _rows(tp=2, dtype="fp32", variants=["loss_parallel"], **settings)
        assert (other["status"] == "ok").all(), settings
        # err_vs_native from the native op's untimed call (judged without the total reference)
        assert other["err_vs_native"].notna().all(), settings


FAULTS = {
    "raises_on_rank_1": "rank 1 raised ValueError: rank 1's own error",
    "dies_on_rank_1": "rank 1 died (exit code 3)",
    "hangs_on_rank_1": "rank 1 did not reach the collective within tp_timeout_s=3 s",
    "raises_on_rank_0": "ValueError: rank 0's own error",
}


def test_a_rank_that_raises_dies_or_hangs_is_an_error_row_and_the_point_goes_on():
    variants = [f"{f}@tests.vocab_parallel_faults:{f}" for f in FAULTS] + ["megatron"]
    t0 = time.monotonic()
    rows = _rows(tp=3, dtype="fp32", tp_timeout_s=3.0, variants=variants, timed=False)
    elapsed = time.monotonic() - t0
    for fault, words in FAULTS.items():
        got = rows[rows["variant"] == fault]
        assert (got["status"] == "error").all(), got[["mode", "status", "message"]]
        assert all(words in m for m in got["message"]), (fault, list(got["message"]))
    after = rows[rows["variant"] == "megatron"]
    assert (after["status"] == "ok").all(), list(after["message"])
    # two hangs of 3 s, eight restarts of the ranks: well under the minute a hang would cost
    assert elapsed < 60, elapsed


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a build without CUDA")
def test_a_helper_that_cannot_set_up_is_named_at_once_not_after_the_rendezvous():
    # device="cuda" on a build without CUDA: each helper's torch.cuda.set_device raises before
    # the rendezvous, which would otherwise hold rank 0 for the whole tp_timeout_s
    ranks = Ranks()
    t0 = time.monotonic()
    with pytest.raises(RankFailure, match=r"^rank 1 could not start: \w+Error: "):
        ranks._start(SimpleNamespace(tp=2, device="cuda", tp_timeout_s=30.0))
    assert time.monotonic() - t0 < 15 and not ranks.procs and not dist.is_initialized()


def test_a_rank_device_always_names_its_gpu(monkeypatch):
    # torch.cuda.set_device refuses a bare "cuda" (found on an H200: tp=2 on one GPU)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert [rank_device("cuda", 2, r) for r in (0, 1)] == ["cuda:0", "cuda:0"]
    assert rank_device("cuda:0", 4, 3) == "cuda:0" and rank_device("cpu", 4, 3) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert [rank_device("cuda", 2, r) for r in (0, 1)] == ["cuda:0", "cuda:1"]


def test_a_rank_that_writes_into_its_shard_is_a_wrote_input_row_and_is_restored():
    variants = ["writes_on_rank_1@tests.vocab_parallel_faults:writes_on_rank_1", "megatron"]
    rows = _rows(tp=3, dtype="fp32", variants=variants, timed=False)
    wrote = rows[rows["variant"] == "writes_on_rank_1"].set_index("mode")
    assert wrote.loc["fwd", "status"] == "wrote_input"
    assert wrote.loc["fwd", "message"] == "rank 1 wrote into its logits shard (restored)"
    # in fwd_bwd autograd itself refuses the write into a tensor the backward needs, on rank 1
    assert wrote.loc["fwd_bwd", "status"] == "error"
    assert wrote.loc["fwd_bwd", "message"].startswith("RankFailure: rank 1 raised RuntimeError")
    assert (rows.loc[rows["variant"] == "megatron", "status"] == "ok").all()  # restored before it


def test_no_rank_is_left_behind_by_a_run_or_a_killed_rank(tmp_path):
    """The CLI with a rank that dies and one that is fine: when it exits, no process that
    inherited its environment is alive (each helper is a daemon, stopped at exit; a dead
    one's group is torn down). The mark is an environment variable every child inherits."""
    mark = f"vp-{os.getpid()}-{time.monotonic_ns()}"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "family=vocab_parallel_cross_entropy",
            "tp=3",
            "batch_size=8",
            "num_classes=37",
            "timing.enabled=false",
            f"hydra.run.dir={tmp_path}",
            "variants=[dies_on_rank_1@tests.vocab_parallel_faults:dies_on_rank_1,megatron]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HARNESS_RANK_MARK": mark},
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "rank 1 died (exit code 3)" in res.stdout
    deadline = time.monotonic() + 5.0
    while (left := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left


def _marked(mark: str) -> list[int]:
    """Live processes whose environment holds HARNESS_RANK_MARK=mark (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"HARNESS_RANK_MARK={mark}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"tp": 0}, "tp=0 is not allowed: use an integer >= 1 (the number of ranks)"),
        ({"tp": 40}, "tp=40 is not allowed with num_classes=37: use tp <= num_classes"),
        ({"tp": 4, "num_classes": 5}, "tp=4 with num_classes=5 leaves rank 3 no classes"),
        ({"link_gbps": -1.0}, "link_gbps=-1.0 is not allowed: use a finite number > 0"),
        ({"targets": "soft", "family": FAMILY, "tp": 2}, None),  # the schema's default: read as hard
        ({"family": "cross_entropy", "tp": 2}, "tp=2"),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    base = dict(family=FAMILY, batch_size=8, num_classes=37, targets="hard")
    cfg = job_config(**{**base, **settings})
    if message is None:
        assert job.points(cfg)
        return
    with pytest.raises(SettingError) as err:
        job.points(cfg)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_the_report_has_the_family_section_and_compare_joins_on_tp(tmp_path):
    """Rows of two tp values into a run folder: the report's section shows both, each variant's
    collectives; compare of the run with itself joins every row (tp is a key: none unmatched)."""
    from harness.results import write_rows

    for tp in (1, 2):
        rows = _rows(tp=tp, dtype="fp32", variants=["megatron", "all_gather"], timed=False)
        write_rows(rows.to_dict("records"), tmp_path / "run" / f"tp{tp}", f"tp={tp}")
    report = subprocess.run(
        [sys.executable, "scripts/report.py", str(tmp_path / "run"), "--out", str(tmp_path / "report")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Vocabulary-parallel cross-entropy" in html
    assert "3 + 0" in html and "1 + 0" in html  # megatron's and all_gather's collectives
    compare = subprocess.run(
        [sys.executable, "scripts/compare.py", str(tmp_path / "run"), str(tmp_path / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    assert "only in" not in compare.stdout
