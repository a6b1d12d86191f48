#!/usr/bin/env bash
# Train both networks on a GPU machine in ONE call (< 10 minutes) and bring the weights back.
#
#   bash benchmarks/gpu_train.sh              # on a GPU machine, from the repository root
#   bash benchmarks/gpu_train.sh --dry-run    # anywhere: CPU, tiny sizes (checks the script runs)
#   GPU_TRAIN_DEVICE=cpu bash benchmarks/gpu_train.sh   # the same as --dry-run
#   RESUME=DIR bash benchmarks/gpu_train.sh   # continue the runs of an earlier call (DIR = its $OUT)
#
# Parts, each limited by `timeout` so that one failing or hanging part does not lose the others
# (the trainers checkpoint every few steps and stop cleanly at --max-minutes):
#   0 setup     nvidia-smi; pip install -e . when napari_tiltgen is missing (torch kept)
#   1 pool      interpolation training data for transfer (tiltgen build-interpolation-data:
#               the training object families of simulate.families; held-out families never;
#               37-frame windows, so that four-frame samples of gaps up to 12 degrees fit)
#   2 interp    tiltgen train-interpolation from the packaged FOUR-FRAME weights (--init, --context
#               2; noise-conditioned, 30 % clean samples, clean + noisy validation), TRAIN_MIN
#               minutes (before 3 Dec 2026, session 12: the denoising pair network)
#   3 inpaint   tiltgen train-inpainting from the packaged weights (--init), TRAIN_MIN minutes,
#               families + phantoms, realistic noise, wedges 20-90 degrees
# Results in $OUT (or ./gpu_train_out without $OUT): interpolation_context.safetensors and
# inpainting.safetensors (the best validation weights, with their metadata and the command),
# the run folders (checkpoints, log.jsonl) for RESUME, gpu_train.md (the table), logs/.
# Nothing is shipped by this script: measure the weights on the held-out families on the CPU
# (benchmarks/interpolation_transfer.py --model new=..., benchmarks/inpainting_transfer.py
# --weights ...) and copy them into src/napari_tiltgen/models/ only where they win; then
# `python -m napari_tiltgen.nets.weights --update-checksums`.
set -u
cd "$(dirname "$0")/.."
RESULT_PATTERN='"best_val_psnr"|"steps_done"|"best_step"|exported|^RESULT '
. benchmarks/gpu_common.sh
gpu_init GPU_TRAIN_DEVICE ./gpu_train_out gpu_train.md logs "GPU training" "$@"
MODELS=src/napari_tiltgen/models
if [ "$DEVICE" = cpu ]; then
  SERIES=4; VAL=2; SIZES=64; TRAIN_MIN=0.3; BATCH=2; INP_SIZE=64; BANK=8
  LIMIT_SETUP=240; LIMIT_POOL=300; LIMIT_TRAIN=240; THREADS="--threads 1"
else
  SERIES="${SERIES:-192}"; VAL="${VAL:-24}"; SIZES="${SIZES:-128}"; TRAIN_MIN="${TRAIN_MIN:-3}"
  BATCH="${BATCH:-32}"; INP_SIZE="${INP_SIZE:-128}"; BANK="${BANK:-512}"
  LIMIT_SETUP=90; LIMIT_POOL=120; LIMIT_TRAIN=$(( ${TRAIN_MIN%.*} * 60 + 75 )); THREADS=""
fi
RUN="${RESUME:-$OUTDIR}"

run_part setup "$LIMIT_SETUP" bash -c '
  '"$PY"' -c "import torch; print(\"RESULT torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available())"
  '"$PY"' -c "import napari_tiltgen" 2>/dev/null || '"$PY"' -m pip install -q -e .
  '"$PY"' -c "import napari_tiltgen; print(\"RESULT napari_tiltgen\", napari_tiltgen.__version__)"'

# 1 the interpolation pool (resumable: finished shards are kept)
run_part pool "$LIMIT_POOL" $PY -m napari_tiltgen.cli build-interpolation-data "$RUN/pool37" \
  --series "$SERIES" --val-series "$VAL" --sizes "$SIZES" --window 37 --seed 37 --quiet $THREADS

# 2 interpolation: fine-tune the packaged four-frame weights on the pool, best weights exported
run_part interp "$LIMIT_TRAIN" $PY -m napari_tiltgen.cli train-interpolation "$RUN/pool37" \
  --out "$RUN/interp_run" --init "$MODELS/interpolation_context.safetensors" \
  --context 2 --absent-fraction 0.15 --clean-fraction 0.3 --device "$DEVICE" \
  --steps 100000 --max-minutes "$TRAIN_MIN" --batch-size "$BATCH" --lr 2.5e-4 --warmup 20 \
  --val-every 50 --crops "$SIZES" --val-crop "$SIZES" --val-triplets 32 --quiet $THREADS \
  --export "$OUTDIR/interpolation_context.safetensors"

# 3 inpainting: fine-tune the packaged weights (families, films twice as often, + phantoms;
#   training noise levels; the stage-8 recipe of models/inpainting.md)
run_part inpaint "$LIMIT_TRAIN" $PY -m napari_tiltgen.cli train-inpainting \
  --out "$RUN/inpaint_run" --init "$MODELS/inpainting.safetensors" --device "$DEVICE" \
  --size "$INP_SIZE" --steps 100000 --max-minutes "$TRAIN_MIN" --batch-size "$BATCH" \
  --group-size "$BATCH" --bank-size "$BANK" --sirt-iterations 20 --lr 2.5e-4 --adv-weight 0 \
  --val-every 50 --sources family=0.9,phantom=0.1 --noise-level train --weight-decay 1e-3 \
  --families cluster,rods,needle,porous,hollow,metaballs,polyhedra,texture,decorated,film,film \
  --quiet $THREADS --export "$OUTDIR/inpainting.safetensors"

echo >> "$REPORT"
ls -la "$OUTDIR"/*.safetensors >> "$REPORT" 2>&1
echo >> "$REPORT"
echo "Total $(( $(date +%s) - T0 )) s. Logs: $OUTDIR/logs/. Command: bash benchmarks/gpu_train.sh$([ "$DEVICE" = cpu ] && echo ' --dry-run')" >> "$REPORT"
cat "$REPORT"
exit 0
