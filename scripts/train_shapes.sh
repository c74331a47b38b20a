#!/usr/bin/env bash
# Retrain the embedded default model from scratch: the Shapes-world autoencoder, text-to-image model and the
# HARIVO adapter on top of it, its motion path predictor refit, its few-step variant distilled, the Shapes ControlNet
# (silhouette conditions), then copy the result into harivo/default_model/.
#
#   bash scripts/train_shapes.sh                 # ~3.5 h on 2 CPU cores; minutes on a GPU
#   OUTPUT=outputs/my-shapes bash scripts/train_shapes.sh max_steps=50   # overrides go to every stage
#
# Every stage resumes from its latest checkpoint, so re-running the script after an interruption continues.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTPUT=${OUTPUT:-outputs/shapes}
HARIVO=${HARIVO:-.venv/bin/harivo}
[ -x "$HARIVO" ] || HARIVO=harivo

"$HARIVO" train --config configs/shapes/vae.yaml --resume output_dir="$OUTPUT/vae" "$@"
"$HARIVO" train --config configs/shapes/t2i.yaml --resume output_dir="$OUTPUT/t2i" t2i.vae="$OUTPUT/vae/final" "$@"
"$HARIVO" train --config configs/shapes/harivo.yaml --resume output_dir="$OUTPUT/harivo" \
    harivo.base_model="$OUTPUT/t2i/final" "$@"
"$HARIVO" train --config configs/shapes/path_predictor.yaml --resume output_dir="$OUTPUT/path_predictor" \
    harivo.base_model="$OUTPUT/t2i/final" harivo.adapter="$OUTPUT/harivo/final" "$@"
"$HARIVO" train --config configs/shapes/distill.yaml --resume output_dir="$OUTPUT/distill" \
    distill.base_model="$OUTPUT/t2i/final" distill.adapter="$OUTPUT/path_predictor/final" "$@"
"$HARIVO" train --config configs/shapes/controlnet.yaml --resume output_dir="$OUTPUT/controlnet" \
    controlnet.base_model="$OUTPUT/t2i/final" "$@"
"${PYTHON:-.venv/bin/python}" -c "from harivo.defaults import export_default_model as e; print(e('$OUTPUT/t2i/final', '$OUTPUT/path_predictor/final', controlnet='$OUTPUT/controlnet/final', fast='$OUTPUT/distill/final'))"
