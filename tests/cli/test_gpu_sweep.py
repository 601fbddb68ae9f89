"""The gpu sweep: its axes are the real sizes, and without CUDA it refuses in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

SWEEPS = Path(__file__).resolve().parents[2] / "conf" / "sweep"
GPU_SWEEP = SWEEPS / "gpu_full.yaml"


def _axis(params, key):
    return [float(v) if "." in v else int(v) for v in str(params[key]).split(",")]


def test_gpu_sweep_is_the_study_sized_for_a_person():
    # 12 points at B = 8192: the vocabularies of Llama-2, Llama-3 and Gemma, bf16 and fp32, both
    # target kinds; every CUDA variant. The 15-minute budget is estimated in the file.
    cfg = OmegaConf.load(SWEEPS / "gpu.yaml")
    params = cfg.hydra.sweeper.params
    assert cfg.batch_size == 8192 and cfg.device == "cuda" and list(cfg.get("variants", [])) == []
    assert set(_axis(params, "num_classes")) == {32000, 128256, 262144}
    axes = [str(params[k]).split(",") for k in params]
    points = 1
    for values in axes:
        points *= len(values)
    assert points == 12


def test_gpu_full_sweep_axes_are_llm_sized():
    cfg = OmegaConf.load(GPU_SWEEP)
    params = cfg.hydra.sweeper.params
    classes, batches = _axis(params, "num_classes"), _axis(params, "batch_size")
    assert set(classes) == {32000, 50257, 128256, 262144}
    assert max(batches) * max(classes) >= 2**30
    assert 8192 in batches and 128256 in classes  # the headline point of the README
    assert set(str(params.dtype).split(",")) == {"fp16", "bf16", "fp32"}
    assert set(_axis(params, "logit_scale")) == {1, 10, 100}
    assert set(str(params.targets).split(",")) == {"hard", "soft"}
    assert cfg.device == "cuda"
    assert list(cfg.get("variants", [])) == []  # every variant that imports


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_sweep_refuses_without_cuda(cli, tmp_path):
    out = cli("+sweep=gpu", f"hydra.sweep.dir={tmp_path / 'x'}", timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "+sweep=cpu" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_check_refuses_without_cuda_in_one_line():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "no CUDA device" in out.stderr


def test_the_h200_reference_rows_give_the_floor_table():
    # results/reference/h200 holds rows measured on an H200 (docs/gpu.md): the table there is
    # what scripts/floor_table.py prints from them, and so is every row the README quotes.
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [
            sys.executable,
            "scripts/floor_table.py",
            "results/reference/h200/gpu",
            "--classes",
            "128256",
            "--dtype",
            "bf16",
            "--targets",
            "hard",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()[2:]
    assert len(lines) == 8 and all("C=128256 bf16 hard" in line for line in lines)
    gpu = (repo / "docs" / "gpu.md").read_text()
    for line in lines:
        assert line in gpu, f"docs/gpu.md's H200 table differs from the rows: {line}"
    quoted = [x for x in (repo / "README.md").read_text().splitlines() if x.startswith("| B=8192 C=128256 ")]
    assert quoted and set(quoted) <= set(lines), "the README quotes a row the script does not print"


def test_the_triton_fused_table_is_the_h200_rows():
    # docs/gpu.md: triton_fused's fwd_bwd over the floor per (C, dtype, targets), from
    # results/reference/h200/gpu (time_median_s / floor_time_s, two decimals).
    import re

    import pandas as pd

    repo = Path(__file__).resolve().parents[2]
    rows = pd.read_parquet(repo / "results/reference/h200/gpu/rows.parquet")
    t = rows[(rows.variant == "triton_fused") & (rows["mode"] == "fwd_bwd")]
    gpu = (repo / "docs" / "gpu.md").read_text()
    header = "| C | bf16 hard (2L) | bf16 soft (3L) | fp32 hard (2L) | fp32 soft (3L) |"
    table = gpu[gpu.index(header) :].split("\n\n")[0]
    cells = 0
    for line in table.splitlines()[2:]:
        c, *xs = [x.strip() for x in line.strip("|").split("|")]
        for (dtype, targets), x in zip(
            [("bf16", "hard"), ("bf16", "soft"), ("fp32", "hard"), ("fp32", "soft")], xs
        ):
            r = t[(t.num_classes == int(c)) & (t.dtype == dtype) & (t.targets == targets)].iloc[0]
            assert f"{r.time_median_s / r.floor_time_s:.2f}x" == x, (c, dtype, targets, x)
            cells += 1
    assert cells == 12 and re.search(r"12 points in\s+\*\*208 s on one H200\*\*", gpu)
