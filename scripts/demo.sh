#!/usr/bin/env bash
# The main job, from a fresh clone: install the Debian packages (Fashion-MNIST included), build,
# train a ConvNeXt-atto on Fashion-MNIST (28x28 padded to 32x32, 1 channel) with progress shown,
# evaluate it on the 10,000 test images, show predictions with their true labels, and draw the
# pictures of docs/_new_vis.md: the confusion matrix, a grid of predictions, Grad-CAM overlays.
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
echo "== test accuracy of $OUT/best.safetensors (model, sizes and classes read from the file)"
build/bin/convnext --threads "$THREADS" eval --weights "$OUT/best.safetensors" --dataset fashion-mnist \
  --plot "$OUT/confusion.png"
echo
echo "== pictures: predictions on 24 test images, and where the model looks (Grad-CAM)"
rm -rf "$OUT/test-images" "$OUT/gradcam"
build/bin/convnext export-images --dataset fashion-mnist --count 24 --out "$OUT/test-images"
build/bin/convnext --threads "$THREADS" predict --weights "$OUT/best.safetensors" --image "$OUT/test-images" \
  --topk 1 --grid "$OUT/predictions.png" > /dev/null
# At 32 px the last stage is 1x1, nothing to localise: stage 1 (4x4) shows where the model looks.
build/bin/convnext --threads "$THREADS" gradcam --weights "$OUT/best.safetensors" --image "$OUT/test-images" \
  --target-layer stages.1 --out "$OUT/gradcam" --grid "$OUT/gradcam.png" > /dev/null
echo
echo "weights: $OUT/best.safetensors   checkpoint: $OUT/checkpoint.safetensors   curves: $OUT/curves.png"
echo "pictures: $OUT/confusion.png   $OUT/predictions.png   $OUT/gradcam.png (one overlay per image in $OUT/gradcam/)"
