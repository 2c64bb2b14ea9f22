#!/usr/bin/env bash
# Trains blt_bl_tiny.fashion_mnist as shipped (2 CPU processes), then packages the best weights.
#   bash examples/train/train_fashion_mnist.sh            (TORCHRUN=/path/to/torchrun to override)
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
start=$(date +%s)
"${TORCHRUN:-torchrun}" --standalone --nproc_per_node 2 examples/train/train.py \
  --model blt_bl_tiny --dataset fashion_mnist --input-size 32 --epochs 6 --batch-size 128 \
  --lr 2e-3 --weight-decay 0.05 --warmup-epochs 0.5 --sched cosine --clip-max-norm 5 \
  --loss-gamma 0.5 --loss-choice decay --label-smoothing 0.1 --workers 0 --log-every 100 \
  --output-dir runs/blt_bl_tiny_fashion_mnist
echo "wall time: $(( $(date +%s) - start )) s"
python examples/train/package_weights.py runs/blt_bl_tiny_fashion_mnist
