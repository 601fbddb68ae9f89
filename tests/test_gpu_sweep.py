"""The gpu sweep: its axes are the real sizes, and without CUDA it refuses in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

GPU_SWEEP = Path(__file__).resolve().parent.parent / "conf" / "sweep" / "gpu.yaml"


def _axis(params, key):
    return [float(v) if "." in v else int(v) for v in str(params[key]).split(",")]


def test_gpu_sweep_axes_are_llm_sized():
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
