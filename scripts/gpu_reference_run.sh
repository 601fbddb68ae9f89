#!/usr/bin/env bash
# The GPU reference run: what made results/reference/h200/.
#
#   bash scripts/gpu_reference_run.sh OUTDIR [STAGE ...]      (default stages: check sweep)
#
# Not yet run on a GPU: the gpu_options and linear stages, the read kernel's and the timer's CUDA
# tests (`KERNEL_TESTS='read_kernel or short_autograd' ... kernel`), and the tp stage since its
# helpers name their GPU (on 2026-12-04 every helper failed at set_device("cuda"); fixed). The
# footprint stage ran as two calls of its command with the variants split (results/reference/h200/
# README.md); the check stage's tests took more than 90 s there: give it its full 300 s. Also
# not yet run on a GPU: triton_fused's split paths with a wholly masked chunk and a softcap over
# masked classes (fixed on the CPU, 5901aac: `KERNEL_TESTS=masked ... kernel`), and
# F.cross_entropy's (N, C, d) form on CUDA (spatial_size; PyTorch #85791 was CUDA's alone).
# For the next session, in one call: CHECK_ARGS=--no-scan TP_ARGS="tp=2,4 batch_size=2048"
#   KERNEL_TESTS='masked or read_kernel or short_autograd'
#   bash scripts/gpu_reference_run.sh OUT tp check kernel gpu_options
#
# On a CUDA machine, from the project root, with the Hydra wheels in .whl/ (a typical CUDA image
# has torch, triton, pandas, pyarrow, seaborn and jinja2 but not Hydra; README, The GPU path).
# Stages, each under its own time limit, each leaving its files flat in OUTDIR:
#   check     the GPU check (scripts/gpu_check.py: the CUDA tests, the headline point, the
#             kernel scan): gpu_check.txt, pytest_cuda.txt (about 2 minutes on an H200)
#   sweep     `+sweep=gpu`: sweep_gpu.log (progress lines with their ETA), gpu_rows.parquet
#             (about 4 minutes)
#   options   `+sweep=options device=cuda`: the loss options on the GPU variants (Liger,
#             triton_fused): options_rows.parquet, sweep_options.log
#   floor     triton_fused, F.cross_entropy and Liger at fp32, C = 32000 and 262144: floor_rows.parquet
#             (whether any row beats the floor of its mode)
#   gpu_options  `+sweep=gpu_options`: the loss options at the headline shape: gpu_options_rows.parquet
#   linear    `+sweep=linear_gpu`: fused linear + cross-entropy at LLM sizes: linear_rows.parquet
#   kernel    the CUDA tests of the kernel, its options, the ceilings and the timer: pytest_kernel.txt
#   footprint the largest `+sweep=gpu` point (fp32, soft targets, B=8192, C=262144: 8.6 GB of
#             logits and as much of targets) with every CUDA variant: whether each variant whose
#             own peak fits runs beside the harness's streamed references (harness_bytes in the
#             rows): footprint_rows.parquet, sweep_footprint.log
#   tp        the vocabulary-parallel family on CUDA (`+sweep=tp_gpu`; TP_ARGS: overrides, e.g. a
#             smaller batch, since one GPU makes every rank share it through gloo):
#             tp_rows.parquet, sweep_tp.log
#
# CHECK_ARGS: extra arguments of scripts/gpu_check.py in the check stage (e.g. --no-scan).
#
# DRY_RUN=1 prints each stage's commands (one per line, into the stage's log as well) instead of
# running them, and runs nothing on the device: tests/cli/test_gpu_script.py checks on a CPU that every
# stage's harness command composes, that its tests exist, and that the time limits fit a session.
set -u
out=${1:?usage: gpu_reference_run.sh OUTDIR [STAGE ...]}
shift
stages=${*:-check sweep}
mkdir -p "$out"
dry=${DRY_RUN:-}
run() {  # the command, or under DRY_RUN its words on one line
    if [ -n "$dry" ]; then
        printf 'run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}
if [ -n "$dry" ]; then
    echo "dry run: nothing is installed or measured" >"$out/nvidia_smi.csv"
elif compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
if [ -z "$dry" ]; then
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu \
        --format=csv >"$out/nvidia_smi.csv" 2>&1
    python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
fi

rows_to() {  # rows_to SWEEP_DIR FILE: every row of a sweep folder as one parquet file
    if [ -n "$dry" ]; then
        echo "rows: $1 -> $2"
        return
    fi
    python3 - "$1" "$2" <<'EOF'
import sys
from harness.results import load
try:
    rows = load(sys.argv[1])
except Exception as exc:  # a sweep stopped before its first point wrote nothing
    print(f"no rows in {sys.argv[1]}: {exc}")
else:
    rows.to_parquet(sys.argv[2])
    print(f"{len(rows)} rows -> {sys.argv[2]}")
EOF
}

for stage in $stages; do
    t0=$(date +%s)
    case $stage in
    check)
        run timeout 300 python3 scripts/gpu_check.py --pytest-log "$out/pytest_cuda.txt" ${CHECK_ARGS:-} 2>&1 | tee "$out/gpu_check.txt"
        ;;
    sweep)
        run timeout 420 python3 -m harness +sweep=gpu hydra.sweep.dir=/tmp/x/gpu 2>&1 | tee "$out/sweep_gpu.log"
        rows_to /tmp/x/gpu "$out/gpu_rows.parquet"
        ;;
    options)  # OPTIONS_ARGS: extra overrides, e.g. a shorter variant list
        run timeout 240 python3 -m harness +sweep=options device=cuda ${OPTIONS_ARGS:-} hydra.sweep.dir=/tmp/x/options 2>&1 |
            tee "$out/sweep_options.log"
        rows_to /tmp/x/options "$out/options_rows.parquet"
        ;;
    floor)
        run timeout 120 python3 -m harness +sweep=gpu num_classes=32000,262144 dtype=fp32 targets=hard \
            'variants=[triton_fused,torch_cross_entropy,liger_cross_entropy]' hydra.sweep.dir=/tmp/x/floor 2>&1 |
            tee "$out/sweep_floor.log"
        rows_to /tmp/x/floor "$out/floor_rows.parquet"
        ;;
    gpu_options)
        run timeout 420 python3 -m harness +sweep=gpu_options hydra.sweep.dir=/tmp/x/gpu_options 2>&1 |
            tee "$out/sweep_gpu_options.log"
        rows_to /tmp/x/gpu_options "$out/gpu_options_rows.parquet"
        ;;
    linear)  # estimated 8-12 min (conf/sweep/linear_gpu.yaml): if cut off, run the stage again, it resumes
        run timeout 540 python3 -m harness +sweep=linear_gpu hydra.sweep.dir=/tmp/x/linear 2>&1 |
            tee "$out/sweep_linear.log"
        rows_to /tmp/x/linear "$out/linear_rows.parquet"
        ;;
    kernel)  # KERNEL_TESTS: a -k expression to run part of them
        run timeout 240 python3 -m pytest -q -rfEs -p no:cacheprovider ${KERNEL_TESTS:+-k "$KERNEL_TESTS"} \
            tests/cross_entropy/test_triton_fused.py tests/cross_entropy/test_triton_options.py tests/measure/test_ceiling.py tests/measure/test_timing.py \
            tests/linear_cross_entropy/test_linear_fused.py tests/measure/test_interleaved.py tests/measure/test_contention.py 2>&1 |
            tee "$out/pytest_kernel.txt"
        ;;
    footprint)
        run timeout 240 python3 -m harness +sweep=gpu num_classes=262144 dtype=fp32 targets=soft \
            hydra.sweep.dir=/tmp/x/footprint 2>&1 | tee "$out/sweep_footprint.log"
        rows_to /tmp/x/footprint "$out/footprint_rows.parquet"
        ;;
    tp)
        run timeout 240 python3 -m harness +sweep=tp_gpu ${TP_ARGS:-} hydra.sweep.dir=/tmp/x/tp 2>&1 |
            tee "$out/sweep_tp.log"
        rows_to /tmp/x/tp "$out/tp_rows.parquet"
        ;;
    *)
        echo "unknown stage $stage: use check, sweep, options, floor, gpu_options, linear, kernel, footprint or tp" >&2
        exit 2
        ;;
    esac
    echo "stage $stage: $(( $(date +%s) - t0 )) s" | tee -a "$out/stages.txt"
done
