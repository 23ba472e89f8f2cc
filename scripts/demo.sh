#!/usr/bin/env bash
# The main job, from a fresh clone: install the Debian packages (Fashion-MNIST included), build,
# train a ConvNeXt-atto on Fashion-MNIST (28x28 padded to 32x32, 1 channel) with progress shown,
# evaluate it on the 10,000 test images, and show predictions with their true labels.
# Settings can be changed through the environment, e.g. EPOCHS=2 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-6}
BATCH=${BATCH:-128}
LR=${LR:-4e-3}
OUT=${OUT:-runs/fashion-mnist}
THREADS=${THREADS:-$(nproc)}

scripts/setup.sh
scripts/build.sh
echo
echo "== training convnext_atto on Fashion-MNIST: $EPOCHS epochs, batch $BATCH, lr $LR, $THREADS threads"
build/bin/convnext --threads "$THREADS" train --dataset fashion-mnist --model convnext_atto \
  --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --wd 0.05 --warmup-epochs 1 \
  --out "$OUT" --overwrite --show-predictions 12
echo
echo "== test accuracy of $OUT/best.safetensors"
build/bin/convnext --threads "$THREADS" eval --model convnext_atto --weights "$OUT/best.safetensors" \
  --dataset fashion-mnist --classes "$OUT/class_indices.json"
echo
echo "weights: $OUT/best.safetensors   checkpoint: $OUT/checkpoint.safetensors   curves: $OUT/curves.png"
