#!/usr/bin/env bash
# The GPU reference run: what made results/reference/h200/ (one call of about 8 minutes).
#
#   bash scripts/gpu_reference_run.sh OUTDIR [SWEEP_SECONDS]
#
# On a CUDA machine, from the project root, with the Hydra wheels in .whl/ (a typical CUDA image
# has torch, triton, pandas, pyarrow, seaborn and jinja2 but not Hydra; ../shared/gpu/README.md).
#   1. the GPU check (scripts/gpu_check.py: the CUDA tests, the headline point, the kernel scan);
#   2. `+sweep=gpu` under a time limit (SWEEP_SECONDS, default 300): its log keeps the progress
#      lines, whose ETA is checked against the time each job really took afterwards;
#   3. the sweep's rows, concatenated into one parquet file (files come back flat).
set -u
out=${1:?usage: gpu_reference_run.sh OUTDIR [SWEEP_SECONDS]}
sweep_s=${2:-300}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu \
    --format=csv >"$out/nvidia_smi.csv" 2>&1
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'

t0=$(date +%s)
timeout 300 python3 scripts/gpu_check.py --pytest-log "$out/pytest_cuda.txt" 2>&1 | tee "$out/gpu_check.txt"
echo "gpu_check wall: $(( $(date +%s) - t0 )) s" | tee -a "$out/gpu_check.txt"

t0=$(date +%s)
timeout "$sweep_s" python3 -m harness +sweep=gpu hydra.sweep.dir=/tmp/x/gpu 2>&1 | tee "$out/sweep_gpu.log"
echo "sweep wall: $(( $(date +%s) - t0 )) s (limit $sweep_s s)" | tee -a "$out/sweep_gpu.log"
python3 - "$out" <<'EOF'
import sys
from harness.results import load
try:
    rows = load("/tmp/x/gpu")
except Exception as exc:  # a sweep stopped before its first point wrote nothing
    print(f"no rows: {exc}")
else:
    rows.to_parquet(f"{sys.argv[1]}/gpu_rows.parquet")
    print(f"{len(rows)} rows from {rows.groupby(['num_classes', 'dtype', 'targets']).ngroups} points")
EOF
