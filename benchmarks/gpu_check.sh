#!/usr/bin/env bash
# One script for a CUDA machine: install blt-models from this working tree, run the CUDA tests,
# the inference benchmark (img/s and TFLOP/s of blt_bl and blt_blt at batch 64 and 256, 224 px,
# T=10: the reference loop fp32, blt-models fp32 / bf16 / compiled / CUDA graphs, and a cuDNN
# conv peak measured in the same run), the extraction benchmark, the training-step benchmark and
# extraction across 2 processes (torchrun) against one, and a one-process nccl smoke test of
# the training recipe. Sized to finish in ~8 minutes on an H200
# (the stage limits add up to 9 minutes at most); every stage has its own time limit, and a stage
# that fails or times out does not stop the rest (its log keeps the rows it printed).
#
#   bash benchmarks/gpu_check.sh [OUTDIR]            # CUDA machine; OUTDIR: $OUT or ./gpu_results
#   bash benchmarks/gpu_check.sh --dry-run [OUTDIR]  # CPU, tiny sizes, no install: every stage
#                                                    # runs, so that the first real run does not
#                                                    # fail on a typo
# Environment: PYTHON (default python3); FULL=1 adds the compiled settings at batch 256;
# LIMIT_SCALE multiplies every stage's time limit (default 1; 8 with --dry-run).
#
# Offline-friendly: the package is installed without dependencies and without build isolation
# (`pip install --no-deps --no-build-isolation -e .`), so the torch that is present stays; if pip
# cannot install, the working tree is used through PYTHONPATH. Its dependencies (timm,
# huggingface-hub, safetensors, antialiased-cnns; pytest for the tests) must be importable; the
# script says which are missing.
set -u -o pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY=1
    shift
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RESULTS="${1:-${OUT:-./gpu_results}}"
mkdir -p "$RESULTS"
RESULTS="$(cd "$RESULTS" && pwd)"
PY="${PYTHON:-python3}"
SUMMARY="$RESULTS/summary.txt"
: >"$SUMMARY"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
export PYTHONUNBUFFERED=1

if [[ $DRY == 1 ]]; then
    DEVICE=cpu
    SIZE=64; T=6; BATCHES=(2); BIG=(3); ITERS=1
    TP_SETTINGS=(ref-fp32 fp32 bf16)
    TRAIN_ARGS=(--img-size 32 --batch-size 2 --num-layers 4 --timesteps 5 --rounds 1 --steps 1
        --threads 1 --skip-memory)
    EXTRACT_ARGS=(--num-layers 4 --img-size 32 --batch-size 4 --batches 1 --repeats 1)
    RANKS_ARGS=(--images 8 --size 32 --batch-size 2 --timesteps 5 --num-layers 4 --threads 2)
    SMOKE_DEVICE=cpu
    LIMIT_SCALE=${LIMIT_SCALE:-8}  # a shared 2-core CPU, not an H200
else
    DEVICE=cuda
    SIZE=224; T=10; BATCHES=(64); BIG=(256); ITERS=5
    TP_SETTINGS=(ref-fp32 fp32 bf16 compiled cudagraphs)
    TRAIN_ARGS=(--batch-size 64 --rounds 3 --steps 2)
    EXTRACT_ARGS=(--num-layers 6 --img-size 224 --batch-size 16 --batches 2 --repeats 1)
    RANKS_ARGS=(--images 512 --size 224 --batch-size 64 --timesteps 10 --nproc 2)
    SMOKE_DEVICE=cuda
    LIMIT_SCALE=${LIMIT_SCALE:-1}
fi
BIG_SETTINGS=(ref-fp32 fp32 bf16)
if [[ "${FULL:-0}" == 1 ]]; then BIG_SETTINGS+=(compiled); fi

# stage NAME LIMIT_S COMMAND...: run with a time limit, log to NAME.log, record the status.
stage() {
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS rc
    limit=$((limit * LIMIT_SCALE))
    echo "=== $name (limit ${limit}s): $*" | tee -a "$SUMMARY"
    timeout --kill-after=10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    rc=$?
    local status=ok
    if [[ $rc == 124 || $rc == 137 ]]; then status="TIMEOUT"; elif [[ $rc != 0 ]]; then status="FAILED (rc $rc)"; fi
    echo "    $status in $((SECONDS - t0))s; log $name.log" | tee -a "$SUMMARY"
    tail -n 25 "$RESULTS/$name.log" | sed 's/^/    | /' >>"$SUMMARY"
}

# ----------------------------------------------------------------------------- environment
{
    date -u
    git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo "(no git)"
    nvidia-smi 2>/dev/null || echo "(no nvidia-smi)"
    "$PY" - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "cudnn", torch.backends.cudnn.version())
for mod in ("timm", "huggingface_hub", "safetensors", "antialiased_cnns", "pytest", "hypothesis", "h5py", "zarr"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod:<17} {getattr(m, '__version__', '?')}")
    except ImportError:
        print(f"{mod:<17} MISSING")
EOF
} >"$RESULTS/environment.txt" 2>&1
cat "$RESULTS/environment.txt" >>"$SUMMARY"
if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device visible to $PY: run with --dry-run on a CPU machine" | tee -a "$SUMMARY"
    exit 2
fi

# ----------------------------------------------------------------------------- install
if [[ $DRY == 0 ]]; then
    stage install 45 "$PY" -m pip install --no-deps --no-build-isolation -e "$ROOT"
fi
stage import 20 "$PY" -c "import blt_models as bm, torch; m = bm.create_model('blt_bl'); print(bm.__file__, bm.__version__, len(bm.list_models()), 'models')"

# ----------------------------------------------------------------------------- tests
stage gpu_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs

# ----------------------------------------------------------------------------- inference
stage inference_b${BATCHES[0]} 150 "$PY" benchmarks/blt_throughput.py --device "$DEVICE" \
    --models blt_bl blt_blt --batch "${BATCHES[@]}" --size "$SIZE" --timesteps "$T" --iters "$ITERS" \
    --settings "${TP_SETTINGS[@]}" --json "$RESULTS/inference_b${BATCHES[0]}.json"
stage inference_b${BIG[0]} 45 "$PY" benchmarks/blt_throughput.py --device "$DEVICE" \
    --models blt_bl blt_blt --batch "${BIG[@]}" --size "$SIZE" --timesteps "$T" --iters "$ITERS" \
    --settings "${BIG_SETTINGS[@]}" --json "$RESULTS/inference_b${BIG[0]}.json"

# ----------------------------------------------------------------------------- training step
stage train_step 60 "$PY" benchmarks/train_step_benchmark.py --device "$DEVICE" "${TRAIN_ARGS[@]}" \
    --json "$RESULTS/train_step.json"

# ----------------------------------------------------------------------------- extraction
# extract_benchmark.py writes HDF5; the zarr output path arrives with the extraction package.
stage extraction 30 "$PY" benchmarks/extract_benchmark.py --device "$DEVICE" --skip-memory "${EXTRACT_ARGS[@]}"

# ----------------------------------------------------------------------------- across processes
# torchrun with 2 ranks sharing the GPU against one process: time, and byte-identical arrays.
stage extract_ranks 60 "$PY" benchmarks/extract_ranks.py --device "$DEVICE" "${RANKS_ARGS[@]}"

# ----------------------------------------------------------------------------- recipe smoke
# One process through torchrun: init_process_group (nccl on CUDA, gloo on CPU), a few steps with
# bf16 autocast, evaluation, checkpoint; then the same with --compile.
SMOKE=(--model blt_bl_tiny --dataset synthetic --limit-train 64 --limit-val 32 --input-size 32
    --batch-size 16 --epochs 1 --workers 0 --no-progress --device "$SMOKE_DEVICE" --bf16 --log-every 1)
stage recipe_smoke 30 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
    examples/train/train.py "${SMOKE[@]}" --output-dir "$RESULTS/recipe_smoke"
if [[ $DRY == 0 ]]; then
    stage recipe_smoke_compile 40 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
        examples/train/train.py "${SMOKE[@]}" --compile --output-dir "$RESULTS/recipe_smoke_compile"
fi

echo "=== done; results in $RESULTS" | tee -a "$SUMMARY"
grep -E "^    (FAILED|TIMEOUT)" "$SUMMARY" >/dev/null && exit 1
exit 0
